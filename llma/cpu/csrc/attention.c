/* Attention of decoding rows over their own cache slots, keys CHUNK at a time. */
#include "common.h"

#define CHUNK 128 /* keys per attention work item */

static float dot(const float *a, const float *b, int d) {
    float acc[LANES] = {0};
    int j = 0;
    for (; j + LANES <= d; j += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += a[j + l] * b[j + l];
    for (int l = 0; j < d; j++, l++) acc[l] += a[j] * b[j];
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

/* A chunk's softmax terms for one head: sg[0..n) becomes exp(sg - max) in place; out[0] = the max,
 * out[1] = the terms' sum (summed in key order). */
static inline void softmax_terms(float *sg, int n, float *out) {
    float m = sg[0];
    for (int t = 1; t < n; t++) m = sg[t] > m ? sg[t] : m;
    float l = 0.0f;
    for (int t = 0; t < n; t++) {
        sg[t] = exp_neg(sg[t] - m);
        l += sg[t];
    }
    out[0] = m;
    out[1] = l;
}

#ifdef __AVX512F__
/* attend_chunk for d a multiple of LANES (up to 256), AVX-512: a key's vectors loaded once for the
 * group's heads; each score one reduction; the values summed with the weights broadcast. */
static inline __attribute__((always_inline)) void attend_chunk_avx512(const float *qh, const float *base_k, const float *base_v, int64_t first, int n,
                                int64_t pos, int64_t shift, int groups, int d, float scale, float *s,
                                float *part) {
    int vecs = d / LANES;
    for (int t = 0; t < n; t++) {
        int64_t p = first + t, at = p <= pos ? p : p + shift;
        const float *k = base_k + at * d;
        for (int g = 0; g < groups; g++) {
            const float *qg = qh + (int64_t)g * d;
            __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(qg), _mm512_loadu_ps(k));
            for (int jv = 1; jv < vecs; jv++)
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(qg + jv * LANES), _mm512_loadu_ps(k + jv * LANES), acc);
            s[g * CHUNK + t] = _mm512_reduce_add_ps(acc) * scale;
        }
    }
    for (int g = 0; g < groups; g++) softmax_terms(s + g * CHUNK, n, part + (int64_t)g * (d + 2));
    __m512 acc[16 * 4];  /* groups (<= 16) x up to 4 vectors at a time */
    for (int j0 = 0; j0 < vecs; j0 += 4) {
        int nv = vecs - j0 < 4 ? vecs - j0 : 4;
        for (int i = 0; i < groups * 4; i++) acc[i] = _mm512_setzero_ps();
        for (int t = 0; t < n; t++) {
            int64_t p = first + t, at = p <= pos ? p : p + shift;
            const float *v = base_v + at * d + j0 * LANES;
            for (int g = 0; g < groups; g++) {
                __m512 w = _mm512_set1_ps(s[g * CHUNK + t]);
                for (int jv = 0; jv < nv; jv++)
                    acc[g * 4 + jv] = _mm512_fmadd_ps(w, _mm512_loadu_ps(v + jv * LANES), acc[g * 4 + jv]);
            }
        }
        for (int g = 0; g < groups; g++)
            for (int jv = 0; jv < nv; jv++)
                _mm512_storeu_ps(part + (int64_t)g * (d + 2) + 2 + (j0 + jv) * LANES, acc[g * 4 + jv]);
    }
}
#endif

/* One work item of llma_attend: row r, kv head h, keys [c * CHUNK, ...) up to the row's `seen`:
 * per query head of the group its chunk maximum, sum of exp and exp-weighted value sum. */
