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

#define LANES 16

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

int llma_glue_version(void) { return 1; }
