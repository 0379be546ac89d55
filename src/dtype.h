/*
 * dtype.h - one element of each 16-bit type to and from float32, bit for bit as PyTorch converts
 * (c10::BFloat16, c10::Half): round to nearest, ties to even, subnormals kept, float16 overflow to
 * Inf. Integer arithmetic and exact float additions, with selects instead of branches, so that the
 * loops over buffers (precision.c) vectorize and give the same bits on every x86 machine, with or
 * without AVX512-BF16 or F16C (vcvtneps2bf16 flushes subnormals, so it cannot be used; F16C's
 * vcvtps2ph gives adampi__to_f16's bits for every float, and precision.c uses it where the CPU
 * has it). Not installed.
 */
#ifndef ADAMPI_DTYPE_H
#define ADAMPI_DTYPE_H

#include <stdint.h>
#include <string.h>

static inline uint32_t adampi__f32_bits(float f)
{
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static inline float adampi__bits_f32(uint32_t u)
{
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* a where c (0 or 1) is 1, else b: a mask, not a branch, so that loops vectorize. */
static inline uint32_t adampi__select(uint32_t c, uint32_t a, uint32_t b)
{
  uint32_t m = 0u - c;
  return (a & m) | (b & ~m);
}

/* bfloat16 is the top half of a float32: add just under half an ulp, plus the lowest kept bit
 * (ties to even), and cut. A carry out of the mantissa bumps the exponent, so the largest values
 * round to Inf as they should. NaN stays a quiet NaN of its sign. The select is made on the 32-bit
 * words and the cut after it: with the cut first (the same bits, checked on all 2^32 floats), GCC
 * 12 narrowed both candidates and the mask to 16 bits each before selecting, about twice the
 * instructions per vector (AMD EPYC, ResNet-50 shapes, bfloat16 models: the AVX2 clones' step took
 * 0.84-0.89 of its time with the select first, the AVX-512 clones' update 0.96-0.98). */
static inline __attribute__((always_inline)) uint16_t adampi__to_bf16(float f)
{
  uint32_t u = adampi__f32_bits(f);
  uint32_t r = adampi__select((u & 0x7FFFFFFFu) > 0x7F800000u, u | 0x00400000u, u + 0x7FFFu + ((u >> 16) & 1u));
  return (uint16_t)(r >> 16);
}

static inline float adampi__from_bf16(uint16_t h) { return adampi__bits_f32((uint32_t)h << 16); }

/* float16: 5 exponent bits (bias 15), 10 mantissa bits. One float addition rounds |f| to float16's
 * spacing there: c = 2^13 times f's power of two (at least 2^-14's, below which float16's spacing
 * is the subnormals' 2^-24) makes |f| + c land in [c, 2c), where float32's spacing is float16's,
 * so the addition rounds to nearest even and subtracting c is exact; a carry into the next power
 * of two is right too. The result is then a float16 value: rebias its exponent (127 - 15 = 112)
 * or, below 2^-14, count its multiples of 2^-24. |f| >= 65520 (the tie between 65504 and 2^16,
 * whose mantissa is even) is Inf; NaN stays a quiet NaN with the top of its payload (as F16C's
 * vcvtps2ph). Float additions that round to nearest, as the library's build keeps them (no
 * -ffast-math, no flush to zero), and selects that vectorize. */
static inline __attribute__((always_inline)) uint16_t adampi__to_f16(float f)
{
  uint32_t u = adampi__f32_bits(f), a = u & 0x7FFFFFFFu;
  uint32_t ea = a & 0x7F800000u;
  float c = adampi__bits_f32((ea > 0x38800000u ? ea : 0x38800000u) + (13u << 23));
  float r = (adampi__bits_f32(a) + c) - c;
  uint32_t rb = adampi__f32_bits(r);
  uint32_t mag = rb >= 0x38800000u ? (rb >> 13) - (112u << 10) : (uint32_t)(int32_t)(r * 0x1p24f);
  mag = a >= 0x477FF000u ? 0x7C00u : mag;
  mag = a > 0x7F800000u ? 0x7E00u | ((a >> 13) & 0x3FFu) : mag;
  return (uint16_t)(((u >> 16) & 0x8000u) | mag);
}

/* Exact: normal values rebias the exponent, subnormals are em * 2^-24 (exact in float32). */
static inline float adampi__from_f16(uint16_t h)
{
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7FFFu;
  uint32_t special = 0x7F800000u | ((em & 0x3FFu) << 13);
  uint32_t normal = (em << 13) + 0x38000000u;
  uint32_t sub = adampi__f32_bits((float)(int32_t)em * 0x1p-24f);
  uint32_t mag = adampi__select(em >= 0x7C00u, special, adampi__select(em >= 0x0400u, normal, sub));
  return adampi__bits_f32(sign | mag);
}

#endif /* ADAMPI_DTYPE_H */
