/* The convolution micro-kernel (src/conv_tile.h) compiled for three instruction sets, and the
 * choice between them at run time.
 *
 *   avx512    AVX-512F, 16 floats (8 doubles) a vector, 32 vector registers
 *   avx2      AVX2 + FMA, 8 floats (4 doubles) a vector, 16 vector registers
 *   portable  plain C on 4-wide arrays: any compiler, any CPU (ARM included)
 *
 * The SIMD versions are compiled with per-function target attributes, not -mavx512f for the
 * whole file, so one build runs on every x86-64: a path is used only when the CPU (and the
 * operating system, which must save the wider registers) supports it.
 */
#ifndef TINYGRAD_CONV_MICROKERNELS_H
#define TINYGRAD_CONV_MICROKERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define TGC_X86 1
#include <immintrin.h>
#else
#define TGC_X86 0
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#define TGC_INLINE __forceinline
#define TGC_TARGET_AVX512
#define TGC_TARGET_AVX2
#include <intrin.h>
#else
#define TGC_INLINE inline __attribute__((always_inline))
#define TGC_TARGET_AVX512 __attribute__((target("avx512f")))
#define TGC_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

enum { TGC_PORTABLE = 0, TGC_AVX2 = 1, TGC_AVX512 = 2, TGC_N_PATHS = 3 };
#define TGC_MAX_PIX 20
#define TGC_MAX_VECTORS 4
#define TGC_BAND_MAX_KW 16     /* the widest kernel a band takes (bands_fit) */
#define TGC_BAND_MAX 8         /* the most output rows a band holds (TGC_FOR_BAND) */
/* room for the largest tile: TGC_MAX_PIX pixels x TGC_MAX_VECTORS vectors of 16 floats (more
 * than any one tile holds) */
#define TGC_TILE_CAPACITY (TGC_MAX_PIX * TGC_MAX_VECTORS * 16)

/* the three loops of a tile's reduction: n[k] steps, each moving vec and in by these many
 * elements */
typedef struct {
    ptrdiff_t n[3];
    ptrdiff_t vec_step[3];
    ptrdiff_t in_step[3];
} tgc_loops;

typedef void (*tgc_tile_f32)(const float *vec, const float *in, const ptrdiff_t *pix,
                             int npix, const tgc_loops *loops, float *out,
                             const ptrdiff_t *out_at, int accumulate);
typedef void (*tgc_tile_f64)(const double *vec, const double *in, const ptrdiff_t *pix,
                             int npix, const tgc_loops *loops, double *out,
                             const ptrdiff_t *out_at, int accumulate);

/* a band of a plane correlation (conv_tile.h, tgc_band): output row y and kernel row i read
 * input row y*row_step + i*row_dil + row_at (rows outside [0, in_h) are padding: skipped),
 * column tap j of output column u reads col[j] + u along that row */
typedef struct {
    ptrdiff_t R, KH, KW;            /* reduction channels, kernel rows, kernel columns */
    ptrdiff_t row_step, row_dil, row_at, in_h;
    ptrdiff_t chan, pitch;          /* the input as read: next channel, next row */
    const ptrdiff_t *col;           /* KW offsets along a row ... */
    const ptrdiff_t *col_lo, *col_hi;   /* ... and the outputs u for which they are real */
    const ptrdiff_t *meets;         /* [rho * TGC_BAND_MAX + m]: i*KW when output row m of a
                                       band meets its input row rho at kernel row i, else -1 */
    ptrdiff_t out_h, out_w, out_pitch;
} tgc_band_shape;

/* a strip (conv_tile.h, tgc_strip): one output row of a block of filters, the row's pixels in
 * the lanes; column tap j of output column u reads col[j] + u along an input row, real for
 * col_lo[j] <= u < col_hi[j] (clipped to [0, out_w)) */
typedef struct {
    ptrdiff_t R, KH, KW;            /* reduction channels, kernel rows, kernel columns */
    ptrdiff_t filter_step;          /* from one filter's weights to the next's: R*KH*KW */
    ptrdiff_t chan, pitch;          /* the input: next channel, next row */
    ptrdiff_t i_step, row_step;     /* from a real kernel row to the next: kernel rows, input
                                       rows */
    const ptrdiff_t *col, *col_lo, *col_hi;
    ptrdiff_t out_w, out_plane;     /* an output row's length; from one filter's plane to the
                                       next's */
} tgc_strip_shape;

/* dL/dW of a strip (conv_tile.h, tgc_strip_grad): output row y and kernel row i read input row
 * y*row_stride + i*row_dil - top (outside [0, in_h): padding, skipped); column tap j < 3 of
 * output column u reads col[j] + u, real for col_lo[j] <= u < col_hi[j] */
typedef struct {
    ptrdiff_t out_h, out_w, z_image, z_plane;   /* Z': rows, columns, next image, next filter */
    ptrdiff_t in_h, pitch, a_image;             /* A: rows, next row, next image */
    ptrdiff_t row_stride, row_dil, top;
    const ptrdiff_t *col, *col_lo, *col_hi;
} tgc_strip_grad_shape;

static volatile double tgc_probe_sink = 0;

/* A value no table has a case for: a bug in the tables, never the user's. Say so, and stop
 * rather than compute nothing. */
static void tgc_abort(const char *what, int value)
{
    fprintf(stderr, "tinygrad_conv: internal error: no case for %s (%d)\n", what, value);
    abort();
}

