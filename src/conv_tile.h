/* The convolutions' one micro-kernel, written once and compiled once per (instruction set,
 * float type): src/microkernels.h includes this file six times, each time with these defined:
 *
 *   T              float or double
 *   V              a vector of LANES T's;   SUFFIX    name suffix (avx512_f32, portable_f64, ...)
 *   TARGET         the attribute that lets a function use the instruction set (or nothing)
 *   VZERO()  VLOAD(p)  VBCAST(p)  VFMA(a, b, acc) = a*b + acc  VSTORE(p, v)
 *   TGC_CASES_1..4 the switch cases for 1..n pixels: how many pixels a tile of 1..4 vectors
 *                  may hold (its accumulators must fit in the registers)
 *
 * A tile is `npix` pixels by `vectors` vectors of output channels: vectors*LANES outputs each,
 * all kept in registers while they accumulate
 *
 *     out[at[p] + o] (+)= sum over a < n[0], t < n[1], u < n[2] of
 *                  vec[a*vec_step[0] + t*vec_step[1] + u*vec_step[2] + o]
 *                * in[pix[p] + a*in_step[0] + t*in_step[1] + u*in_step[2]]
 *
 * which is every formula of the tutorial, with different things in the three loops:
 *   Z = W ⊛ A              vec: W packed, in: A,  loops: channel c, kernel row i, column j;
 *   dL/dA = W_180 ⊛ Z'     vec: W_180 packed,     in: Z', loops: filter f, taps i, j;
 *   dL/dW = Z' ⊛ A         vec: Z' packed,        in: A,  loops: -, output row, column.
 * Per reduction step: `vectors` loads of vec, one broadcast of `in` per pixel, and
 * vectors * npix fused multiply-adds, so the FMA units, not the loads, set the pace.
 */

#define TGC_CAT_(a, b) a##_##b
#define TGC_CAT(a, b) TGC_CAT_(a, b)
#define TGC_FN(name) TGC_CAT(name, SUFFIX)

TARGET static TGC_INLINE void
TGC_FN(tgc_tile_body)(const T *vec,              /* IN  the vectors at the first step */
                      const T *in,               /* IN  the broadcast side */
                      const ptrdiff_t *pix,      /* IN  npix offsets into `in`, one a pixel */
                      const tgc_loops *loops,    /* IN  counts and steps of the three loops */
                      T *out,                    /* OUT pixel p's vectors at out + at[p] */
                      const ptrdiff_t *out_at,
                      int accumulate,            /* add to what out holds (else overwrite) */
                      const int vectors, const int npix)
{
    V acc[4][TGC_MAX_PIX];
    const T *at[TGC_MAX_PIX];
    for (int p = 0; p < npix; p++) {
        at[p] = in + pix[p];
        for (int v = 0; v < vectors; v++)
            acc[v][p] = accumulate ? VLOAD(out + out_at[p] + v * LANES) : VZERO();
    }
    const ptrdiff_t n0 = loops->n[0], n1 = loops->n[1], n2 = loops->n[2];
    for (ptrdiff_t a = 0; a < n0; a++) {
        const T *vec_a = vec + a * loops->vec_step[0];
        ptrdiff_t off_a = a * loops->in_step[0];
        for (ptrdiff_t t = 0; t < n1; t++) {
            const T *w = vec_a + t * loops->vec_step[1];
            ptrdiff_t off = off_a + t * loops->in_step[1];
            for (ptrdiff_t u = 0; u < n2; u++) {
                V wv[4];
                for (int v = 0; v < vectors; v++)
                    wv[v] = VLOAD(w + v * LANES);
                for (int p = 0; p < npix; p++) {
                    V x = VBCAST(at[p] + off);
                    for (int v = 0; v < vectors; v++)
                        acc[v][p] = VFMA(wv[v], x, acc[v][p]);
                }
                w += loops->vec_step[2];
                off += loops->in_step[2];
            }
        }
    }
    for (int p = 0; p < npix; p++)
        for (int v = 0; v < vectors; v++)
            VSTORE(out + out_at[p] + v * LANES, acc[v][p]);
}

/* One function per vector count; the switch gives the compiler a constant pixel count to
 * unroll for, so the accumulators live in registers. */
#define TGC_CASE(V_, P_) \
    case P_: TGC_FN(tgc_tile_body)(vec, in, pix, loops, out, out_at, accumulate, V_, P_); break;

#define TGC_TILE_FN(V_, CASES)                                                              \
    TARGET static void TGC_FN(tgc_tile_##V_)(const T *vec, const T *in, const ptrdiff_t *pix, \
                                             int npix, const tgc_loops *loops, T *out,      \
                                             const ptrdiff_t *out_at, int accumulate)       \
    {                                                                                       \
        switch (npix) { CASES }                                                             \
    }

TGC_TILE_FN(1, TGC_CASES_1)
TGC_TILE_FN(2, TGC_CASES_2)
TGC_TILE_FN(3, TGC_CASES_3)
TGC_TILE_FN(4, TGC_CASES_4)

/* The machine's peak, measured rather than looked up: 16 independent chains of FMAs on
 * registers (no memory traffic), `rounds` times; returns the flops done. The chains are written
 * out one by one so that the compiler keeps each in a register. */
TARGET static double TGC_FN(tgc_fma_probe)(long rounds)
{
    V x = VBCAST_VALUE((T)0.999999), y = VBCAST_VALUE((T)0.000001);
    V a0 = VBCAST_VALUE((T)0), a1 = VBCAST_VALUE((T)1), a2 = VBCAST_VALUE((T)2);
    V a3 = VBCAST_VALUE((T)3), a4 = VBCAST_VALUE((T)4), a5 = VBCAST_VALUE((T)5);
    V a6 = VBCAST_VALUE((T)6), a7 = VBCAST_VALUE((T)7), a8 = VBCAST_VALUE((T)8);
    V a9 = VBCAST_VALUE((T)9), a10 = VBCAST_VALUE((T)10), a11 = VBCAST_VALUE((T)11);
    V a12 = VBCAST_VALUE((T)12), a13 = VBCAST_VALUE((T)13), a14 = VBCAST_VALUE((T)14);
    V a15 = VBCAST_VALUE((T)15);
    for (long r = 0; r < rounds; r++) {
        a0 = VFMA(a0, x, y); a1 = VFMA(a1, x, y); a2 = VFMA(a2, x, y); a3 = VFMA(a3, x, y);
        a4 = VFMA(a4, x, y); a5 = VFMA(a5, x, y); a6 = VFMA(a6, x, y); a7 = VFMA(a7, x, y);
        a8 = VFMA(a8, x, y); a9 = VFMA(a9, x, y); a10 = VFMA(a10, x, y); a11 = VFMA(a11, x, y);
        a12 = VFMA(a12, x, y); a13 = VFMA(a13, x, y); a14 = VFMA(a14, x, y);
        a15 = VFMA(a15, x, y);
    }
    T out[LANES];
    V sum = VFMA(a0, x, VFMA(a1, x, VFMA(a2, x, VFMA(a3, x, VFMA(a4, x, VFMA(a5, x, a6))))));
    sum = VFMA(sum, x, VFMA(a7, x, VFMA(a8, x, VFMA(a9, x, VFMA(a10, x, VFMA(a11, x, a12))))));
    sum = VFMA(sum, x, VFMA(a13, x, VFMA(a14, x, a15)));
    VSTORE(out, sum);
    tgc_probe_sink += (double)out[0];
    return 2.0 * LANES * 16.0 * (double)rounds;
}

#undef TGC_TILE_FN
#undef TGC_CASE