static void attend_chunk(const float *q, const float *kc, const float *vc, int64_t slot, int64_t pos,
                         int64_t seen, int64_t shift, int64_t row, int h, int c, int heads, int kv, int d, int cap,
                         float scale, float *part) {
    int groups = heads / kv;
    int64_t first = (int64_t)c * CHUNK, last = first + CHUNK < seen ? first + CHUNK : seen;
    int n = (int)(last - first);
    float s[CHUNK * 16];
    const float *base_k = kc + (slot * kv + h) * (int64_t)cap * d, *base_v = vc + (slot * kv + h) * (int64_t)cap * d;
    const float *qh = q + ((int64_t)row * heads + h * groups) * d;
#ifdef __AVX512F__
    if (d % LANES == 0 && d <= 256) {
        /* the common shapes with constant sizes: their loops unrolled, sums kept in registers */
        if (d == 64 && groups == 3)
            attend_chunk_avx512(qh, base_k, base_v, first, n, pos, shift, 3, 64, scale, s, part);
        else if (d == 64 && groups == 4)
            attend_chunk_avx512(qh, base_k, base_v, first, n, pos, shift, 4, 64, scale, s, part);
        else if (d == 128 && groups <= 2)
            attend_chunk_avx512(qh, base_k, base_v, first, n, pos, shift, groups, 128, scale, s, part);
        else
            attend_chunk_avx512(qh, base_k, base_v, first, n, pos, shift, groups, d, scale, s, part);
        return;
    }
#endif
    for (int t = 0; t < n; t++) {
        int64_t p = first + t, at = p <= pos ? p : p + shift;
        for (int g = 0; g < groups; g++)
            s[g * CHUNK + t] = dot(qh + (int64_t)g * d, base_k + at * d, d) * scale;
    }
    for (int g = 0; g < groups; g++) {
        float *out = part + (int64_t)g * (d + 2), *sg = s + g * CHUNK;
        softmax_terms(sg, n, out);
        for (int j = 0; j < d; j++) out[2 + j] = 0.0f;
        for (int t = 0; t < n; t++) {
            int64_t p = first + t, at = p <= pos ? p : p + shift;
            const float *vrow = base_v + at * d;
            for (int j = 0; j < d; j++) out[2 + j] += sg[t] * vrow[j];
        }
    }
}

/* Attention of decoding rows over their own cache slots. Row r (query q[row[r]], q [any, heads, d];
 * its result goes to out[row[r]], out [any, heads * d]) sees the
 * keys at positions 0 .. seen[r] - 1; position p is at slot entry p where p <= pos[r], else
 * p + shift[r] (its draft's packed layout). Keys are taken CHUNK positions at a time (chunk c:
 * positions [c * CHUNK, (c + 1) * CHUNK)), each chunk's softmax terms on their own, then the chunks
 * combined in order: a row's bits depend on its query and the keys it sees only (not on the other
 * rows, their lengths or the thread count). part: scratch [rows, kv, chunks, groups, d + 2] with
 * chunks >= ceil(max seen / CHUNK). */
void llma_attend(const float *q, const float *kc, const float *vc, const int64_t *row, const int64_t *slot,
                 const int64_t *pos,
                 const int64_t *seen, const int64_t *shift, int rows, int heads, int kv, int d, int cap,
                 int chunks, float scale, int threads, float *part, float *out) {
    int groups = heads / kv;
    int64_t item = (int64_t)groups * (d + 2), items = (int64_t)rows * kv * chunks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < items; i++) {
        /* rows innermost: the items of one chunk of keys run one after another (keys stay cached) */
        int r = (int)(i % rows), h = (int)(i / rows / chunks), c = (int)(i / rows % chunks);
        if ((int64_t)c * CHUNK < seen[r])
            attend_chunk(q, kc, vc, slot[r], pos[r], seen[r], shift[r], row[r], h, c, heads, kv, d, cap, scale,
                         part + (((int64_t)r * kv + h) * chunks + c) * item);
    }
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < (int64_t)rows * heads; i++) {
        int r = (int)(i / heads), head = (int)(i % heads), h = head / groups, g = head % groups;
        int n = (int)((seen[r] + CHUNK - 1) / CHUNK);
        const float *first = part + (((int64_t)r * kv + h) * chunks) * item + (int64_t)g * (d + 2);
        float m = first[0];
        for (int c = 1; c < n; c++) m = first[c * item] > m ? first[c * item] : m;
        float acc[512], l = 0.0f;
        for (int j = 0; j < d; j++) acc[j] = 0.0f;
        for (int c = 0; c < n; c++) {
            const float *pc = first + c * item;
            float w = exp_neg(pc[0] - m);
            l += pc[1] * w;
            for (int j = 0; j < d; j++) acc[j] += pc[2 + j] * w;
        }
        float *o = out + (row[r] * heads + head) * d;
        for (int j = 0; j < d; j++) o[j] = acc[j] / l;
    }
}