/* ---- The paths' one table: per path, the lanes of a float32 and of a float64 vector, its
 * vector registers, the widest tile worth using (vectors) and how many pixels a tile of 1, 2,
 * 3, 4 vectors holds. The copies of conv_tile.h (LANES), tgc_lanes, the tiles' switch cases
 * (TGC_CASES_k), tgc_max_pixels and tgc_max_vectors are all made from it, so they cannot
 * disagree; the checks below hold every row to the register budget.
 *
 * The budget of a V x P tile (V vectors of filters by P pixels), per step of the reduction:
 *   registers   V*P accumulators + V weight vectors + 1 broadcast <= the path's registers
 *   ports       V vector loads + P broadcast loads, against V*P fused multiply-adds
 * A core with two full-width FMA units and two load ports (Intel's AVX-512 and AVX2 cores,
 * Zen 4's AVX2) does V*P/2 cycles of FMAs and (V + P)/2 of loads a step: FMA-bound, the goal,
 * when V*P >= V + P, i.e. V >= 2 and P >= 2. A one-vector tile is load-bound there whatever P
 * (P/(P + 1) of the peak at best: 95% at P = 20), and is used only when a block of filters
 * (or groups) fills one vector. Zen 4 runs a 512-bit FMA as two 256-bit halves, one a cycle:
 * FMA-bound for every row below (V*P cycles against (V + P)/2). So the same rows suit both;
 * the widest tiles come first where the filters allow (channel_blocks: 4 vectors, then 3 ...).
 * FMA latency (4 cycles, two units): at least 8 independent accumulators, which every
 * row but portable's has.
 *
 *   portable  4-wide arrays; whatever the compiler makes of them (no budget checked)
 *   avx2      16 registers: 1 x 12, 2 x 6, 3 x 4 (12 accumulators + V + 1 = 14, 15, 16);
 *             4 x 3 needs 17 (measured on a Zen 4: 3 x 4 ran at 86% of the peak, 4 x 3 at
 *             78%: spills), so 3 vectors at most
 *   avx512    32 registers: 1 x 20, 2 x 14, 3 x 8, 4 x 6 (22, 31, 28, 29 registers); on a
 *             Zen 4 1 x 20 ran at 86% of the peak where 1 x 12 ran at 75%, 2 x 14 at 98%,
 *             4 x 6 at 96% */
#define TGC_LANES_PORTABLE (4, 4)
#define TGC_LANES_AVX2 (8, 4)
#define TGC_LANES_AVX512 (16, 8)
#define TGC_REGISTERS_AVX2 16
#define TGC_REGISTERS_AVX512 32
#define TGC_PIXELS_PORTABLE (8, 6, 4, 3)
#define TGC_PIXELS_AVX2 (12, 6, 4, 3)
#define TGC_PIXELS_AVX512 (20, 14, 8, 6)
#define TGC_VECTORS_PORTABLE 4
#define TGC_VECTORS_AVX2 3
#define TGC_VECTORS_AVX512 4
/* a band (tgc_band) of 1..4 vectors holds this many output rows: rows x vectors accumulators
 * + vectors loaded + 1 broadcast weight fit the registers (avx2: 10, 13, 13, 13 of 16;
 * avx512: 10, 19, 22, 21 of 32; TGC_FOR_BAND in conv_tile.h declares 8 rows) */
#define TGC_BAND_ROWS_PORTABLE (8, 5, 3, 2)
#define TGC_BAND_ROWS_AVX2 (8, 5, 3, 2)
#define TGC_BAND_ROWS_AVX512 (8, 8, 6, 4)
/* a strip (tgc_strip) holds this many filters by 2 vectors of pixels: filters x 2
 * accumulators + 2 loaded + 1 broadcast weight (avx2: 11 of 16, avx512: 19 of 32) */
#define TGC_STRIP_FILTERS_PORTABLE 4
#define TGC_STRIP_FILTERS_AVX2 4
#define TGC_STRIP_FILTERS_AVX512 8
/* ... and they fit the accumulators conv_tile.h declares (TGC_FOR_FILTERS: 8 filters) */
typedef char tgc_strips_fit_registers[2 * TGC_STRIP_FILTERS_AVX2 + 3 <= TGC_REGISTERS_AVX2
                                      && 2 * TGC_STRIP_FILTERS_AVX512 + 3 <= TGC_REGISTERS_AVX512
                                      && TGC_STRIP_FILTERS_PORTABLE <= 8
                                      && TGC_STRIP_FILTERS_AVX2 <= 8
                                      && TGC_STRIP_FILTERS_AVX512 <= 8 ? 1 : -1];

#define TGC_APPLY(F, args) F args
#define TGC_NTH_1(a, b, c, d) a
#define TGC_NTH_2(a, b, c, d) b
#define TGC_NTH_3(a, b, c, d) c
#define TGC_NTH_4(a, b, c, d) d
#define TGC_ROW(a, b, c, d) {a, b, c, d}
#define TGC_FITS(a, b, c, d) \
    ((a) <= TGC_MAX_PIX && (b) <= TGC_MAX_PIX && (c) <= TGC_MAX_PIX && (d) <= TGC_MAX_PIX)
/* every tile fits the accumulators conv_tile.h declares (TGC_FOR_PIXELS: TGC_MAX_PIX) */
typedef char tgc_tiles_fit[TGC_APPLY(TGC_FITS, TGC_PIXELS_PORTABLE)
                           && TGC_APPLY(TGC_FITS, TGC_PIXELS_AVX2)
                           && TGC_APPLY(TGC_FITS, TGC_PIXELS_AVX512) ? 1 : -1];
/* every tile a path uses (up to its widest) fits its registers: V*P + V + 1 */
#define TGC_BUDGET(regs, widest, a, b, c, d)                                                \
    ((a) + 2 <= (regs) && ((widest) < 2 || 2 * (b) + 3 <= (regs))                          \
     && ((widest) < 3 || 3 * (c) + 4 <= (regs)) && ((widest) < 4 || 4 * (d) + 5 <= (regs)))
