/* What the CPU glue's C files share (llma.cpu.glue compiles them into one library).
 *
 * Contract of every function: a row's results depend on that row's inputs only, never on the row
 * count or the other rows (work may be split across threads by row, never within one row's sums),
 * so a row gets the same bits alone or in any batch. Sums run in a fixed order (LANES partial sums,
 * then a fixed tree), exp is one fixed polynomial: the same bits on every call on one machine and
 * build. bf16 is stored as uint16; float -> bf16 rounds to nearest even, as torch does.
 */
#ifndef LLMA_GLUE_COMMON_H
#define LLMA_GLUE_COMMON_H
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

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

static inline float sum_squares(const float *x, int n) {
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

#endif
