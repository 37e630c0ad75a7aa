/* The convolutions' one micro-kernel, written once and compiled once per (instruction set,
 * float type): src/microkernels.h includes this file six times, each time with these defined:
 *
 *   T              float or double
 *   V              a vector of LANES T's;   SUFFIX    name suffix (avx512_f32, portable_f64, ...)
 *   TARGET         the attribute that lets a function use the instruction set (or nothing)
 *   VZERO()  VLOAD(p)  VBCAST(p)  VFMA(a, b, acc) = a*b + acc  VSTORE(p, v)  VADD(a, b)
 *   TRANSPOSE(r)   transposes the LANES x LANES block held in the vectors r[0..LANES-1]
 *   SFMA(a, b, acc)  VFMA on one value (the same rounding: fused where VFMA is)
 *   VLOAD_PART(p, n)  the n <= LANES values from p, zeros in the other lanes (reads no further)
 *   VSTORE_PART(p, v, n)  the first n <= LANES lanes of v to p (writes no further)
 *   DEAL2(lo, hi, even, odd), WEAVE2(even, odd, first, second)  (optional) the even and odd
 *                  lanes of two vectors apart, and back together
 *   TGC_PIXELS     the path's row of the paths' table (microkernels.h): how many pixels a
 *                  tile of 1..4 vectors may hold, from which TGC_CASES_1..4 make the switch
 *                  cases
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

/* the table's lanes are this copy's vector: a drift would read and write past the vectors */
typedef char TGC_FN(tgc_lanes_match)[sizeof(V) == LANES * sizeof(T) ? 1 : -1];

/* The accumulators are named variables, acc<v>_<p> for vector v and pixel p, not an array:
 * compilers keep named variables in registers, while an array of vectors may be kept in memory
 * (GCC does so for AVX2, at half the speed). Those a tile does not use are never touched, and
 * the compiler drops them: `vectors` and `npix` are constants in each copy of the body. */
#define TGC_FOR_PIXELS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) \
    X(13) X(14) X(15) X(16) X(17) X(18) X(19)

#define TGC_START(p)                                                                        \
    const T *at##p = in + (p < npix ? pix[p] : 0);                                          \
    V acc0_##p = accumulate && p < npix ? VLOAD(out + out_at[p]) : VZERO();                 \
    V acc1_##p = accumulate && p < npix && vectors > 1 ? VLOAD(out + out_at[p] + LANES)    \
                                                          : VZERO();                        \
    V acc2_##p = accumulate && p < npix && vectors > 2 ? VLOAD(out + out_at[p] + 2 * LANES) \
                                                          : VZERO();                        \
    V acc3_##p = accumulate && p < npix && vectors > 3 ? VLOAD(out + out_at[p] + 3 * LANES) \
                                                          : VZERO();

/* pixel p: its input value broadcast, times each vector of the step, into its accumulators;
 * or, with the input in lanes, the input's vectors (lane by lane) times the step's */