#define TGC_BUDGET_OF(regs, widest, pixels) TGC_BUDGET_(regs, widest, TGC_APPLY(TGC_ROW4, pixels))
#define TGC_ROW4(a, b, c, d) a, b, c, d
#define TGC_BUDGET_(regs, widest, ...) TGC_BUDGET(regs, widest, __VA_ARGS__)
typedef char tgc_tiles_fit_registers[
    TGC_BUDGET_OF(TGC_REGISTERS_AVX2, TGC_VECTORS_AVX2, TGC_PIXELS_AVX2)
    && TGC_BUDGET_OF(TGC_REGISTERS_AVX512, TGC_VECTORS_AVX512, TGC_PIXELS_AVX512) ? 1 : -1];
/* ... and so does every band (the same count: rows x vectors + vectors + 1), of at most
 * TGC_BAND_MAX rows */
#define TGC_BAND_FITS(a, b, c, d) \
    ((a) <= TGC_BAND_MAX && (b) <= TGC_BAND_MAX && (c) <= TGC_BAND_MAX && (d) <= TGC_BAND_MAX)
typedef char tgc_bands_fit_registers[
    TGC_BUDGET_OF(TGC_REGISTERS_AVX2, TGC_VECTORS_AVX2, TGC_BAND_ROWS_AVX2)
    && TGC_BUDGET_OF(TGC_REGISTERS_AVX512, TGC_VECTORS_AVX512, TGC_BAND_ROWS_AVX512)
    && TGC_APPLY(TGC_BAND_FITS, TGC_BAND_ROWS_PORTABLE)
    && TGC_APPLY(TGC_BAND_FITS, TGC_BAND_ROWS_AVX2)
    && TGC_APPLY(TGC_BAND_FITS, TGC_BAND_ROWS_AVX512) ? 1 : -1];
#define TGC_F32_LANES(f32, f64) f32
#define TGC_ROW4_2(f32, f64) f32, f64
#define TGC_F64_LANES(f32, f64) f64

/* the switch cases of a tile of V vectors on the path whose list TGC_PIXELS names: npix = 1 to
 * that path's count (TGC_C<count>) */
#define TGC_CASES_UPTO_(V, P) TGC_C##P(V)
#define TGC_CASES_UPTO(V, P) TGC_CASES_UPTO_(V, P)
#define TGC_CASES_1 TGC_CASES_UPTO(1, TGC_APPLY(TGC_NTH_1, TGC_PIXELS))
#define TGC_CASES_2 TGC_CASES_UPTO(2, TGC_APPLY(TGC_NTH_2, TGC_PIXELS))
#define TGC_CASES_3 TGC_CASES_UPTO(3, TGC_APPLY(TGC_NTH_3, TGC_PIXELS))
#define TGC_CASES_4 TGC_CASES_UPTO(4, TGC_APPLY(TGC_NTH_4, TGC_PIXELS))

#define TGC_C1(V) TGC_CASE(V, 1)
#define TGC_C2(V) TGC_C1(V) TGC_CASE(V, 2)
#define TGC_C3(V) TGC_C2(V) TGC_CASE(V, 3)
#define TGC_C4(V) TGC_C3(V) TGC_CASE(V, 4)
#define TGC_C5(V) TGC_C4(V) TGC_CASE(V, 5)
#define TGC_C6(V) TGC_C5(V) TGC_CASE(V, 6)
#define TGC_C7(V) TGC_C6(V) TGC_CASE(V, 7)
#define TGC_C8(V) TGC_C7(V) TGC_CASE(V, 8)
#define TGC_C9(V) TGC_C8(V) TGC_CASE(V, 9)
#define TGC_C10(V) TGC_C9(V) TGC_CASE(V, 10)
#define TGC_C11(V) TGC_C10(V) TGC_CASE(V, 11)
#define TGC_C12(V) TGC_C11(V) TGC_CASE(V, 12)
#define TGC_C14(V) TGC_C12(V) TGC_CASE(V, 13) TGC_CASE(V, 14)
#define TGC_C20(V) TGC_C14(V) TGC_CASE(V, 15) TGC_CASE(V, 16) TGC_CASE(V, 17) \
    TGC_CASE(V, 18) TGC_CASE(V, 19) TGC_CASE(V, 20)

/* ---- portable: 4-wide arrays the compiler may vectorize for whatever CPU it targets ---- */
typedef struct { int lo, hi; } tgc_range;     /* the portable path's lane mask: [lo, hi) */
static TGC_INLINE tgc_range tgc_range_of(int lo, int hi) { tgc_range m = {lo, hi}; return m; }
static TGC_INLINE tgc_range tgc_range_and(tgc_range a, tgc_range b)
{
    tgc_range m = {a.lo > b.lo ? a.lo : b.lo, a.hi < b.hi ? a.hi : b.hi};
    return m;
}

