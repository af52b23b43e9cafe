/* The CPU decoding step's elementwise work between the 4-bit products, one call per piece
 * instead of dozens of small torch ops (llma.cpu.glue loads it).
 *
 * Contract: every function works row by row; a row's results depend on that row's inputs only,
 * never on the row count or the other rows (no work is shared or split across rows), so a row
 * gets the same bits alone or in any batch. Sums run in a fixed order (LANES partial sums, then a
 * fixed tree), exp is one fixed polynomial: the same bits on every call on one machine and build.
 * bf16 is stored as uint16; float -> bf16 rounds to nearest even, as torch does.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define LANES 16
#define CHUNK 128 /* keys per attention work item */

static inline float widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t narrow(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float sum_squares(const float *x, int n) {
    float acc[LANES] = {0};
    int j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += x[j + l] * x[j + l];
    for (int l = 0; j < n; j++, l++) acc[l] += x[j] * x[j];
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

/* exp(x) for x <= 0 (silu's exp(-g) is computed as exp(-|g|)): 2^k * p(r), r in [-ln2/2, ln2/2]. */
static inline float exp_neg(float x) {
    x = x < -87.0f ? -87.0f : x;
    float k = nearbyintf(x * 1.44269504088896341f);
    float r = x - k * 0.693359375f;
    r = r + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

static void norm_row(const float *x, const float *w, float eps, int n, uint16_t *out_bf16, float *out_f32) {
    float inv = 1.0f / sqrtf(sum_squares(x, n) / (float)n + eps);
    if (out_f32)
        for (int j = 0; j < n; j++) out_f32[j] = x[j] * inv * w[j];
    else
        for (int j = 0; j < n; j++) out_bf16[j] = narrow(x[j] * inv * w[j]);
}

/* out [rows, n] (bf16) = rms_norm(x [rows, n]) * w */
void llma_norm(const float *x, const float *w, float eps, int rows, int n, uint16_t *out) {
    for (int r = 0; r < rows; r++) norm_row(x + (int64_t)r * n, w, eps, n, out + (int64_t)r * n, 0);
}

/* x [rows, n] += widen(delta) (+ bias); then out = rms_norm(x) * w, in bf16 (out_bf16) or fp32
 * (out_f32, where not NULL). */
void llma_add_norm(float *x, const uint16_t *delta, const float *bias, const float *w, float eps,
                   int rows, int n, uint16_t *out_bf16, float *out_f32) {
    for (int r = 0; r < rows; r++) {
        float *xr = x + (int64_t)r * n;
        const uint16_t *dr = delta + (int64_t)r * n;
        for (int j = 0; j < n; j++) xr[j] = xr[j] + widen(dr[j]);
        if (bias)
            for (int j = 0; j < n; j++) xr[j] = xr[j] + bias[j];
        norm_row(xr, w, eps, n, out_bf16 ? out_bf16 + (int64_t)r * n : 0,
                 out_f32 ? out_f32 + (int64_t)r * n : 0);
    }
}

/* qkv [rows, heads + 2 kv, d] (bf16) + bias -> q [rows, heads, d], k, v [rows, kv, d] (fp32), q and
 * k rotated: y[j] = t[j] cos[j] + t[(j + d/2) % d] sin[j] with the row's cos, sin [rows, d]
 * (sin's first half negated: rotate_half folded in). */
void llma_qkv_rotary(const uint16_t *qkv, const float *bias, const float *cos, const float *sin,
                     int rows, int heads, int kv, int d, float *q, float *k, float *v) {
    int half = d / 2, all = heads + 2 * kv;
    float t[512];
    for (int r = 0; r < rows; r++) {
        const float *c = cos + (int64_t)r * d, *s = sin + (int64_t)r * d;
        for (int h = 0; h < all; h++) {
            const uint16_t *src = qkv + ((int64_t)r * all + h) * d;
            const float *b = bias ? bias + (int64_t)h * d : 0;
            for (int j = 0; j < d; j++) t[j] = b ? widen(src[j]) + b[j] : widen(src[j]);
            float *dst = h < heads ? q + ((int64_t)r * heads + h) * d
                       : h < heads + kv ? k + ((int64_t)r * kv + h - heads) * d
                       : v + ((int64_t)r * kv + h - heads - kv) * d;
            if (h >= heads + kv) {
                memcpy(dst, t, sizeof(float) * d);
                continue;
            }
            for (int j = 0; j < half; j++) dst[j] = t[j] * c[j] + t[j + half] * s[j];
            for (int j = half; j < d; j++) dst[j] = t[j] * c[j] + t[j - half] * s[j];
        }
    }
}

/* gu [rows, 2 n] (bf16: gate, then up) -> out [rows, n] (bf16) = silu(gate) * up */
void llma_silu_mul(const uint16_t *gu, int rows, int n, uint16_t *out) {
    float g[LANES * 8], e[LANES * 8];
    for (int r = 0; r < rows; r++) {
        const uint16_t *gate = gu + (int64_t)r * 2 * n, *up = gate + n;
        uint16_t *o = out + (int64_t)r * n;
        for (int j0 = 0; j0 < n; j0 += LANES * 8) {
            int m = n - j0 < LANES * 8 ? n - j0 : LANES * 8;
            for (int j = 0; j < m; j++) g[j] = widen(gate[j0 + j]);
            for (int j = 0; j < m; j++) e[j] = exp_neg(-fabsf(g[j]));
            for (int j = 0; j < m; j++) {
                /* sigmoid(g) = 1 / (1 + exp(-g)); for g < 0 as exp(g) / (1 + exp(g)) */
                float sig = g[j] >= 0.0f ? 1.0f / (1.0f + e[j]) : e[j] / (1.0f + e[j]);
                o[j0 + j] = narrow(g[j] * sig * widen(up[j0 + j]));
            }
        }
    }
}

/* Keys and values k, v [rows, kv, d] written at (slot[r], at[r]) of the layer's caches
 * kc, vc [slots, kv, cap, d]. */
void llma_cache_write(float *kc, float *vc, const float *k, const float *v, const int64_t *slot,
                      const int64_t *at, int rows, int kv, int d, int cap) {
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < kv; h++) {
            int64_t to = ((slot[r] * kv + h) * (int64_t)cap + at[r]) * d, from = ((int64_t)r * kv + h) * d;
            memcpy(kc + to, k + from, sizeof(float) * d);
            memcpy(vc + to, v + from, sizeof(float) * d);
        }
}

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
    for (int g = 0; g < groups; g++) {
        float *sg = s + g * CHUNK, *out = part + (int64_t)g * (d + 2);
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
        float m = sg[0];
        for (int t = 1; t < n; t++) m = sg[t] > m ? sg[t] : m;
        float l = 0.0f;
        for (int t = 0; t < n; t++) {
            sg[t] = exp_neg(sg[t] - m);
            l += sg[t];
        }
        for (int j = 0; j < d; j++) out[2 + j] = 0.0f;
        for (int t = 0; t < n; t++) {
            int64_t p = first + t, at = p <= pos ? p : p + shift;
            const float *vrow = base_v + at * d;
            for (int j = 0; j < d; j++) out[2 + j] += sg[t] * vrow[j];
        }
        out[0] = m;
        out[1] = l;
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

int llma_glue_version(void) { return 3; }
