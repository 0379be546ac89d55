/*
 * dtype.h - one element of each 16-bit type to and from float32, bit for bit as PyTorch converts
 * (c10::BFloat16, c10::Half): round to nearest, ties to even, subnormals kept, float16 overflow to
 * Inf. Integer arithmetic only, with selects instead of branches, so that the loops over buffers
 * (precision.c) vectorize and give the same bits on every x86 machine, with or without
 * AVX512-BF16 or F16C (vcvtneps2bf16 flushes subnormals, so it cannot be used). Not installed.
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
 * round to Inf as they should. NaN stays a quiet NaN of its sign. */
static inline uint16_t adampi__to_bf16(float f)
{
  uint32_t u = adampi__f32_bits(f);
  uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return (uint16_t)adampi__select((u & 0x7FFFFFFFu) > 0x7F800000u, (u >> 16) | 0x0040u, rounded);
}

static inline float adampi__from_bf16(uint16_t h) { return adampi__bits_f32((uint32_t)h << 16); }

/* float16: 5 exponent bits (bias 15), 10 mantissa bits. Three ranges of |f|:
 *   >= 65520 (0x477FF000) rounds to Inf (65520 is the tie between 65504 and 2^16, and 2^16's
 *   mantissa is even); NaN stays NaN;
 *   >= 2^-14 (0x38800000) is normal: rebias the exponent (127 - 15 = 112) and round off 13 bits;
 *   below, subnormal: the significand with its leading 1, shifted right by 126 - e (at most 25,
 *   which leaves 0 for everything below 2^-25), rounded to nearest even. */
static inline uint16_t adampi__to_f16(float f)
{
  uint32_t u = adampi__f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
  uint32_t normal = (a - 0x38000000u + 0x0FFFu + ((a >> 13) & 1u)) >> 13;
  uint32_t e = a >> 23, m = (a & 0x7FFFFFu) | 0x800000u;
  /* the shift, used only below 2^-14 (e <= 112), kept within 14..25 so it is defined everywhere */
  uint32_t sh = adampi__select(e <= 101u, 25u, adampi__select(e >= 112u, 14u, 126u - e));
  uint32_t q = m >> sh, rem = m & ((1u << sh) - 1u), half = 1u << (sh - 1u);
  uint32_t sub = q + ((uint32_t)(rem > half) | ((uint32_t)(rem == half) & q & 1u));
  uint32_t mag = adampi__select(a >= 0x38800000u, normal, sub);
  mag = adampi__select(a >= 0x477FF000u, 0x7C00u, mag);
  mag = adampi__select(a > 0x7F800000u, 0x7E00u, mag);
  return (uint16_t)(sign | mag);
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