#define TGC_PORTABLE_OPS(TYPE, VT)                                                            \
    typedef struct { TYPE v[4]; } VT;                                                         \
    static TGC_INLINE VT VT##_zero(void) { VT r = {{0, 0, 0, 0}}; return r; }                 \
    static TGC_INLINE VT VT##_load(const TYPE *p) { VT r; memcpy(r.v, p, sizeof r.v); return r; } \
    static TGC_INLINE VT VT##_load_part(const TYPE *p, int n)                                 \
    { VT r = {{0, 0, 0, 0}}; memcpy(r.v, p, (size_t)n * sizeof(TYPE)); return r; }            \
    static TGC_INLINE VT VT##_load_range(const TYPE *p, tgc_range m)                          \
    { VT r = {{0, 0, 0, 0}}; for (int l = m.lo; l < m.hi; l++) r.v[l] = p[l]; return r; }     \
    static TGC_INLINE VT VT##_fma_range(VT a, VT b, VT c, tgc_range m)                        \
    { for (int l = m.lo; l < m.hi; l++) c.v[l] += a.v[l] * b.v[l]; return c; }                \
    static TGC_INLINE void VT##_store_part(TYPE *p, VT a, int n)                              \
    { memcpy(p, a.v, (size_t)n * sizeof(TYPE)); }                                             \
    static TGC_INLINE VT VT##_bcast(TYPE x) { VT r = {{x, x, x, x}}; return r; }              \
    static TGC_INLINE VT VT##_fma(VT a, VT b, VT c)                                           \
    { for (int l = 0; l < 4; l++) c.v[l] += a.v[l] * b.v[l]; return c; }                      \
    static TGC_INLINE void VT##_store(TYPE *p, VT a) { memcpy(p, a.v, sizeof a.v); }      \
    static TGC_INLINE VT VT##_add(VT a, VT b)                                                 \
    { for (int l = 0; l < 4; l++) a.v[l] += b.v[l]; return a; }                               \
    static TGC_INLINE void VT##_transpose(VT r[4])                                            \
    {                                                                                         \
        for (int i = 0; i < 4; i++)                                                           \
            for (int j = i + 1; j < 4; j++) {                                                 \
                TYPE x = r[i].v[j]; r[i].v[j] = r[j].v[i]; r[j].v[i] = x;                     \
            }                                                                                 \
    }

TGC_PORTABLE_OPS(float, tgc_v4f)
TGC_PORTABLE_OPS(double, tgc_v4d)

#define TARGET
#define TGC_PIXELS TGC_PIXELS_PORTABLE
#define TGC_BAND_ROWS TGC_BAND_ROWS_PORTABLE
#define TGC_STRIP_FILTERS TGC_STRIP_FILTERS_PORTABLE
#define TGC_STRIP_GRAD 0
#define TGC_BAND_VECTORS TGC_VECTORS_PORTABLE

#define T float
#define V tgc_v4f
#define LANES TGC_APPLY(TGC_F32_LANES, TGC_LANES_PORTABLE)
#define SUFFIX portable_f32
#define VZERO() tgc_v4f_zero()
#define VLOAD(p) tgc_v4f_load(p)
#define VBCAST(p) tgc_v4f_bcast(*(p))
#define VBCAST_VALUE(x) tgc_v4f_bcast(x)
#define VFMA(a, b, c) tgc_v4f_fma(a, b, c)
#define VSTORE(p, v) tgc_v4f_store(p, v)
#define VADD(a, b) tgc_v4f_add(a, b)
#define TRANSPOSE(r) tgc_v4f_transpose(r)
#define SFMA(a, b, c) ((c) + (a) * (b))
#define VLOAD_PART(p, n) tgc_v4f_load_part(p, n)
#define VMASK tgc_range
#define VMASK_RANGE(lo, hi) tgc_range_of(lo, hi)
#define VMASK_AND(a, b) tgc_range_and(a, b)
#define VLOAD_MASK(p, m) tgc_v4f_load_range(p, m)
#define VFMA_MASK(a, b, c, m) tgc_v4f_fma_range(a, b, c, m)
#define VSTORE_PART(p, v, n) tgc_v4f_store_part(p, v, n)
#include "conv_tile.h"

#define T double
#define V tgc_v4d
#define LANES TGC_APPLY(TGC_F64_LANES, TGC_LANES_PORTABLE)
#define SUFFIX portable_f64
#define VZERO() tgc_v4d_zero()
#define VLOAD(p) tgc_v4d_load(p)
#define VBCAST(p) tgc_v4d_bcast(*(p))
#define VBCAST_VALUE(x) tgc_v4d_bcast(x)
#define VFMA(a, b, c) tgc_v4d_fma(a, b, c)
#define VSTORE(p, v) tgc_v4d_store(p, v)
#define VADD(a, b) tgc_v4d_add(a, b)
#define TRANSPOSE(r) tgc_v4d_transpose(r)
#define SFMA(a, b, c) ((c) + (a) * (b))
#define VLOAD_PART(p, n) tgc_v4d_load_part(p, n)
#define VMASK tgc_range
#define VMASK_RANGE(lo, hi) tgc_range_of(lo, hi)
#define VMASK_AND(a, b) tgc_range_and(a, b)
#define VLOAD_MASK(p, m) tgc_v4d_load_range(p, m)
#define VFMA_MASK(a, b, c, m) tgc_v4d_fma_range(a, b, c, m)
#define VSTORE_PART(p, v, n) tgc_v4d_store_part(p, v, n)
#include "conv_tile.h"

#undef TARGET
#undef TGC_PIXELS
#undef TGC_BAND_ROWS
#undef TGC_STRIP_FILTERS
#undef TGC_STRIP_GRAD
#undef TGC_BAND_VECTORS

#if TGC_X86
/* ---- the transposes of a LANES x LANES block in registers: unpack pairs of rows, shuffle
 * pairs of those, then move 128-bit lanes (three rounds of log2 steps) ---- */

TGC_TARGET_AVX2 static TGC_INLINE void tgc_transpose_avx2_f32(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int l = 0; l < 8; l += 2) {
        t[l] = _mm256_unpacklo_ps(r[l], r[l + 1]);
        t[l + 1] = _mm256_unpackhi_ps(r[l], r[l + 1]);
    }
    for (int l = 0; l < 8; l += 4) {          /* u[l + m], 128-bit lane L: column 4L + m */
        u[l] = _mm256_shuffle_ps(t[l], t[l + 2], 0x44);
        u[l + 1] = _mm256_shuffle_ps(t[l], t[l + 2], 0xEE);
        u[l + 2] = _mm256_shuffle_ps(t[l + 1], t[l + 3], 0x44);
        u[l + 3] = _mm256_shuffle_ps(t[l + 1], t[l + 3], 0xEE);
    }
    for (int m = 0; m < 4; m++) {
        r[m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x20);
        r[4 + m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x31);
    }
}

