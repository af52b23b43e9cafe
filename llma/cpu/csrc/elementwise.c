/* The step's elementwise work between the products: norms, residual additions, bias and rotary,
 * SiLU, cache writes. Rows are split across `threads` (each row on one thread). */
#include "common.h"

#define ROWS_PER_THREAD 8 /* fewer rows: one thread (a decoding step's few rows gain nothing) */

static void norm_row(const float *x, const float *w, float eps, int n, uint16_t *out_bf16, float *out_f32) {
    float inv = 1.0f / sqrtf(sum_squares(x, n) / (float)n + eps);
    if (out_f32)
        for (int j = 0; j < n; j++) out_f32[j] = x[j] * inv * w[j];
    else
        for (int j = 0; j < n; j++) out_bf16[j] = narrow(x[j] * inv * w[j]);
}

/* out [rows, n] (bf16) = rms_norm(x [rows, n]) * w */
void llma_norm(const float *x, const float *w, float eps, int rows, int n, uint16_t *out, int threads) {
#pragma omp parallel for schedule(static) if (rows >= ROWS_PER_THREAD) num_threads(threads)
    for (int r = 0; r < rows; r++) norm_row(x + (int64_t)r * n, w, eps, n, out + (int64_t)r * n, 0);
}

/* x [rows, n] += widen(delta) (+ bias); then out = rms_norm(x) * w, in bf16 (out_bf16) or fp32
 * (out_f32, where not NULL). */
void llma_add_norm(float *x, const uint16_t *delta, const float *bias, const float *w, float eps,
                   int rows, int n, uint16_t *out_bf16, float *out_f32, int threads) {
#pragma omp parallel for schedule(static) if (rows >= ROWS_PER_THREAD) num_threads(threads)
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
                     int rows, int heads, int kv, int d, float *q, float *k, float *v, int threads) {
    int half = d / 2, all = heads + 2 * kv;
#pragma omp parallel for schedule(static) if (rows >= ROWS_PER_THREAD) num_threads(threads)
    for (int r = 0; r < rows; r++) {
        float t[512];
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
void llma_silu_mul(const uint16_t *gu, int rows, int n, uint16_t *out, int threads) {
#pragma omp parallel for schedule(static) if (rows >= ROWS_PER_THREAD) num_threads(threads)
    for (int r = 0; r < rows; r++) {
        float g[LANES * 8], e[LANES * 8];
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
