/* The output head: a matrix of 8-bit levels with a scale per Q8_GROUP inputs (GGUF's Q8_0). */
#include "common.h"

#define Q8_GROUP 32 /* inputs per scale: GGUF's Q8_0 blocks */
#define OUT_TILE 16 /* outputs whose weights stay in cache while every row passes */
#define ROW_BLOCK 4

/* out [rows, n_out] (fp32) = x [rows, n_in] (fp32) @ (q * scale).T, q [n_out, n_in] int8 and
 * scale [n_out, n_in / Q8_GROUP]: per output, per group, the group's products summed in LANES
 * partial sums, scaled, the partial sums then added in a fixed tree. A row's bits depend on its
 * own x only. n_in a multiple of Q8_GROUP. */
#ifdef __AVX512F__
/* One output o for rows r0 .. r0 + nr - 1 (nr <= ROW_BLOCK), AVX-512: per group the 32 levels
 * widened once, then per row two products added and scaled into 16 partial sums. */
static void q8_output(const float *x, const int8_t *qo, const float *so, int groups, int n_in, int r0, int nr,
                      float *acc /* [ROW_BLOCK][LANES] */) {
    __m512 a[ROW_BLOCK];
    for (int rr = 0; rr < ROW_BLOCK; rr++) a[rr] = _mm512_setzero_ps();
    for (int g = 0; g < groups; g++) {
        __m128i raw0 = _mm_loadu_si128((const __m128i *)(qo + g * Q8_GROUP));
        __m128i raw1 = _mm_loadu_si128((const __m128i *)(qo + g * Q8_GROUP + LANES));
        __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(raw0));
        __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(raw1));
        __m512 sg = _mm512_set1_ps(so[g]);
        for (int rr = 0; rr < nr; rr++) {
            const float *xr = x + (int64_t)(r0 + rr) * n_in + g * Q8_GROUP;
            __m512 p = _mm512_fmadd_ps(_mm512_loadu_ps(xr), w0, _mm512_mul_ps(_mm512_loadu_ps(xr + LANES), w1));
            a[rr] = _mm512_fmadd_ps(sg, p, a[rr]);
        }
    }
    for (int rr = 0; rr < nr; rr++) _mm512_storeu_ps(acc + rr * LANES, a[rr]);
}
#else
static void q8_output(const float *x, const int8_t *qo, const float *so, int groups, int n_in, int r0, int nr,
                      float *acc) {
    memset(acc, 0, sizeof(float) * ROW_BLOCK * LANES);
    for (int g = 0; g < groups; g++) {
        float w[Q8_GROUP];
        for (int j = 0; j < Q8_GROUP; j++) w[j] = (float)qo[g * Q8_GROUP + j];
        for (int rr = 0; rr < nr; rr++) {
            const float *xr = x + (int64_t)(r0 + rr) * n_in + g * Q8_GROUP;
            for (int l = 0; l < LANES; l++)
                acc[rr * LANES + l] += so[g] * (xr[l] * w[l] + xr[LANES + l] * w[LANES + l]);
        }
    }
}
#endif

void llma_q8_matmul(const float *x, const int8_t *q, const float *scale, int rows, int n_out, int n_in,
                    int threads, float *out) {
    int groups = n_in / Q8_GROUP, tiles = (n_out + OUT_TILE - 1) / OUT_TILE;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int tile = 0; tile < tiles; tile++) {
        int o_end = (tile + 1) * OUT_TILE < n_out ? (tile + 1) * OUT_TILE : n_out;
        float acc[ROW_BLOCK * LANES];
        for (int r0 = 0; r0 < rows; r0 += ROW_BLOCK) {
            int nr = rows - r0 < ROW_BLOCK ? rows - r0 : ROW_BLOCK;
            for (int o = tile * OUT_TILE; o < o_end; o++) {
                q8_output(x, q + (int64_t)o * n_in, scale + (int64_t)o * groups, groups, n_in, r0, nr, acc);
                for (int rr = 0; rr < nr; rr++) {
                    float *ar = acc + rr * LANES;
                    for (int w = LANES / 2; w > 0; w /= 2)
                        for (int l = 0; l < w; l++) ar[l] += ar[l + w];
                    out[(int64_t)(r0 + rr) * n_out + o] = ar[0];
                }
            }
        }
    }
}