TGC_TARGET_AVX2 static TGC_INLINE void tgc_transpose_avx2_f64(__m256d r[4])
{
    __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

TGC_TARGET_AVX512 static TGC_INLINE void tgc_transpose_avx512_f32(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int l = 0; l < 16; l += 2) {
        t[l] = _mm512_unpacklo_ps(r[l], r[l + 1]);
        t[l + 1] = _mm512_unpackhi_ps(r[l], r[l + 1]);
    }
    for (int l = 0; l < 16; l += 4) {         /* u[l + m], 128-bit lane L: column 4L + m */
        u[l] = _mm512_shuffle_ps(t[l], t[l + 2], 0x44);
        u[l + 1] = _mm512_shuffle_ps(t[l], t[l + 2], 0xEE);
        u[l + 2] = _mm512_shuffle_ps(t[l + 1], t[l + 3], 0x44);
        u[l + 3] = _mm512_shuffle_ps(t[l + 1], t[l + 3], 0xEE);
    }
    for (int m = 0; m < 4; m++) {
        __m512 x = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88);
        __m512 y = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xDD);
        __m512 x2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
        __m512 y2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xDD);
        r[m] = _mm512_shuffle_f32x4(x, x2, 0x88);
        r[4 + m] = _mm512_shuffle_f32x4(y, y2, 0x88);
        r[8 + m] = _mm512_shuffle_f32x4(x, x2, 0xDD);
        r[12 + m] = _mm512_shuffle_f32x4(y, y2, 0xDD);
    }
}

TGC_TARGET_AVX512 static TGC_INLINE void tgc_transpose_avx512_f64(__m512d r[8])
{
    __m512d t[8];
    for (int l = 0; l < 8; l += 2) {          /* t[l], 128-bit lane L: column 2L (l even) */
        t[l] = _mm512_unpacklo_pd(r[l], r[l + 1]);
        t[l + 1] = _mm512_unpackhi_pd(r[l], r[l + 1]);
    }
    for (int odd = 0; odd < 2; odd++) {       /* columns 0, 2, 4, 6, then 1, 3, 5, 7 */
        __m512d u0 = _mm512_shuffle_f64x2(t[odd], t[2 + odd], 0x88);
        __m512d u1 = _mm512_shuffle_f64x2(t[odd], t[2 + odd], 0xDD);
        __m512d u2 = _mm512_shuffle_f64x2(t[4 + odd], t[6 + odd], 0x88);
        __m512d u3 = _mm512_shuffle_f64x2(t[4 + odd], t[6 + odd], 0xDD);
        r[odd] = _mm512_shuffle_f64x2(u0, u2, 0x88);
        r[4 + odd] = _mm512_shuffle_f64x2(u0, u2, 0xDD);
        r[2 + odd] = _mm512_shuffle_f64x2(u1, u3, 0x88);
        r[6 + odd] = _mm512_shuffle_f64x2(u1, u3, 0xDD);
    }
}

/* ---- AVX2 + FMA: 16 registers, so at most 12 accumulators ---- */
#define TARGET TGC_TARGET_AVX2
#define TGC_PIXELS TGC_PIXELS_AVX2
#define TGC_BAND_ROWS TGC_BAND_ROWS_AVX2
#define TGC_STRIP_FILTERS TGC_STRIP_FILTERS_AVX2
#define TGC_STRIP_GRAD 0
#define TGC_BAND_VECTORS TGC_VECTORS_AVX2

#define T float
#define V __m256
#define LANES TGC_APPLY(TGC_F32_LANES, TGC_LANES_AVX2)
#define SUFFIX avx2_f32
#define VZERO() _mm256_setzero_ps()
#define VLOAD(p) _mm256_loadu_ps(p)
#define VBCAST(p) _mm256_broadcast_ss(p)
#define VBCAST_VALUE(x) _mm256_set1_ps(x)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VSTORE(p, v) _mm256_storeu_ps(p, v)
#define VADD(a, b) _mm256_add_ps(a, b)
#define TRANSPOSE(r) tgc_transpose_avx2_f32(r)
#define SFMA(a, b, c) fmaf(a, b, c)
#define TGC_MASK8(n) _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, \
                                                                               5, 6, 7))
#define VLOAD_PART(p, n) _mm256_maskload_ps(p, TGC_MASK8(n))
#define VMASK __m256i
#define VMASK_RANGE(lo, hi) _mm256_andnot_si256(TGC_MASK8(lo), TGC_MASK8(hi))
#define VMASK_AND(a, b) _mm256_and_si256(a, b)
#define VLOAD_MASK(p, m) _mm256_maskload_ps(p, m)
#define VFMA_MASK(a, b, c, m) _mm256_blendv_ps(c, _mm256_fmadd_ps(a, b, c), _mm256_castsi256_ps(m))
#define VSTORE_PART(p, v, n) _mm256_maskstore_ps(p, TGC_MASK8(n), v)
#define DEAL2(lo, hi, even, odd) do {     /* [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6], reordered */ \
        even = _mm256_castpd_ps(_mm256_permute4x64_pd(                                    \
            _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));                     \
        odd = _mm256_castpd_ps(_mm256_permute4x64_pd(                                     \
            _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8));                     \
    } while (0)
#define WEAVE2(even, odd, first, second) do {                                              \
        __m256 lo_ = _mm256_unpacklo_ps(even, odd), hi_ = _mm256_unpackhi_ps(even, odd);   \
        first = _mm256_permute2f128_ps(lo_, hi_, 0x20);                                   \
        second = _mm256_permute2f128_ps(lo_, hi_, 0x31);                                  \
    } while (0)
#include "conv_tile.h"

