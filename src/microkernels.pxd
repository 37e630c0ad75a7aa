# cython: language_level=3
"""The C side of the convolutions, src/microkernels.h (which includes src/conv_tile.h once per
SIMD path and float type), declared once for Cython. `ptrdiff_t` is the headers' index type;
Cython sees it as Py_ssize_t (both are the pointer-sized signed integer), so index arrays pass
between them unchanged."""

ctypedef Py_ssize_t ptrdiff_t "ptrdiff_t"

cdef extern from "microkernels.h" nogil:
    ctypedef struct tgc_loops:
        ptrdiff_t n[3]
        ptrdiff_t vec_step[3]
        ptrdiff_t in_step[3]
    ctypedef void (*tgc_tile_f32)(const float *, const float *, const ptrdiff_t *, int,
                                  const tgc_loops *, float *, const ptrdiff_t *, int)
    ctypedef void (*tgc_tile_f64)(const double *, const double *, const ptrdiff_t *, int,
                                  const tgc_loops *, double *, const ptrdiff_t *, int)
    enum:
        TGC_PORTABLE, TGC_AVX2, TGC_AVX512, TGC_MAX_PIX, TGC_TILE_CAPACITY, TGC_BAND_MAX_KW,
        TGC_BAND_MAX, TGC_STRIP_FILTERS_PORTABLE, TGC_STRIP_FILTERS_AVX2, TGC_STRIP_FILTERS_AVX512
    int tgc_best_path()
    int tgc_lanes(int path, int itemsize)
    int tgc_max_pixels(int path, int vectors)
    int tgc_max_vectors(int path)
    tgc_tile_f32 tgc_tile_fn_f32(int path, int vectors, int in_lanes)
    tgc_tile_f64 tgc_tile_fn_f64(int path, int vectors, int in_lanes)
    double tgc_fma_probe(int path, int is_double, long rounds)
    ctypedef void (*tgc_unstage_f32)(const float *, int, ptrdiff_t, int, float *, ptrdiff_t,
                                     const float *)
    ctypedef void (*tgc_unstage_f64)(const double *, int, ptrdiff_t, int, double *,
                                     ptrdiff_t, const double *)
    ctypedef void (*tgc_stage_f32)(const float *, ptrdiff_t, int, ptrdiff_t, float *, int)
    ctypedef void (*tgc_stage_f64)(const double *, ptrdiff_t, int, ptrdiff_t, double *, int)
    ctypedef void (*tgc_fold_f32)(const float *, int, ptrdiff_t, float *, const float *)
    ctypedef void (*tgc_fold_f64)(const double *, int, ptrdiff_t, double *, const double *)
    tgc_fold_f32 tgc_fold_fn_f32(int path)
    tgc_fold_f64 tgc_fold_fn_f64(int path)
    tgc_unstage_f32 tgc_unstage_fn_f32(int path)
    tgc_unstage_f64 tgc_unstage_fn_f64(int path)
    tgc_stage_f32 tgc_stage_fn_f32(int path)
    tgc_stage_f64 tgc_stage_fn_f64(int path)
    ctypedef void (*tgc_terms_f32)(const float *, const ptrdiff_t *, const float *,
                                   const ptrdiff_t *, int, ptrdiff_t, float *, const float *,
                                   ptrdiff_t, ptrdiff_t, ptrdiff_t)
    ctypedef void (*tgc_terms_f64)(const double *, const ptrdiff_t *, const double *,
                                   const ptrdiff_t *, int, ptrdiff_t, double *, const double *,
                                   ptrdiff_t, ptrdiff_t, ptrdiff_t)
    ctypedef void (*tgc_dot_f32)(const float *, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t,
                                 ptrdiff_t, ptrdiff_t, float *)
    ctypedef void (*tgc_dot_f64)(const double *, ptrdiff_t, const double *, ptrdiff_t,
                                 ptrdiff_t, ptrdiff_t, ptrdiff_t, double *)
    ctypedef void (*tgc_deal_f32)(const float *, ptrdiff_t, ptrdiff_t, float *, ptrdiff_t)
    ctypedef void (*tgc_deal_f64)(const double *, ptrdiff_t, ptrdiff_t, double *, ptrdiff_t)
    tgc_terms_f32 tgc_terms_fn_f32(int path)
    tgc_terms_f64 tgc_terms_fn_f64(int path)
    tgc_dot_f32 tgc_dot_fn_f32(int path)
    tgc_dot_f64 tgc_dot_fn_f64(int path)
    tgc_deal_f32 tgc_deal_fn_f32(int path)
    tgc_deal_f64 tgc_deal_fn_f64(int path)
    tgc_deal_f32 tgc_weave_fn_f32(int path)
    tgc_deal_f64 tgc_weave_fn_f64(int path)
    ctypedef struct tgc_band_shape:
        ptrdiff_t R, KH, KW, row_step, row_dil, row_at, in_h, chan, pitch
        const ptrdiff_t *col
        const ptrdiff_t *col_lo
        const ptrdiff_t *col_hi
        const ptrdiff_t *meets
        ptrdiff_t out_h, out_w, out_pitch
    ctypedef void (*tgc_band_f32)(const tgc_band_shape *, const float *, const float *,
                                  float *, const float *)
    ctypedef void (*tgc_band_f64)(const tgc_band_shape *, const double *, const double *,
                                  double *, const double *)
    tgc_band_f32 tgc_band_fn_f32(int path)
    tgc_band_f64 tgc_band_fn_f64(int path)
    ctypedef struct tgc_strip_shape:
        ptrdiff_t R, KH, KW, filter_step, chan, pitch, i_step, row_step
        const ptrdiff_t *col
        const ptrdiff_t *col_lo
        const ptrdiff_t *col_hi
        ptrdiff_t out_w, out_plane
    ctypedef void (*tgc_strip_f32)(const tgc_strip_shape *, const float *, ptrdiff_t,
                                   const float *, const ptrdiff_t *, ptrdiff_t, ptrdiff_t,
                                   float *, const float *)
    ctypedef void (*tgc_strip_f64)(const tgc_strip_shape *, const double *, ptrdiff_t,
                                   const double *, const ptrdiff_t *, ptrdiff_t, ptrdiff_t,
                                   double *, const double *)
    tgc_strip_f32 tgc_strip_fn_f32(int path)
    tgc_strip_f64 tgc_strip_fn_f64(int path)
    ctypedef struct tgc_strip_grad_shape:
        ptrdiff_t out_h, out_w, z_image, z_plane, in_h, pitch, a_image, row_stride, row_dil, top
        const ptrdiff_t *col
        const ptrdiff_t *col_lo
        const ptrdiff_t *col_hi
    ctypedef void (*tgc_strip_grad_f32)(const tgc_strip_grad_shape *, ptrdiff_t, const float *,
                                        ptrdiff_t, const float *, ptrdiff_t, double *, ptrdiff_t)
    ctypedef void (*tgc_strip_grad_f64)(const tgc_strip_grad_shape *, ptrdiff_t,
                                        const double *, ptrdiff_t, const double *, ptrdiff_t,
                                        double *, ptrdiff_t)
    tgc_strip_grad_f32 tgc_strip_grad_fn_f32(int path)
    tgc_strip_grad_f64 tgc_strip_grad_fn_f64(int path)