#define TGC_STEP(p)                                                                         \
    if (p < npix && in_lanes) {                                                             \
        acc0_##p = VFMA(w0, VLOAD(at##p + off), acc0_##p);                                  \
        if (vectors > 1) acc1_##p = VFMA(w1, VLOAD(at##p + off + LANES), acc1_##p);         \
        if (vectors > 2) acc2_##p = VFMA(w2, VLOAD(at##p + off + 2 * LANES), acc2_##p);     \
        if (vectors > 3) acc3_##p = VFMA(w3, VLOAD(at##p + off + 3 * LANES), acc3_##p);     \
    } else if (p < npix) {                                                                  \
        V x = VBCAST(at##p + off);                                                          \
        acc0_##p = VFMA(w0, x, acc0_##p);                                                   \
        if (vectors > 1) acc1_##p = VFMA(w1, x, acc1_##p);                                  \
        if (vectors > 2) acc2_##p = VFMA(w2, x, acc2_##p);                                  \
        if (vectors > 3) acc3_##p = VFMA(w3, x, acc3_##p);                                  \
    }

#define TGC_FINISH(p)                                                                       \
    if (p < npix) {                                                                         \
        VSTORE(out + out_at[p], acc0_##p);                                                  \
        if (vectors > 1) VSTORE(out + out_at[p] + LANES, acc1_##p);                         \
        if (vectors > 2) VSTORE(out + out_at[p] + 2 * LANES, acc2_##p);                     \
        if (vectors > 3) VSTORE(out + out_at[p] + 3 * LANES, acc3_##p);                     \
    }

TARGET static TGC_INLINE void
TGC_FN(tgc_tile_body)(const T *vec,              /* IN  the vectors at the first step */
                      const T *in,               /* IN  the broadcast side */
                      const ptrdiff_t *pix,      /* IN  npix offsets into `in`, one a pixel */
                      const tgc_loops *loops,    /* IN  counts and steps of the three loops */
                      T *out,                    /* OUT pixel p's vectors at out + at[p] */
                      const ptrdiff_t *out_at,
                      int accumulate,            /* add to what out holds (else overwrite) */
                      const int vectors, const int npix,
                      const int in_lanes)        /* `in` in lanes too (else broadcast) */
{
    TGC_FOR_PIXELS(TGC_START)
    const ptrdiff_t n0 = loops->n[0], n1 = loops->n[1], n2 = loops->n[2];
    for (ptrdiff_t a = 0; a < n0; a++) {
        const T *vec_a = vec + a * loops->vec_step[0];
        ptrdiff_t off_a = a * loops->in_step[0];
        for (ptrdiff_t t = 0; t < n1; t++) {
            const T *w = vec_a + t * loops->vec_step[1];
            ptrdiff_t off = off_a + t * loops->in_step[1];
            for (ptrdiff_t u = 0; u < n2; u++) {
                V w0 = VLOAD(w);
                V w1 = vectors > 1 ? VLOAD(w + LANES) : VZERO();
                V w2 = vectors > 2 ? VLOAD(w + 2 * LANES) : VZERO();
                V w3 = vectors > 3 ? VLOAD(w + 3 * LANES) : VZERO();
                TGC_FOR_PIXELS(TGC_STEP)
                w += loops->vec_step[2];
                off += loops->in_step[2];
            }
        }
    }
    TGC_FOR_PIXELS(TGC_FINISH)
}

/* One function per vector count; the switch gives the compiler a constant pixel count to
 * unroll for, so the accumulators live in registers. */
#define TGC_CASE(V_, P_)                                                                    \
    case P_:                                                                                \
        TGC_FN(tgc_tile_body)(vec, in, pix, loops, out, out_at, accumulate, V_, P_, in_lanes); \
        break;

/* tgc_tile_<vectors> broadcasts `in`; tgc_ltile_<vectors> reads it in lanes, as `vec` */
#define TGC_TILE_FN(NAME, V_, CASES, IN_LANES)                                              \
    TARGET static void TGC_FN(NAME##_##V_)(const T *vec, const T *in, const ptrdiff_t *pix, \
                                           int npix, const tgc_loops *loops, T *out,        \
                                           const ptrdiff_t *out_at, int accumulate)         \
    {                                                                                       \
        const int in_lanes = IN_LANES;                                                      \
        switch (npix) {                                                                     \
            CASES                                                                           \
            default: tgc_abort("a tile of this many pixels", npix);                         \
        }                                                                                   \
    }

TGC_TILE_FN(tgc_tile, 1, TGC_CASES_1, 0)
TGC_TILE_FN(tgc_tile, 2, TGC_CASES_2, 0)
TGC_TILE_FN(tgc_tile, 3, TGC_CASES_3, 0)
TGC_TILE_FN(tgc_tile, 4, TGC_CASES_4, 0)
TGC_TILE_FN(tgc_ltile, 1, TGC_CASES_1, 1)
TGC_TILE_FN(tgc_ltile, 2, TGC_CASES_2, 1)
TGC_TILE_FN(tgc_ltile, 3, TGC_CASES_3, 1)
TGC_TILE_FN(tgc_ltile, 4, TGC_CASES_4, 1)

/* ---- the tiles' staging buffer and the NCHW layout, both ways ----
 *
 *     unstage:  out[o * plane + q] = stage[q * width + o] (+ bias[o])   q < npix, o < count
 *     stage:    stage[q * width + o] = src[o * plane + q]  (0 for count <= o < width)
 *
 * Transposes, done LANES x LANES at a time in registers (TRANSPOSE), so that both sides are
 * read and written a whole vector at a time; blocks at the edges go one value at a time. */

TARGET static void TGC_FN(tgc_unstage)(const T *stage, int width, ptrdiff_t npix, int count,
                                       T *out, ptrdiff_t plane, const T *bias)
{
    for (int o0 = 0; o0 < count; o0 += LANES) {
        for (ptrdiff_t q0 = 0; q0 < npix; q0 += LANES) {
            if (o0 + LANES > count || q0 + LANES > npix) {       /* an edge block */
                for (int o = o0; o < count && o < o0 + LANES; o++)
                    for (ptrdiff_t q = q0; q < npix && q < q0 + LANES; q++) {
                        out[o * plane + q] = stage[q * width + o] + (bias ? bias[o] : (T)0);
                    }
                continue;
            }
            V r[LANES];
            V b = bias ? VLOAD(bias + o0) : VZERO();
            for (int l = 0; l < LANES; l++)       /* r[l]: pixel q0 + l, channels o0.. */
                r[l] = VADD(VLOAD(stage + (q0 + l) * width + o0), b);
            TRANSPOSE(r);                         /* r[c]: channel o0 + c, pixels q0.. */
            for (int c = 0; c < LANES; c++)
                VSTORE(out + (o0 + c) * plane + q0, r[c]);
        }
    }
}

TARGET static void TGC_FN(tgc_stage)(const T *src, ptrdiff_t plane, int count, ptrdiff_t npix,
                                     T *stage, int width)
{
    for (int o0 = 0; o0 < width; o0 += LANES) {
        for (ptrdiff_t q0 = 0; q0 < npix; q0 += LANES) {
            if (q0 + LANES > npix) {                             /* an edge block */
                for (int o = o0; o < o0 + LANES; o++)
                    for (ptrdiff_t q = q0; q < npix; q++)
                        stage[q * width + o] = o < count ? src[o * plane + q] : (T)0;
                continue;
            }
            V r[LANES];
            for (int c = 0; c < LANES; c++)       /* r[c]: channel o0 + c, pixels q0.. */
                r[c] = o0 + c < count ? VLOAD(src + (o0 + c) * plane + q0) : VZERO();
            TRANSPOSE(r);                         /* r[l]: pixel q0 + l, channels o0.. */
            for (int l = 0; l < LANES; l++)
                VSTORE(stage + (q0 + l) * width + o0, r[l]);
        }
    }
}

/* ---- a tile's lanes added up, when the reduction was in lanes ----
 *
 *     fold:  out[q] = sum over o < width of stage[q * width + o]  (+ *bias)   q < npix
 *
 * in one fixed order: a pixel's vectors lane by lane, then its lanes 0, 1, ..., LANES-1. A
 * block of LANES pixels is transposed (TRANSPOSE) so that the last step adds whole vectors;
 * the pixels past the last block go one at a time, adding in the same order (same bits). */

TARGET static void TGC_FN(tgc_fold)(const T *stage, int width, ptrdiff_t npix, T *out,
                                    const T *bias)
{
    ptrdiff_t q0 = 0;
    for (; q0 + LANES <= npix; q0 += LANES) {
        V r[LANES];
        for (int l = 0; l < LANES; l++) {     /* r[l]: pixel q0 + l's vectors added */
            r[l] = VLOAD(stage + (q0 + l) * width);
            for (int o = LANES; o < width; o += LANES)
                r[l] = VADD(r[l], VLOAD(stage + (q0 + l) * width + o));
        }
        TRANSPOSE(r);                         /* r[c]: lane c of pixels q0.. */
        V sum = r[0];
        for (int c = 1; c < LANES; c++)
            sum = VADD(sum, r[c]);
        VSTORE(out + q0, bias ? VADD(sum, VBCAST(bias)) : sum);
    }
    for (ptrdiff_t q = q0; q < npix; q++) {
        T lane[LANES];
        V acc = VLOAD(stage + q * width);
        for (int o = LANES; o < width; o += LANES)
            acc = VADD(acc, VLOAD(stage + q * width + o));
        VSTORE(lane, acc);
        T sum = lane[0];
        for (int c = 1; c < LANES; c++)
            sum = sum + lane[c];
        out[q] = bias ? sum + *bias : sum;
    }
}

/* ---- a plane's pixels in the lanes (depthwise): a run of one output row is the vector ----
 *
 *     terms:  out[u] = (sum over t < nterms of k[koff[t]] * in[ioff[t] + u])  (+ *bias)
 *                                                                       0 <= u < count
 *             for each of `rows` rows (in and out moving by in_step and out_step)
 *
 * one chain of fused multiply-adds per output, in the terms' order (the caller lists them by
 * channel, kernel row, kernel column: the micro-kernel's order). Four vectors of outputs at a
 * time share each broadcast weight; the last vector may overlap the one before (its outputs
 * are computed again, the same way: the same bits); a run shorter than a vector goes one
 * output at a time, SFMA being VFMA's one-lane twin (the same rounding). */

/* `vectors` (1, 2 or 4) vectors of outputs, at u[0..vectors-1] */
TARGET static TGC_INLINE void TGC_FN(tgc_terms_run)(const T *k, const ptrdiff_t *koff,
                                                    const T *in, const ptrdiff_t *ioff,
                                                    int nterms, T *out, const T *bias,
                                                    const ptrdiff_t *u, const int vectors)
{
    V a0 = VZERO(), a1 = VZERO(), a2 = VZERO(), a3 = VZERO();
    for (int t = 0; t < nterms; t++) {
        V w = VBCAST(k + koff[t]);
        const T *p = in + ioff[t];
        a0 = VFMA(w, VLOAD(p + u[0]), a0);
        if (vectors > 1) a1 = VFMA(w, VLOAD(p + u[1]), a1);
        if (vectors > 2) a2 = VFMA(w, VLOAD(p + u[2]), a2);
        if (vectors > 3) a3 = VFMA(w, VLOAD(p + u[3]), a3);
    }
    if (bias) {
        V b = VBCAST(bias);
        a0 = VADD(a0, b); a1 = VADD(a1, b); a2 = VADD(a2, b); a3 = VADD(a3, b);
    }
    VSTORE(out + u[0], a0);
    if (vectors > 1) VSTORE(out + u[1], a1);
    if (vectors > 2) VSTORE(out + u[2], a2);
    if (vectors > 3) VSTORE(out + u[3], a3);
}

TARGET static TGC_INLINE void TGC_FN(tgc_terms_row)(const T *k, const ptrdiff_t *koff,
                                                    const T *in, const ptrdiff_t *ioff,
                                                    int nterms, ptrdiff_t count, T *out,
                                                    const T *bias)
{
    if (count < LANES) {
        for (ptrdiff_t u = 0; u < count; u++) {
            T acc = 0;
            for (int t = 0; t < nterms; t++)
                acc = SFMA(k[koff[t]], in[ioff[t] + u], acc);
            out[u] = bias ? acc + *bias : acc;
        }
        return;
    }
    /* vector v starts at min(v * LANES, count - LANES): four at a time, then two, then one */
    const ptrdiff_t nvec = (count + LANES - 1) / LANES, last = count - LANES;
    ptrdiff_t u[4], v = 0;
    for (; v < nvec; v += 4) {
        for (int i = 0; i < 4; i++)
            u[i] = (v + i) * LANES < last ? (v + i) * LANES : last;
        if (v + 4 <= nvec)
            TGC_FN(tgc_terms_run)(k, koff, in, ioff, nterms, out, bias, u, 4);
        else if (v + 2 <= nvec) {
            TGC_FN(tgc_terms_run)(k, koff, in, ioff, nterms, out, bias, u, 2);
            if (v + 3 == nvec)
                TGC_FN(tgc_terms_run)(k, koff, in, ioff, nterms, out, bias, u + 2, 1);
        } else
            TGC_FN(tgc_terms_run)(k, koff, in, ioff, nterms, out, bias, u, 1);
    }
}

/* a run shorter than a vector, four rows at a time: each output still one chain of SFMAs in
 * the terms' order (tgc_terms_row's, the same bits), but four chains run at once instead of
 * one after the other (a border column of a plane is such a run, one output a row) */
TARGET static void TGC_FN(tgc_terms_narrow4)(const T *k, const ptrdiff_t *koff, const T *in,
                                             const ptrdiff_t *ioff, int nterms, ptrdiff_t count,
                                             T *out, const T *bias, ptrdiff_t in_step,
                                             ptrdiff_t out_step)
{
    for (ptrdiff_t u = 0; u < count; u++) {
        T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (int t = 0; t < nterms; t++) {
            const T w = k[koff[t]];
            const T *p = in + ioff[t] + u;
            a0 = SFMA(w, p[0], a0);
            a1 = SFMA(w, p[in_step], a1);
            a2 = SFMA(w, p[2 * in_step], a2);
            a3 = SFMA(w, p[3 * in_step], a3);
        }
        out[u] = bias ? a0 + *bias : a0;
        out[out_step + u] = bias ? a1 + *bias : a1;
        out[2 * out_step + u] = bias ? a2 + *bias : a2;
        out[3 * out_step + u] = bias ? a3 + *bias : a3;
    }
}

/* `rows` rows of outputs that share their terms: row r's inputs and outputs start
 * r * in_step and r * out_step further on */
TARGET static void TGC_FN(tgc_terms)(const T *k, const ptrdiff_t *koff, const T *in,
                                     const ptrdiff_t *ioff, int nterms, ptrdiff_t count,
                                     T *out, const T *bias, ptrdiff_t rows, ptrdiff_t in_step,
                                     ptrdiff_t out_step)
{
    ptrdiff_t r = 0;
    if (count < LANES)
        for (; r + 4 <= rows; r += 4)
            TGC_FN(tgc_terms_narrow4)(k, koff, in + r * in_step, ioff, nterms, count,
                                      out + r * out_step, bias, in_step, out_step);
    for (; r < rows; r++)
        TGC_FN(tgc_terms_row)(k, koff, in + r * in_step, ioff, nterms, count, out + r * out_step,
                              bias);
}

/* ---- a band of output rows of a plane, the pixels in the lanes ----
 *
 *     band:  out[m * out_pitch + u] = (sum over r < R, i < KH, j < KW of
 *                k[(r*KH + i)*KW + j] * in[r*chan + (y*row_step + i*row_dil + row_at)*pitch
 *                                           + col[j] + u])  (+ *bias)
 *            for the output rows y = y0 + m, m < `rows`, and the outputs u of `vectors` vectors;
 *            the terms whose input row lies outside [0, in_h), or whose column u lies outside
 *            [col_lo[j], col_hi[j]), are padding: never multiplied
 *
 * Z = W ⊛ A with the input's pixels in the lanes, as tgc_terms, but each input row of the band
 * is loaded once a column tap: input row rho serves every output row m of the band that meets
 * it (kernel row i = (rho - m*row_step) / row_dil), so one load feeds up to KH fused
 * multiply-adds a vector instead of one. A vector that reaches into the padding columns loads
 * and adds its real lanes only (VLOAD_MASK, VFMA_MASK: nothing outside the row is read, and an
 * Inf weight never meets padding), so no column is taken one by one. Each output sums its real
 * terms in (r, i, j) order, one chain of FMAs: plane_task's order (tgc_terms), the same bits.
 * The accumulators are named variables (see the tiles above), s<v>_<m>: `vectors` and `rows`
 * are constants in each copy. */

#define TGC_FOR_BAND(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

#define TGC_BAND_START(m)                                                                   \
    V s0_##m = VZERO(), s1_##m = VZERO(), s2_##m = VZERO(), s3_##m = VZERO();               \
    const T *k##m = NULL;

/* the kernel row (its weights) output row m meets at input row rho, or NULL */
#define TGC_BAND_ROW(m)                                                                     \
    if (m < rows)                                                                           \
        k##m = sh->meets[rho * TGC_BAND_MAX + m] >= 0                                     \
                   ? kr + sh->meets[rho * TGC_BAND_MAX + m] : NULL;

/* the vectors of column tap j: plain loads, but the first (F) or the last (L) with its real
 * lanes only when it reaches into the padding columns (its mask set once a block) */
#define TGC_BAND_LOADS(F, L)                                                                \
    V x0 = F ? VLOAD_MASK(p + u[0], first_mask[j]) : VLOAD(p + u[0]);                       \
    V x1 = VZERO(), x2 = VZERO(), x3 = VZERO();                                             \
    if (vectors == 2) x1 = L ? VLOAD_MASK(p + u[1], last_mask[j]) : VLOAD(p + u[1]);        \
    if (vectors > 2) x1 = VLOAD(p + u[1]);                                                  \
    if (vectors == 3) x2 = L ? VLOAD_MASK(p + u[2], last_mask[j]) : VLOAD(p + u[2]);        \
    if (vectors > 3) x2 = VLOAD(p + u[2]);                                                  \
    if (vectors == 4) x3 = L ? VLOAD_MASK(p + u[3], last_mask[j]) : VLOAD(p + u[3]);

/* s += w * x for vector v; a masked vector adds its real lanes only, so padding is never
 * multiplied (an Inf weight times padding would be NaN): fm, lm say which are masked */
#define TGC_BAND_FMA(s, x, v)                                                               \
    s = (v == 0 && fm) ? VFMA_MASK(w, x, s, first_mask[j])                                  \
        : (v > 0 && v == vectors - 1 && lm) ? VFMA_MASK(w, x, s, last_mask[j])              \
        : VFMA(w, x, s);

#define TGC_BAND_STEP(m)                                                                    \
    if (m < rows && k##m) {                                                                 \
        V w = VBCAST(k##m + j);                                                             \
        TGC_BAND_FMA(s0_##m, x0, 0)                                                         \
        if (vectors > 1) { TGC_BAND_FMA(s1_##m, x1, 1) }                                    \
        if (vectors > 2) { TGC_BAND_FMA(s2_##m, x2, 2) }                                    \
        if (vectors > 3) { TGC_BAND_FMA(s3_##m, x3, 3) }                                    \
    }

#define TGC_BAND_FINISH(m)                                                                  \
    if (m < rows) {                                                                         \
        T *o = out + m * sh->out_pitch;                                                     \
        if (bias) {                                                                         \
            s0_##m = VADD(s0_##m, b); s1_##m = VADD(s1_##m, b);                             \
            s2_##m = VADD(s2_##m, b); s3_##m = VADD(s3_##m, b);                             \
        }                                                                                   \
        VSTORE(o + u[0], s0_##m);                                                           \
        if (vectors > 1) VSTORE(o + u[1], s1_##m);                                          \
        if (vectors > 2) VSTORE(o + u[2], s2_##m);                                          \
        if (vectors > 3) VSTORE(o + u[3], s3_##m);                                          \
    }

/* a lane bound clamped to [0, LANES] */
#define TGC_LANE(x) ((int)((x) < 0 ? 0 : (x) < LANES ? (x) : LANES))
/* the lanes of the vector of outputs from u whose column tap j reads a real cell, given each
 * tap's real outputs [lo[j], hi[j]); and whether any of its lanes is padding (bands, strips) */
#define TGC_REAL_LANES(lo, hi, j, u) VMASK_RANGE(TGC_LANE((lo)[j] - (u)), TGC_LANE((hi)[j] - (u)))
#define TGC_SOME_PADDING(lo, hi, j, u) ((lo)[j] > (u) || (hi)[j] < (u) + LANES)

/* column tap j of every row the band's input row meets: first (F) and last (L) vectors masked */
#define TGC_BAND_TAP(F, L)                                                                  \
    const int fm = F, lm = L;                                                               \
    TGC_BAND_LOADS(F, L)                                                                    \
    TGC_FOR_BAND(TGC_BAND_STEP)

/* the band of output rows from y0 (`out` at its first row): input rows first + rho, rho in
 * [lo, hi); output row m meets kernel row i at rho = m*row_step + i*row_dil, which
 * sh->meets[rho * TGC_BAND_MAX + m] records as i*KW (else -1) */
TARGET static TGC_INLINE void TGC_FN(tgc_band_body)(const tgc_band_shape *sh, const T *k,
                                                    const T *in, ptrdiff_t first, ptrdiff_t lo,
                                                    ptrdiff_t hi, T *out, const T *bias,
                                                    const ptrdiff_t *u, const int vectors,
                                                    const int rows)
{
    TGC_FOR_BAND(TGC_BAND_START)
    VMASK first_mask[TGC_BAND_MAX_KW], last_mask[TGC_BAND_MAX_KW];
    unsigned char edges[TGC_BAND_MAX_KW];   /* 1: the first vector masked, 2: the last, 3 */
    for (ptrdiff_t j = 0; j < sh->KW; j++) {     /* the real lanes of the two */
        first_mask[j] = TGC_REAL_LANES(sh->col_lo, sh->col_hi, j, u[0]);
        last_mask[j] = TGC_REAL_LANES(sh->col_lo, sh->col_hi, j, u[vectors - 1]);
        edges[j] = (unsigned char)(TGC_SOME_PADDING(sh->col_lo, sh->col_hi, j, u[0])
                                   | (vectors > 1 && TGC_SOME_PADDING(sh->col_lo, sh->col_hi,
                                                                       j, u[vectors - 1])) << 1);
    }
    for (ptrdiff_t r = 0; r < sh->R; r++) {
        const T *kr = k + r * sh->KH * sh->KW;
        for (ptrdiff_t rho = lo; rho < hi; rho++) {
            TGC_FOR_BAND(TGC_BAND_ROW)
            const T *row = in + r * sh->chan + (first + rho) * sh->pitch;
            for (ptrdiff_t j = 0; j < sh->KW; j++) {
                const T *p = row + sh->col[j];
                switch (edges[j]) {
                    case 0: { TGC_BAND_TAP(0, 0) break; }
                    case 1: { TGC_BAND_TAP(1, 0) break; }
                    case 2: { TGC_BAND_TAP(0, 1) break; }
                    default: { TGC_BAND_TAP(1, 1) break; }
                }
            }
        }
    }
    V b = bias ? VBCAST(bias) : VZERO();
    TGC_FOR_BAND(TGC_BAND_FINISH)
}

/* a band of the path's rows for `vectors` vectors (TGC_BAND_ROWS), or of one row */
#define TGC_BAND_CASE(V_, NTH)                                                              \
    case V_:                                                                                \
        if (rows == 1)                                                                      \
            TGC_FN(tgc_band_body)(sh, k, in, first, lo, hi, o, bias, u, V_, 1);            \
        else                                                                                \
            TGC_FN(tgc_band_body)(sh, k, in, first, lo, hi, o, bias, u, V_,                \
                                  TGC_APPLY(NTH, TGC_BAND_ROWS));                           \
        break;

/* whether the vectors between a block's first and last lie inside the row for every column
 * tap (tgc_band_body masks only the first and the last) */
TARGET static int TGC_FN(tgc_band_middle_inside)(const tgc_band_shape *sh, const ptrdiff_t *u,
                                                 int vectors)
{
    for (int v = 1; v < vectors - 1; v++)
        for (ptrdiff_t j = 0; j < sh->KW; j++)
            if (u[v] < sh->col_lo[j] || u[v] + LANES > sh->col_hi[j])
                return 0;
    return 1;
}

/* The whole output plane, band by band (the last band may overlap the one before: its rows
 * are computed again, the same way), each band's rows in blocks of up to the path's widest
 * vectors (the last block overlapping likewise, as the last vector does in tgc_terms_row). */
TARGET static void TGC_FN(tgc_band)(const tgc_band_shape *sh, const T *k, const T *in, T *out,
                                    const T *bias)
{
    const ptrdiff_t count = sh->out_w, nvec = (count + LANES - 1) / LANES, last = count - LANES;
    const ptrdiff_t widest = TGC_BAND_VECTORS;
    const ptrdiff_t blocks = (nvec + widest - 1) / widest;
    const int vectors = (int)((nvec + blocks - 1) / blocks);
    static const int band_rows[4] = {TGC_APPLY(TGC_ROW4, TGC_BAND_ROWS)};
    const int rows = band_rows[vectors - 1] <= sh->out_h ? band_rows[vectors - 1] : 1;
    const ptrdiff_t nrho = (rows - 1) * sh->row_step + (sh->KH - 1) * sh->row_dil + 1;
    for (ptrdiff_t y = 0; y < sh->out_h; y += rows) {
        const ptrdiff_t y0 = y + rows <= sh->out_h ? y : sh->out_h - rows;
        const ptrdiff_t first = y0 * sh->row_step + sh->row_at;
        const ptrdiff_t lo = first < 0 ? -first : 0;
        const ptrdiff_t hi = sh->in_h - first < nrho ? sh->in_h - first : nrho;
        T *o = out + y0 * sh->out_pitch;
        for (ptrdiff_t blk = 0; blk < blocks; blk++) {
            const ptrdiff_t v0 = blk * vectors < nvec - vectors ? blk * vectors : nvec - vectors;
            ptrdiff_t u[4];
            for (int i = 0; i < 4; i++)
                u[i] = (v0 + i) * LANES < last ? (v0 + i) * LANES : last;
            if (!TGC_FN(tgc_band_middle_inside)(sh, u, vectors)) {
                /* padding wider than a vector: each vector and row alone, both edges masked */
                for (ptrdiff_t m = 0; m < rows; m++) {
                    const ptrdiff_t f1 = (y0 + m) * sh->row_step + sh->row_at;
                    const ptrdiff_t n1 = (sh->KH - 1) * sh->row_dil + 1;
                    for (int i = 0; i < vectors; i++)
                        TGC_FN(tgc_band_body)(sh, k, in, f1, f1 < 0 ? -f1 : 0,
                                              sh->in_h - f1 < n1 ? sh->in_h - f1 : n1,
                                              o + m * sh->out_pitch, bias, u + i, 1, 1);
                }
                continue;
            }
            switch (vectors) {
                TGC_BAND_CASE(1, TGC_NTH_1)
                TGC_BAND_CASE(2, TGC_NTH_2)
                TGC_BAND_CASE(3, TGC_NTH_3)
                TGC_BAND_CASE(4, TGC_NTH_4)
                default: tgc_abort("a band of this many vectors", vectors);
            }
        }
    }
}

/* ---- a strip: one output row of a block of filters, the row's pixels in the lanes ----
 *
 *     strip:  out[f * out_plane + u] = (sum over r < R, t < ni, j < KW of
 *                 k[f * filter_step + (r*KH + t*i_step)*KW + j]
 *               * in[r*chan + t*row_step*pitch + col[j] + u])  (+ bias[f])
 *             for the filters f < `filters` and the outputs u < out_w of one output row;
 *             `k` and `in` start at the row's first real kernel row (plan_axis's plan says
 *             which: ni of them, i_step apart, row_step input rows apart), and a term whose
 *             column u lies outside [col_lo[j], col_hi[j]) is padding: never multiplied
 *
 * Z = W ⊛ A for a reduction too short to be worth staging (a first layer: one or three
 * channels): the tiles hold filters in the lanes and pay a transpose (tgc_unstage) to write
 * NCHW, which costs as much as their sums when the reduction has 9 terms. Here an output row's
 * pixels are the lanes, so the sums go straight to their planes; each input vector is loaded
 * once and feeds every filter of the block (a broadcast weight each). A row is two vectors at
 * a time; the last starts at out_w - LANES, overlapping the one before (its outputs computed
 * again, the same way). Each output sums its real terms in (r, t, j) order, one chain of FMAs
 * from zero, then adds its bias (zero without): the tiles' order and unstage's addition, so
 * the same bits as the staged path. Accumulators are named variables, a<f>_<v>. */

#define TGC_FOR_FILTERS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

#define TGC_STRIP_START(f) V a##f##_0 = VZERO(), a##f##_1 = VZERO();

#define TGC_STRIP_STEP(f)                                                                   \
    if (f < filters) {                                                                      \
        V w = VBCAST(kj + f * sh->filter_step);                                             \
        a##f##_0 = masked ? VFMA_MASK(w, x0, a##f##_0, m0[j]) : VFMA(w, x0, a##f##_0);      \
        if (vectors > 1)                                                                    \
            a##f##_1 = masked ? VFMA_MASK(w, x1, a##f##_1, m1[j]) : VFMA(w, x1, a##f##_1);  \
    }

#define TGC_STRIP_FINISH(f)                                                                 \
    if (f < filters) {                                                                      \
        T *o = out + f * sh->out_plane;                                                     \
        const V b = bias ? VBCAST(bias + f) : VZERO();                                      \
        if (sh->out_w < LANES) {                                                            \
            VSTORE_PART(o, VADD(a##f##_0, b), (int)sh->out_w);                              \
        } else {                                                                            \
            VSTORE(o + u0, VADD(a##f##_0, b));                                              \
            if (vectors > 1) VSTORE(o + u1, VADD(a##f##_1, b));                             \
        }                                                                                   \
    }

/* `filters` filters by `vectors` (1, 2) vectors from u0, u1; masked: some lanes are padding
 * (m0, m1 per column tap: the real lanes) */
TARGET static TGC_INLINE void TGC_FN(tgc_strip_body)(const tgc_strip_shape *sh, const T *k,
                                                     const T *in, ptrdiff_t ni, ptrdiff_t i_step,
                                                     ptrdiff_t row_step, T *out, const T *bias,
                                                     ptrdiff_t u0, ptrdiff_t u1, const VMASK *m0,
                                                     const VMASK *m1, const int filters,
                                                     const int vectors, const int masked)
{
    TGC_FOR_FILTERS(TGC_STRIP_START)
    for (ptrdiff_t r = 0; r < sh->R; r++) {
        for (ptrdiff_t t = 0; t < ni; t++) {
            const T *kt = k + (r * sh->KH + t * i_step) * sh->KW;
            const T *row = in + r * sh->chan + t * row_step;
            for (ptrdiff_t j = 0; j < sh->KW; j++) {
                const T *p = row + sh->col[j], *kj = kt + j;
                const V x0 = masked ? VLOAD_MASK(p + u0, m0[j]) : VLOAD(p + u0);
                const V x1 = vectors < 2 ? VZERO()
                             : masked ? VLOAD_MASK(p + u1, m1[j]) : VLOAD(p + u1);
                TGC_FOR_FILTERS(TGC_STRIP_STEP)
            }
        }
    }
    TGC_FOR_FILTERS(TGC_STRIP_FINISH)
}

#define TGC_STRIP_CASE(F_)                                                                  \
    case F_:                                                                                \
        if (vectors == 2 && masked)                                                         \
            TGC_FN(tgc_strip_body)(sh, kf, iny, ni, i_step, row_step, of, bf, u0, u1, m0, m1, \
                                   F_, 2, 1);                                               \
        else if (vectors == 2)                                                              \
            TGC_FN(tgc_strip_body)(sh, kf, iny, ni, i_step, row_step, of, bf, u0, u1, m0, m1, \
                                   F_, 2, 0);                                               \
        else if (masked)                                                                    \
            TGC_FN(tgc_strip_body)(sh, kf, iny, ni, i_step, row_step, of, bf, u0, u1, m0, m1, \
                                   F_, 1, 1);                                               \
        else                                                                                \
            TGC_FN(tgc_strip_body)(sh, kf, iny, ni, i_step, row_step, of, bf, u0, u1, m0, m1, \
                                   F_, 1, 0);                                               \
        break;

/* Output rows y0 <= y < y1 of `filters` filters: plan[3*y ...] = (the row's first real kernel
 * row, how many, the input row of the first), as plan_axis makes it. The rows' vectors two at
 * a time (a last one alone), each pair's masks set once, then row by row the filters in
 * blocks of the path's TGC_STRIP_FILTERS (the rest in blocks of 4, 2, 1). */
TARGET static void TGC_FN(tgc_strip)(const tgc_strip_shape *sh, const T *k, ptrdiff_t filters,
                                     const T *in, const ptrdiff_t *plan, ptrdiff_t y0,
                                     ptrdiff_t y1, T *out, const T *bias)
{
    const ptrdiff_t out_w = sh->out_w, last = out_w > LANES ? out_w - LANES : 0;
    const ptrdiff_t nvec = out_w > LANES ? (out_w + LANES - 1) / LANES : 1;
    const ptrdiff_t i_step = sh->i_step, row_step = sh->row_step * sh->pitch;
    VMASK m0[TGC_BAND_MAX_KW], m1[TGC_BAND_MAX_KW];
    for (ptrdiff_t v = 0; v < nvec; v += 2) {
        const int vectors = v + 1 < nvec ? 2 : 1;
        const ptrdiff_t u0 = v * LANES < last ? v * LANES : last;
        const ptrdiff_t u1 = (v + 1) * LANES < last ? (v + 1) * LANES : last;
        int masked = 0;
        for (ptrdiff_t j = 0; j < sh->KW; j++) {     /* the real lanes of the two */
            m0[j] = TGC_REAL_LANES(sh->col_lo, sh->col_hi, j, u0);
            m1[j] = TGC_REAL_LANES(sh->col_lo, sh->col_hi, j, u1);
            masked |= TGC_SOME_PADDING(sh->col_lo, sh->col_hi, j, u0)
                      || (vectors > 1 && TGC_SOME_PADDING(sh->col_lo, sh->col_hi, j, u1));
        }
        for (ptrdiff_t y = y0; y < y1; y++) {
            const ptrdiff_t ni = plan[3 * y + 1];
            const T *ky = k + plan[3 * y] * sh->KW, *iny = in + plan[3 * y + 2] * sh->pitch;
            T *oy = out + y * out_w;
            for (ptrdiff_t f = 0; f < filters;) {
                const ptrdiff_t left = filters - f;
                const int block = left >= TGC_STRIP_FILTERS ? TGC_STRIP_FILTERS
                                  : left >= 4 ? 4 : left >= 2 ? 2 : 1;
                const T *kf = ky + f * sh->filter_step, *bf = bias ? bias + f : NULL;
                T *of = oy + f * sh->out_plane;
                switch (block) {
#if TGC_STRIP_FILTERS > 4
                    TGC_STRIP_CASE(TGC_STRIP_FILTERS)
#endif
                    TGC_STRIP_CASE(4)
                    TGC_STRIP_CASE(2)
                    TGC_STRIP_CASE(1)
                    default: tgc_abort("a strip of this many filters", block);
                }
                f += block;
            }
        }
    }
}

#undef TGC_FOR_FILTERS
#undef TGC_STRIP_CASE
#undef TGC_STRIP_START
#undef TGC_STRIP_STEP
#undef TGC_STRIP_FINISH

/* ---- dL/dW of a strip: 3 x 3 taps (or fewer kernel rows) of two filters, pixels in lanes ----
 *
 *     strip_grad:  acc[f * acc_step + i * 3 + j] += sum over images n < images, output rows
 *                      y < out_h, columns u < out_w of
 *                      z[n * z_image + f * z_plane + y * out_w + u]
 *                    * a[n * a_image + (y * row_stride + i * row_dil - top) * pitch + col[j] + u]
 *                  for f < `filters`, kernel rows i < KH, column taps j < 3; a term whose input
 *                  row lies outside [0, in_h), or whose column u lies outside
 *                  [col_lo[j], col_hi[j]), is padding: never multiplied
 *
 * dL/dW = Z' ⊛ A for one input channel of a first layer (3 columns of taps): the tiles would
 * first transpose all of Z' for a sum of a few (channel, tap) pairs. Here Z' is read where it
 * lies: each vector of a row of Z' (a load a filter) meets the input vectors of all 9 taps (3
 * loads a kernel row), 2 filters x 9 taps of accumulators in registers over a run of images.
 * A row's last vector starts at out_w - LANES and adds only the lanes the one before did not
 * (mz), so each term is added once. The order, fixed by the shapes: vector by vector, image by
 * image, row by row, into a vector a (filter, tap); then its lanes in order, 0 to LANES - 1,
 * in double, onto acc. Masked multiply-adds throughout, so only the AVX-512 path has it
 * (strip_grads_fit), where they cost what plain ones do, and no more than 4 masks are live
 * (AVX-512 has 7 mask registers). Accumulators are named variables, g<f>_<i>_<j>. */

#if TGC_STRIP_GRAD

#define TGC_FOR_GRAD_TAPS(X, f)                                                             \
    X(f, 0, 0) X(f, 0, 1) X(f, 0, 2) X(f, 1, 0) X(f, 1, 1) X(f, 1, 2)                      \
    X(f, 2, 0) X(f, 2, 1) X(f, 2, 2)

#define TGC_GRAD_START(f, i, j) V g##f##_##i##_##j = VZERO();

#define TGC_GRAD_FMA(f, i, j)                                                               \
    if (f < filters) g##f##_##i##_##j = VFMA_MASK(z##f, x##j, g##f##_##i##_##j, m##j);

/* kernel row i0 + i of this block, when its input row is real for output row y */
#define TGC_GRAD_ROW(i)                                                                     \
    if (i < rows && row0 + i * row_dil >= 0 && row0 + i * row_dil < in_h) {                \
        const T *p = an + (row0 + i * row_dil) * pitch;                                     \
        const V x0 = VLOAD_MASK(p + col0, m0), x1 = VLOAD_MASK(p + col1, m1);               \
        const V x2 = VLOAD_MASK(p + col2, m2);                                              \
        TGC_GRAD_FMA(0, i, 0) TGC_GRAD_FMA(0, i, 1) TGC_GRAD_FMA(0, i, 2)                   \
        TGC_GRAD_FMA(1, i, 0) TGC_GRAD_FMA(1, i, 1) TGC_GRAD_FMA(1, i, 2)                   \
    }

#define TGC_GRAD_FINISH(f, i, j)                                                            \
    if (f < filters && i < rows) {                                                          \
        T lanes[LANES];                                                                     \
        double sum = 0;                                                                     \
        VSTORE(lanes, g##f##_##i##_##j);                                                    \
        for (int l = 0; l < LANES; l++)                                                     \
            sum += (double)lanes[l];                                                        \
        acc[f * acc_step + (i0 + i) * 3 + j] += sum;                                        \
    }

/* `filters` (1, 2) filters by kernel rows i0 <= i < i0 + `rows` (<= 3) */
TARGET static TGC_INLINE void TGC_FN(tgc_strip_grad_body)(
    const tgc_strip_grad_shape *sh, const T *z, const T *a, ptrdiff_t images, ptrdiff_t i0,
    double *acc, ptrdiff_t acc_step, const int filters, const int rows)
{
    const ptrdiff_t out_w = sh->out_w, last = out_w > LANES ? out_w - LANES : 0;
    const ptrdiff_t nvec = out_w > LANES ? (out_w + LANES - 1) / LANES : 1;
    /* (copies in locals, so that the loops keep them in registers) */
    const ptrdiff_t col0 = sh->col[0], col1 = sh->col[1], col2 = sh->col[2];
    const ptrdiff_t out_h = sh->out_h, in_h = sh->in_h, pitch = sh->pitch;
    const ptrdiff_t z_plane = sh->z_plane, z_image = sh->z_image, a_image = sh->a_image;
    const ptrdiff_t row_step = sh->row_stride, row_dil = sh->row_dil;
    const ptrdiff_t first = i0 * row_dil - sh->top;
    TGC_FOR_GRAD_TAPS(TGC_GRAD_START, 0)
    TGC_FOR_GRAD_TAPS(TGC_GRAD_START, 1)
    for (ptrdiff_t v = 0; v < nvec; v++) {
        const ptrdiff_t u = v * LANES < last ? v * LANES : last;
        /* Z''s lanes: those this vector adds (not the one before's), within the row; then each
         * column tap's: those, where the tap reads a real cell */
        const VMASK mz = VMASK_RANGE(TGC_LANE(v * LANES - u), TGC_LANE(out_w - u));
        const VMASK m0 = VMASK_AND(mz, TGC_REAL_LANES(sh->col_lo, sh->col_hi, 0, u));
        const VMASK m1 = VMASK_AND(mz, TGC_REAL_LANES(sh->col_lo, sh->col_hi, 1, u));
        const VMASK m2 = VMASK_AND(mz, TGC_REAL_LANES(sh->col_lo, sh->col_hi, 2, u));
        for (ptrdiff_t n = 0; n < images; n++) {
            const T *zy = z + n * z_image + u, *an = a + n * a_image + u;
            for (ptrdiff_t y = 0; y < out_h; y++, zy += out_w) {
                const ptrdiff_t row0 = y * row_step + first;    /* kernel row i0's input row */
                const V z0 = VLOAD_MASK(zy, mz);
                const V z1 = filters > 1 ? VLOAD_MASK(zy + z_plane, mz) : VZERO();
                TGC_GRAD_ROW(0) TGC_GRAD_ROW(1) TGC_GRAD_ROW(2)
            }
        }
    }
    TGC_FOR_GRAD_TAPS(TGC_GRAD_FINISH, 0)
    TGC_FOR_GRAD_TAPS(TGC_GRAD_FINISH, 1)
}

#define TGC_GRAD_CASE(F_, I_)                                                               \
    case 4 * (F_) + (I_):                                                                   \
        TGC_FN(tgc_strip_grad_body)(sh, z + f * sh->z_plane, a, images, i0,                 \
                                    acc + f * acc_step, acc_step, F_, I_);                  \
        break;

/* The `filters` filters from z in pairs (an odd one alone), the KH kernel rows in blocks of 3:
 * acc[f * acc_step + i * 3 + j] as above. */
TARGET static void TGC_FN(tgc_strip_grad)(const tgc_strip_grad_shape *sh, ptrdiff_t KH,
                                          const T *z, ptrdiff_t filters, const T *a,
                                          ptrdiff_t images, double *acc, ptrdiff_t acc_step)
{
    for (ptrdiff_t f = 0; f < filters;) {
        const int block = filters - f >= 2 ? 2 : 1;
        for (ptrdiff_t i0 = 0; i0 < KH; i0 += 3) {
            const int rows = KH - i0 >= 3 ? 3 : (int)(KH - i0);
            switch (4 * block + rows) {
                TGC_GRAD_CASE(2, 3) TGC_GRAD_CASE(2, 2) TGC_GRAD_CASE(2, 1)
                TGC_GRAD_CASE(1, 3) TGC_GRAD_CASE(1, 2) TGC_GRAD_CASE(1, 1)
                default: tgc_abort("a strip's dL/dW block", 4 * block + rows);
            }
        }
        f += block;
    }
}

#undef TGC_FOR_GRAD_TAPS
#undef TGC_GRAD_START
#undef TGC_GRAD_FMA
#undef TGC_GRAD_ROW
#undef TGC_GRAD_FINISH
#undef TGC_GRAD_CASE

#else   /* a masked multiply-add costs more here: strip_grads_fit never sends work to this */

TARGET static void TGC_FN(tgc_strip_grad)(const tgc_strip_grad_shape *sh, ptrdiff_t KH,
                                          const T *z, ptrdiff_t filters, const T *a,
                                          ptrdiff_t images, double *acc, ptrdiff_t acc_step)
{
    (void)sh; (void)KH; (void)z; (void)a; (void)images; (void)acc; (void)acc_step;
    tgc_abort("a strip's dL/dW on a path without cheap masks", (int)filters);
}

#endif

#undef TGC_BAND_CASE
#undef TGC_BAND_LOADS
#undef TGC_BAND_TAP
#undef TGC_LANE
#undef TGC_REAL_LANES
#undef TGC_SOME_PADDING
#undef TGC_BAND_FMA

/*     dot:  acc[y % 4] += z[y * zs + x] * in[y * is + x]   (lane (x - lo) % LANES)
 *                                                    rows y < ny, columns lo <= x < hi
 *
 * dL/dW of a plane, one tap: four vector sums take the rows in turn (so that the CPU runs four
 * chains at once), each row's vectors in order, its last part-vector with zeros in the lanes
 * past hi (VLOAD_PART: 0 * 0 adds nothing); the caller adds the sums up, lane by lane. */

#define TGC_DOT_ROW(a, y)                                                                   \
    do {                                                                                    \
        for (ptrdiff_t x = lo; x < end; x += LANES)                                         \
            a = VFMA(VLOAD(z + (y) * zs + x), VLOAD(in + (y) * is + x), a);                 \
        if (rest > 0)                                                                       \
            a = VFMA(VLOAD_PART(z + (y) * zs + end, rest), VLOAD_PART(in + (y) * is + end,  \
                                                                      rest), a);            \
    } while (0)

TARGET static void TGC_FN(tgc_dot)(const T *z, ptrdiff_t zs, const T *in, ptrdiff_t is,
                                   ptrdiff_t ny, ptrdiff_t lo, ptrdiff_t hi, T *acc)
{
    if (hi <= lo)
        return;
    V a0 = VLOAD(acc), a1 = VLOAD(acc + LANES), a2 = VLOAD(acc + 2 * LANES);
    V a3 = VLOAD(acc + 3 * LANES);
    const ptrdiff_t end = lo + (hi - lo) / LANES * LANES;
    const int rest = (int)(hi - end);
    ptrdiff_t y = 0;
    for (; y + 4 <= ny; y += 4) {
        TGC_DOT_ROW(a0, y);
        TGC_DOT_ROW(a1, y + 1);
        TGC_DOT_ROW(a2, y + 2);
        TGC_DOT_ROW(a3, y + 3);
    }
    if (y < ny)
        TGC_DOT_ROW(a0, y);
    if (y + 1 < ny)
        TGC_DOT_ROW(a1, y + 1);
    if (y + 2 < ny)
        TGC_DOT_ROW(a2, y + 2);
    VSTORE(acc, a0);
    VSTORE(acc + LANES, a1);
    VSTORE(acc + 2 * LANES, a2);
    VSTORE(acc + 3 * LANES, a3);
}

#undef TGC_DOT_ROW

/*     deal:   out[q * pitch + v] = in[v * s + q]     v * s + q < n   (a row into s phases)
 *     weave:  out[v * s + q] = in[q * pitch + v]     v * s + q < n   (s phases into a row)
 *
 * so that a strided read (forward stride s) or write (dL/dA, stride s) is a unit-stride one;
 * for s = 2 a vector pair at a time (DEAL2, WEAVE2: two registers' even and odd lanes). */

TARGET static void TGC_FN(tgc_deal)(const T *in, ptrdiff_t n, ptrdiff_t s, T *out,
                                    ptrdiff_t pitch)
{
    ptrdiff_t i = 0;
#ifdef DEAL2
    if (s == 2) {
        for (; i + 2 * LANES <= n; i += 2 * LANES) {
            V even, odd;
            DEAL2(VLOAD(in + i), VLOAD(in + i + LANES), even, odd);
            VSTORE(out + i / 2, even);
            VSTORE(out + pitch + i / 2, odd);
        }
        if (i < n) {                /* the rest: part-vectors */
            int rest = (int)(n - i);
            V even, odd;
            DEAL2(VLOAD_PART(in + i, rest < LANES ? rest : LANES),
                  VLOAD_PART(in + i + LANES, rest < LANES ? 0 : rest - LANES), even, odd);
            VSTORE_PART(out + i / 2, even, (rest + 1) / 2);
            VSTORE_PART(out + pitch + i / 2, odd, rest / 2);
            return;
        }
    }
#endif
    for (ptrdiff_t q = 0; q < s; q++)         /* the rest (i is a multiple of s) */
        for (ptrdiff_t v = i / s; v * s + q < n; v++)
            out[q * pitch + v] = in[v * s + q];
}

TARGET static void TGC_FN(tgc_weave)(const T *in, ptrdiff_t n, ptrdiff_t s, T *out,
                                     ptrdiff_t pitch)
{
    ptrdiff_t i = 0;
#ifdef WEAVE2
    if (s == 2) {
        for (; i + 2 * LANES <= n; i += 2 * LANES) {
            V first, second;
            WEAVE2(VLOAD(in + i / 2), VLOAD(in + pitch + i / 2), first, second);
            VSTORE(out + i, first);
            VSTORE(out + i + LANES, second);
        }
        if (i < n) {                /* the rest: part-vectors */
            int rest = (int)(n - i);
            V first, second;
            WEAVE2(VLOAD_PART(in + i / 2, (rest + 1) / 2), VLOAD_PART(in + pitch + i / 2,
                                                                       rest / 2), first, second);
            VSTORE_PART(out + i, first, rest < LANES ? rest : LANES);
            VSTORE_PART(out + i + LANES, second, rest < LANES ? 0 : rest - LANES);
            return;
        }
    }
#endif
    for (ptrdiff_t q = 0; q < s; q++)         /* the rest (i is a multiple of s) */
        for (ptrdiff_t v = i / s; v * s + q < n; v++)
            out[v * s + q] = in[q * pitch + v];
}

/* The machine's peak, measured rather than looked up: 12 independent chains of FMAs on
 * registers (no memory traffic; 12 leave room in AVX2's 16 registers), `rounds` times; returns
 * the flops done. The chains are written out one by one, so each stays in a register. */
TARGET static double TGC_FN(tgc_fma_probe)(long rounds)
{
    V x = VBCAST_VALUE((T)0.999999), y = VBCAST_VALUE((T)0.000001);
    V a0 = VBCAST_VALUE((T)0), a1 = VBCAST_VALUE((T)1), a2 = VBCAST_VALUE((T)2);
    V a3 = VBCAST_VALUE((T)3), a4 = VBCAST_VALUE((T)4), a5 = VBCAST_VALUE((T)5);
    V a6 = VBCAST_VALUE((T)6), a7 = VBCAST_VALUE((T)7), a8 = VBCAST_VALUE((T)8);
    V a9 = VBCAST_VALUE((T)9), a10 = VBCAST_VALUE((T)10), a11 = VBCAST_VALUE((T)11);
    for (long r = 0; r < rounds; r++) {
        a0 = VFMA(a0, x, y); a1 = VFMA(a1, x, y); a2 = VFMA(a2, x, y); a3 = VFMA(a3, x, y);
        a4 = VFMA(a4, x, y); a5 = VFMA(a5, x, y); a6 = VFMA(a6, x, y); a7 = VFMA(a7, x, y);
        a8 = VFMA(a8, x, y); a9 = VFMA(a9, x, y); a10 = VFMA(a10, x, y); a11 = VFMA(a11, x, y);
    }
    T out[LANES];
    V sum = VFMA(a0, x, VFMA(a1, x, VFMA(a2, x, VFMA(a3, x, VFMA(a4, x, VFMA(a5, x, a6))))));
    sum = VFMA(sum, x, VFMA(a7, x, VFMA(a8, x, VFMA(a9, x, VFMA(a10, x, a11)))));
    VSTORE(out, sum);
    tgc_probe_sink += (double)out[0];
    return 2.0 * LANES * 12.0 * (double)rounds;
}

#undef TGC_TILE_FN
#undef TGC_CASE

/* this copy is done: the next include defines its own type, vector and operations */
#undef T
#undef V
#undef LANES
#undef SUFFIX
#undef VZERO
#undef VLOAD
#undef VBCAST
#undef VBCAST_VALUE
#undef VFMA
#undef VSTORE
#undef VADD
#undef TRANSPOSE
#undef SFMA
#undef VLOAD_PART
#undef VSTORE_PART
#undef VMASK
#undef VMASK_RANGE
#undef VMASK_AND
#undef VLOAD_MASK
#undef VFMA_MASK
#undef DEAL2
#undef WEAVE2