#define T double
#define V __m256d
#define LANES TGC_APPLY(TGC_F64_LANES, TGC_LANES_AVX2)
#define SUFFIX avx2_f64
#define VZERO() _mm256_setzero_pd()
#define VLOAD(p) _mm256_loadu_pd(p)
#define VBCAST(p) _mm256_broadcast_sd(p)
#define VBCAST_VALUE(x) _mm256_set1_pd(x)
#define VFMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define VSTORE(p, v) _mm256_storeu_pd(p, v)
#define VADD(a, b) _mm256_add_pd(a, b)
#define TRANSPOSE(r) tgc_transpose_avx2_f64(r)
#define SFMA(a, b, c) fma(a, b, c)
#define TGC_MASK4(n) _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3))
#define VLOAD_PART(p, n) _mm256_maskload_pd(p, TGC_MASK4(n))
#define VMASK __m256i
#define VMASK_RANGE(lo, hi) _mm256_andnot_si256(TGC_MASK4(lo), TGC_MASK4(hi))
#define VMASK_AND(a, b) _mm256_and_si256(a, b)
#define VLOAD_MASK(p, m) _mm256_maskload_pd(p, m)
#define VFMA_MASK(a, b, c, m) _mm256_blendv_pd(c, _mm256_fmadd_pd(a, b, c), _mm256_castsi256_pd(m))
#define VSTORE_PART(p, v, n) _mm256_maskstore_pd(p, TGC_MASK4(n), v)
#define DEAL2(lo, hi, even, odd) do {     /* [lo0 hi0 | lo2 hi2], reordered */               \
        even = _mm256_permute4x64_pd(_mm256_unpacklo_pd(lo, hi), 0xD8);                   \
        odd = _mm256_permute4x64_pd(_mm256_unpackhi_pd(lo, hi), 0xD8);                    \
    } while (0)
#define WEAVE2(even, odd, first, second) do {                                              \
        __m256d lo_ = _mm256_unpacklo_pd(even, odd), hi_ = _mm256_unpackhi_pd(even, odd);  \
        first = _mm256_permute2f128_pd(lo_, hi_, 0x20);                                   \
        second = _mm256_permute2f128_pd(lo_, hi_, 0x31);                                  \
    } while (0)
#include "conv_tile.h"

#undef TARGET
#undef TGC_PIXELS
#undef TGC_BAND_ROWS
#undef TGC_STRIP_FILTERS
#undef TGC_STRIP_GRAD
#undef TGC_BAND_VECTORS

/* ---- AVX-512F: 32 registers, so up to 28 accumulators ---- */
#define TARGET TGC_TARGET_AVX512
#define TGC_PIXELS TGC_PIXELS_AVX512
#define TGC_BAND_ROWS TGC_BAND_ROWS_AVX512
#define TGC_STRIP_FILTERS TGC_STRIP_FILTERS_AVX512
#define TGC_STRIP_GRAD 1       /* masked multiply-adds at a plain one's cost */
#define TGC_BAND_VECTORS TGC_VECTORS_AVX512

#define T float
#define V __m512
#define LANES TGC_APPLY(TGC_F32_LANES, TGC_LANES_AVX512)
#define SUFFIX avx512_f32
#define VZERO() _mm512_setzero_ps()
#define VLOAD(p) _mm512_loadu_ps(p)
#define VBCAST(p) _mm512_set1_ps(*(p))
#define VBCAST_VALUE(x) _mm512_set1_ps(x)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VSTORE(p, v) _mm512_storeu_ps(p, v)
#define VADD(a, b) _mm512_add_ps(a, b)
#define TRANSPOSE(r) tgc_transpose_avx512_f32(r)
#define SFMA(a, b, c) fmaf(a, b, c)
#define VLOAD_PART(p, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1), p)
#define VMASK __mmask16
#define VMASK_RANGE(lo, hi) ((__mmask16)(((1u << (hi)) - 1) & ~((1u << (lo)) - 1)))
#define VMASK_AND(a, b) ((__mmask16)((a) & (b)))
#define VLOAD_MASK(p, m) _mm512_maskz_loadu_ps(m, p)
#define VFMA_MASK(a, b, c, m) _mm512_mask3_fmadd_ps(a, b, c, m)
#define VSTORE_PART(p, v, n) _mm512_mask_storeu_ps(p, (__mmask16)((1u << (n)) - 1), v)
#define DEAL2(lo, hi, even, odd) do {                                                      \
        even = _mm512_permutex2var_ps(lo, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, \
                                      18, 20, 22, 24, 26, 28, 30), hi);                     \
        odd = _mm512_permutex2var_ps(lo, _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17,  \
                                     19, 21, 23, 25, 27, 29, 31), hi);                      \
    } while (0)
#define WEAVE2(even, odd, first, second) do {                                              \
        first = _mm512_permutex2var_ps(even, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, \
                                       4, 20, 5, 21, 6, 22, 7, 23), odd);                   \
        second = _mm512_permutex2var_ps(even, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11,  \
                                        27, 12, 28, 13, 29, 14, 30, 15, 31), odd);          \
    } while (0)
#include "conv_tile.h"

