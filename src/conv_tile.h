/* The convolutions' one micro-kernel, written once and compiled once per (instruction set,
 * float type): src/microkernels.h includes this file six times, each time with these defined:
 *
 *   T              float or double
 *   V              a vector of LANES T's;   SUFFIX    name suffix (avx512_f32, portable_f64, ...)
 *   TARGET         the attribute that lets a function use the instruction set (or nothing)
 *   VZERO()  VLOAD(p)  VBCAST(p)  VFMA(a, b, acc) = a*b + acc  VSTORE(p, v)
 *   MAX_PIX_1..4   how many pixels a tile of 1..4 vectors may hold (accumulators fit registers)
 *
 * A tile is `npix` pixels by `vectors` vectors of output channels: vectors*LANES outputs each,
 * all kept in registers while they accumulate
 *
 *     tile[p][o] = sum over a < n[0], t < n[1], u < n[2] of
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
                      T *tile,                   /* OUT [npix][vectors * LANES] */
                      const int vectors, const int npix)
{
    V acc[4][TGC_MAX_PIX];
    const T *at[TGC_MAX_PIX];
    for (int p = 0; p < npix; p++) {
        at[p] = in + pix[p];
        for (int v = 0; v < vectors; v++)
            acc[v][p] = VZERO();
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
            VSTORE(tile + (p * vectors + v) * LANES, acc[v][p]);
}

/* One function per vector count; the switch gives the compiler a constant pixel count to
 * unroll for, so the accumulators live in registers. */
#define TGC_CASE(V_, P_) \
    case P_: TGC_FN(tgc_tile_body)(vec, in, pix, loops, tile, V_, P_); break;

#define TGC_TILE_FN(V_, CASES)                                                              \
    TARGET static void TGC_FN(tgc_tile_##V_)(const T *vec, const T *in, const ptrdiff_t *pix, \
                                             int npix, const tgc_loops *loops, T *tile)     \
    {                                                                                       \
        switch (npix) { CASES }                                                             \
    }

TGC_TILE_FN(1, TGC_CASES_1)
TGC_TILE_FN(2, TGC_CASES_2)
TGC_TILE_FN(3, TGC_CASES_3)
TGC_TILE_FN(4, TGC_CASES_4)

/* The machine's peak, measured rather than looked up: `chains` independent chains of FMAs
 * on registers (no memory traffic), `rounds` times; returns the flops done. */
TARGET static double TGC_FN(tgc_fma_probe)(long rounds)
{
    V acc[24];
    V x = VBCAST_VALUE((T)1.0000001), y = VBCAST_VALUE((T)0.9999999);
    for (int k = 0; k < 24; k++)
        acc[k] = VBCAST_VALUE((T)k);
    for (long r = 0; r < rounds; r++)
        for (int k = 0; k < 24; k++)
            acc[k] = VFMA(acc[k], x, y);
    T sink = 0;
    T out[LANES];
    for (int k = 0; k < 24; k++) {
        VSTORE(out, acc[k]);
        sink += out[0];
    }
    tgc_probe_sink += (double)sink;
    return 2.0 * LANES * 24.0 * (double)rounds;
}

#undef TGC_TILE_FN
#undef TGC_CASE