#define T double
#define V __m512d
#define LANES TGC_APPLY(TGC_F64_LANES, TGC_LANES_AVX512)
#define SUFFIX avx512_f64
#define VZERO() _mm512_setzero_pd()
#define VLOAD(p) _mm512_loadu_pd(p)
#define VBCAST(p) _mm512_set1_pd(*(p))
#define VBCAST_VALUE(x) _mm512_set1_pd(x)
#define VFMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define VSTORE(p, v) _mm512_storeu_pd(p, v)
#define VADD(a, b) _mm512_add_pd(a, b)
#define TRANSPOSE(r) tgc_transpose_avx512_f64(r)
#define SFMA(a, b, c) fma(a, b, c)
#define VLOAD_PART(p, n) _mm512_maskz_loadu_pd((__mmask8)((1u << (n)) - 1), p)
#define VMASK __mmask8
#define VMASK_RANGE(lo, hi) ((__mmask8)(((1u << (hi)) - 1) & ~((1u << (lo)) - 1)))
#define VMASK_AND(a, b) ((__mmask8)((a) & (b)))
#define VLOAD_MASK(p, m) _mm512_maskz_loadu_pd(m, p)
#define VFMA_MASK(a, b, c, m) _mm512_mask3_fmadd_pd(a, b, c, m)
#define VSTORE_PART(p, v, n) _mm512_mask_storeu_pd(p, (__mmask8)((1u << (n)) - 1), v)
#define DEAL2(lo, hi, even, odd) do {                                                      \
        even = _mm512_permutex2var_pd(lo, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), hi); \
        odd = _mm512_permutex2var_pd(lo, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), hi);  \
    } while (0)
#define WEAVE2(even, odd, first, second) do {                                              \
        first = _mm512_permutex2var_pd(even, _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), odd); \
        second = _mm512_permutex2var_pd(even, _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15), \
                                        odd);                                               \
    } while (0)
#include "conv_tile.h"

#undef TARGET
#undef TGC_PIXELS
#undef TGC_BAND_ROWS
#undef TGC_STRIP_FILTERS
#undef TGC_STRIP_GRAD
#undef TGC_BAND_VECTORS
#endif /* TGC_X86 */

/* ---- what the CPU can run ---- */

#if TGC_X86
#if defined(_MSC_VER) && !defined(__clang__)
static void tgc_cpuid(int leaf, int sub, unsigned r[4])
{
    int v[4];
    __cpuidex(v, leaf, sub);
    for (int k = 0; k < 4; k++) r[k] = (unsigned)v[k];
}
static unsigned long long tgc_xgetbv(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static void tgc_cpuid(int leaf, int sub, unsigned r[4])
{
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
static unsigned long long tgc_xgetbv(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif
#endif

/* The widest path this CPU and operating system can run. */
static int tgc_best_path(void)
{
#if TGC_X86
    unsigned r[4];
    tgc_cpuid(0, 0, r);
    unsigned max_leaf = r[0];
    tgc_cpuid(1, 0, r);
    int osxsave = (r[2] >> 27) & 1, fma = (r[2] >> 12) & 1, avx = (r[2] >> 28) & 1;
    if (!osxsave || !avx || max_leaf < 7)
        return TGC_PORTABLE;
    unsigned long long xcr0 = tgc_xgetbv();
    int os_ymm = (xcr0 & 0x6) == 0x6;           /* SSE and AVX state saved */
    int os_zmm = (xcr0 & 0xe6) == 0xe6;         /* ... and opmask, ZMM0-15, ZMM16-31 */
    tgc_cpuid(7, 0, r);
    int avx2 = (r[1] >> 5) & 1, avx512f = (r[1] >> 16) & 1;
    if (avx512f && os_zmm)
        return TGC_AVX512;
    if (avx2 && fma && os_ymm)
        return TGC_AVX2;
#endif
    return TGC_PORTABLE;
}

/* Lanes in a vector of `path` for floats of `itemsize` bytes (the paths' table above). */
static int tgc_lanes(int path, int itemsize)
{
    static const int lanes[TGC_N_PATHS][2] = {
        {TGC_APPLY(TGC_ROW4_2, TGC_LANES_PORTABLE)},
        {TGC_APPLY(TGC_ROW4_2, TGC_LANES_AVX2)},
        {TGC_APPLY(TGC_ROW4_2, TGC_LANES_AVX512)},
    };
    if (path < 0 || path >= TGC_N_PATHS || (itemsize != 4 && itemsize != 8))
        tgc_abort("lanes of a path and item size", path * 100 + itemsize);
    return lanes[path][itemsize == 8];
}

/* How many pixels a tile of `vectors` vectors holds on `path` (the paths' table above). */
static int tgc_max_pixels(int path, int vectors)
{
    static const int limits[TGC_N_PATHS][TGC_MAX_VECTORS] = {
        TGC_APPLY(TGC_ROW, TGC_PIXELS_PORTABLE),
        TGC_APPLY(TGC_ROW, TGC_PIXELS_AVX2),
        TGC_APPLY(TGC_ROW, TGC_PIXELS_AVX512),
    };
    if (path < 0 || path >= TGC_N_PATHS || vectors < 1 || vectors > TGC_MAX_VECTORS)
        tgc_abort("a tile of this many vectors", vectors);
    return limits[path][vectors - 1];
}

/* The widest tile (in vectors) worth using on `path` (the paths' table above). */
static int tgc_max_vectors(int path)
{
    static const int widest[TGC_N_PATHS] = {
        TGC_VECTORS_PORTABLE, TGC_VECTORS_AVX2, TGC_VECTORS_AVX512};
    return widest[path];
}

#define TGC_BY_VECTORS(name, suffix) \
    {name##_1_##suffix, name##_2_##suffix, name##_3_##suffix, name##_4_##suffix}

#if TGC_X86
#define TGC_TILES_BY_PATH(name, type)                                                       \
    {TGC_BY_VECTORS(name, portable_##type), TGC_BY_VECTORS(name, avx2_##type),              \
     TGC_BY_VECTORS(name, avx512_##type)}
#else
#define TGC_TILES_BY_PATH(name, type) {TGC_BY_VECTORS(name, portable_##type)}
#endif

/* tgc_tile_fn_<type>(path, vectors, in_lanes): the tile of that many vectors on the path,
 * broadcasting its input (tgc_tile) or reading it in lanes (tgc_ltile) */
#define TGC_TILE_TABLE(type)                                                                \
    static tgc_tile_##type tgc_tile_fn_##type(int path, int vectors, int in_lanes)          \
    {                                                                                       \
        static const tgc_tile_##type table[2][TGC_N_PATHS][TGC_MAX_VECTORS] = {             \
            TGC_TILES_BY_PATH(tgc_tile, type), TGC_TILES_BY_PATH(tgc_ltile, type)};         \
        return table[in_lanes][path][vectors - 1];                                          \
    }

TGC_TILE_TABLE(f32)
TGC_TILE_TABLE(f64)

typedef void (*tgc_unstage_f32)(const float *, int, ptrdiff_t, int, float *, ptrdiff_t,
                                const float *);
typedef void (*tgc_unstage_f64)(const double *, int, ptrdiff_t, int, double *, ptrdiff_t,
                                const double *);
typedef void (*tgc_stage_f32)(const float *, ptrdiff_t, int, ptrdiff_t, float *, int);
typedef void (*tgc_stage_f64)(const double *, ptrdiff_t, int, ptrdiff_t, double *, int);

#if TGC_X86
#define TGC_BY_PATH(name, type) \
    {name##_portable_##type, name##_avx2_##type, name##_avx512_##type}
#else
#define TGC_BY_PATH(name, type) {name##_portable_##type}
#endif

typedef void (*tgc_fold_f32)(const float *, int, ptrdiff_t, float *, const float *);
typedef void (*tgc_fold_f64)(const double *, int, ptrdiff_t, double *, const double *);

/* tgc_<name>_fn_<type>(path): the path's function */
#define TGC_PATH_TABLE(name, type)                                                          \
    static tgc_##name##_##type tgc_##name##_fn_##type(int path)                             \
    {                                                                                       \
        static const tgc_##name##_##type table[] = TGC_BY_PATH(tgc_##name, type);           \
        return table[path];                                                                 \
    }

TGC_PATH_TABLE(unstage, f32)
TGC_PATH_TABLE(unstage, f64)
TGC_PATH_TABLE(stage, f32)
TGC_PATH_TABLE(stage, f64)
TGC_PATH_TABLE(fold, f32)
TGC_PATH_TABLE(fold, f64)

typedef void (*tgc_terms_f32)(const float *, const ptrdiff_t *, const float *, const ptrdiff_t *,
                              int, ptrdiff_t, float *, const float *, ptrdiff_t, ptrdiff_t,
                              ptrdiff_t);
typedef void (*tgc_terms_f64)(const double *, const ptrdiff_t *, const double *,
                              const ptrdiff_t *, int, ptrdiff_t, double *, const double *,
                              ptrdiff_t, ptrdiff_t, ptrdiff_t);
typedef void (*tgc_dot_f32)(const float *, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t,
                            ptrdiff_t, ptrdiff_t, float *);
typedef void (*tgc_dot_f64)(const double *, ptrdiff_t, const double *, ptrdiff_t, ptrdiff_t,
                            ptrdiff_t, ptrdiff_t, double *);
typedef void (*tgc_deal_f32)(const float *, ptrdiff_t, ptrdiff_t, float *, ptrdiff_t);
typedef void (*tgc_deal_f64)(const double *, ptrdiff_t, ptrdiff_t, double *, ptrdiff_t);
typedef tgc_deal_f32 tgc_weave_f32;
typedef tgc_deal_f64 tgc_weave_f64;

TGC_PATH_TABLE(terms, f32)
TGC_PATH_TABLE(terms, f64)
TGC_PATH_TABLE(dot, f32)
TGC_PATH_TABLE(dot, f64)
TGC_PATH_TABLE(deal, f32)
TGC_PATH_TABLE(deal, f64)
TGC_PATH_TABLE(weave, f32)
TGC_PATH_TABLE(weave, f64)

typedef void (*tgc_band_f32)(const tgc_band_shape *, const float *, const float *, float *,
                             const float *);
typedef void (*tgc_band_f64)(const tgc_band_shape *, const double *, const double *, double *,
                             const double *);

TGC_PATH_TABLE(band, f32)
TGC_PATH_TABLE(band, f64)

typedef void (*tgc_strip_f32)(const tgc_strip_shape *, const float *, ptrdiff_t, const float *,
                              const ptrdiff_t *, ptrdiff_t, ptrdiff_t, float *, const float *);
typedef void (*tgc_strip_f64)(const tgc_strip_shape *, const double *, ptrdiff_t,
                              const double *, const ptrdiff_t *, ptrdiff_t, ptrdiff_t, double *,
                              const double *);

TGC_PATH_TABLE(strip, f32)
TGC_PATH_TABLE(strip, f64)

typedef void (*tgc_strip_grad_f32)(const tgc_strip_grad_shape *, ptrdiff_t, const float *,
                                   ptrdiff_t, const float *, ptrdiff_t, double *, ptrdiff_t);
typedef void (*tgc_strip_grad_f64)(const tgc_strip_grad_shape *, ptrdiff_t, const double *,
                                   ptrdiff_t, const double *, ptrdiff_t, double *, ptrdiff_t);

TGC_PATH_TABLE(strip_grad, f32)
TGC_PATH_TABLE(strip_grad, f64)

/* Flops done by `rounds` rounds of the FMA probe of `path`, float32 or float64. */
static double tgc_fma_probe(int path, int is_double, long rounds)
{
#if TGC_X86
    if (path == TGC_AVX512)
        return is_double ? tgc_fma_probe_avx512_f64(rounds) : tgc_fma_probe_avx512_f32(rounds);
    if (path == TGC_AVX2)
        return is_double ? tgc_fma_probe_avx2_f64(rounds) : tgc_fma_probe_avx2_f32(rounds);
#endif
    return is_double ? tgc_fma_probe_portable_f64(rounds) : tgc_fma_probe_portable_f32(rounds);
}

#endif /* TINYGRAD_CONV_MICROKERNELS_H */
