/*
 * precision.c - mixed precision: the element types, their conversions over buffers, the fp32
 * master of a 16-bit handle (adampi_set_master, adampi_master_shard) and the loss scaler.
 *
 * With a 16-bit type the library's truth is the master, fp32, one per shard element, beside the
 * state: every step updates the master and rounds it into the caller's 16-bit parameters, and a
 * checkpoint keeps the master (MATHS.md "Mixed precision"). The conversions are dtype.h's, the
 * same bits on every machine; their loops are built for every vector width (ADAMPI_CLONES).
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t adampi_dtype_size(adampi_dtype dtype)
{
  switch (dtype) {
  case ADAMPI_FLOAT32: return 4;
  case ADAMPI_BFLOAT16:
  case ADAMPI_FLOAT16: return 2;
  }
  return 0;
}

const char *adampi_dtype_name(adampi_dtype dtype)
{
  switch (dtype) {
  case ADAMPI_FLOAT32: return "float32";
  case ADAMPI_BFLOAT16: return "bfloat16";
  case ADAMPI_FLOAT16: return "float16";
  }
  return NULL;
}

ADAMPI_CLONES
static void round_bf16(const float *restrict in, uint16_t *restrict out, int64_t n)
{
  for (int64_t i = 0; i < n; i++) out[i] = adampi__to_bf16(in[i]);
}

ADAMPI_CLONES
static void round_f16(const float *restrict in, uint16_t *restrict out, int64_t n)
{
  for (int64_t i = 0; i < n; i++) out[i] = adampi__to_f16(in[i]);
}

ADAMPI_CLONES
static void widen_f16(const uint16_t *restrict in, float *restrict out, int64_t n)
{
  for (int64_t i = 0; i < n; i++) out[i] = adampi__from_f16(in[i]);
}

/* float16 by the CPU's own conversions where it has them (F16C; with AVX-512, 16 at a time):
 * vcvtps2ph, rounding to nearest even, gives adampi__to_f16's bits for every one of the 2^32
 * floats (test_mixed checks them all), in one instruction per vector instead of about fifteen.
 * vcvtph2ps is exact too, but quiets a signalling NaN, which adampi__from_f16 keeps as it is: a
 * vector holding a NaN is widened by adampi__from_f16. ADAMPI_NO_CLONES builds neither, so the
 * baseline build that clone_check compares with converts in software. */
#if defined(ADAMPI__HW_CONVERSIONS)
#include <immintrin.h>

#define F16_AVX512 "avx512f,avx512bw,avx512vl,f16c"
#define F16_AVX2 "avx2,f16c"
#define TO_NEAREST (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

__attribute__((target(F16_AVX512))) static void round_f16_avx512(const float *in, uint16_t *out, int64_t n)
{
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtps_ph(_mm512_loadu_ps(in + i), TO_NEAREST));
  if (i < n) {
    __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(out + i, k, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(k, in + i), TO_NEAREST));
  }
}

__attribute__((target(F16_AVX2))) static void round_f16_avx2(const float *in, uint16_t *out, int64_t n)
{
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(in + i), TO_NEAREST));
  for (; i < n; i++) out[i] = adampi__to_f16(in[i]);
}

__attribute__((target(F16_AVX512))) static void widen_f16_avx512(const uint16_t *in, float *out, int64_t n)
{
  const __m256i mag = _mm256_set1_epi16(0x7FFF), inf = _mm256_set1_epi16(0x7C00);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i h = _mm256_loadu_si256((const __m256i *)(in + i));
    if (_mm256_cmpgt_epu16_mask(_mm256_and_si256(h, mag), inf) == 0)
      _mm512_storeu_ps(out + i, _mm512_cvtph_ps(h));
    else
      for (int j = 0; j < 16; j++) out[i + j] = adampi__from_f16(in[i + j]);
  }
  for (; i < n; i++) out[i] = adampi__from_f16(in[i]);
}

__attribute__((target(F16_AVX2))) static void widen_f16_avx2(const uint16_t *in, float *out, int64_t n)
{
  const __m128i mag = _mm_set1_epi16(0x7FFF), inf = _mm_set1_epi16(0x7C00);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128((const __m128i *)(in + i));
    if (_mm_movemask_epi8(_mm_cmpgt_epi16(_mm_and_si128(h, mag), inf)) == 0)
      _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
    else
      for (int j = 0; j < 8; j++) out[i + j] = adampi__from_f16(in[i + j]);
  }
  for (; i < n; i++) out[i] = adampi__from_f16(in[i]);
}

/* One round of the data-parallel gradient reduction over float16 terms (exchange.c's add_block,
 * adampi__f16_adding): acc = (first ? own : acc) + in, divided by ranks in the last round, each
 * term widened by vcvtph2ps, and a vector holding a NaN by adampi__from_f16, as widen_f16_avx512
 * does. One pass over both ranks' terms instead of two widenings into scratch and an addition;
 * add_f16_avx2 the same 8 at a time, as widen_f16_avx2 widens. */
static inline float add_term(float a, float x, int last, float ranks)
{
  float s = a + x;
  return last ? s / ranks : s;
}

__attribute__((target(F16_AVX512))) static void add_f16_avx512(float *acc, const uint16_t *own, const uint16_t *in,
                                                                int64_t n, int first, int last, float ranks)
{
  const __m256i mag = _mm256_set1_epi16(0x7FFF), inf = _mm256_set1_epi16(0x7C00);
  const __m512 r = _mm512_set1_ps(ranks);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i hx = _mm256_loadu_si256((const __m256i *)(in + i));
    __m256i ho = first ? _mm256_loadu_si256((const __m256i *)(own + i)) : _mm256_setzero_si256();
    if (_mm256_cmpgt_epu16_mask(_mm256_and_si256(hx, mag), inf) |
        _mm256_cmpgt_epu16_mask(_mm256_and_si256(ho, mag), inf)) {
      for (int64_t j = i; j < i + 16; j++)
        acc[j] = add_term(first ? adampi__from_f16(own[j]) : acc[j], adampi__from_f16(in[j]), last, ranks);
      continue;
    }
    __m512 s = _mm512_add_ps(first ? _mm512_cvtph_ps(ho) : _mm512_loadu_ps(acc + i), _mm512_cvtph_ps(hx));
    _mm512_storeu_ps(acc + i, last ? _mm512_div_ps(s, r) : s);
  }
  for (; i < n; i++) acc[i] = add_term(first ? adampi__from_f16(own[i]) : acc[i], adampi__from_f16(in[i]), last, ranks);
}

__attribute__((target(F16_AVX2))) static void add_f16_avx2(float *acc, const uint16_t *own, const uint16_t *in,
                                                            int64_t n, int first, int last, float ranks)
{
  const __m128i mag = _mm_set1_epi16(0x7FFF), inf = _mm_set1_epi16(0x7C00);
  const __m256 r = _mm256_set1_ps(ranks);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i hx = _mm_loadu_si128((const __m128i *)(in + i));
    __m128i ho = first ? _mm_loadu_si128((const __m128i *)(own + i)) : _mm_setzero_si128();
    __m128i nan_x = _mm_cmpgt_epi16(_mm_and_si128(hx, mag), inf), nan_o = _mm_cmpgt_epi16(_mm_and_si128(ho, mag), inf);
    if (_mm_movemask_epi8(_mm_or_si128(nan_x, nan_o))) {
      for (int64_t j = i; j < i + 8; j++)
        acc[j] = add_term(first ? adampi__from_f16(own[j]) : acc[j], adampi__from_f16(in[j]), last, ranks);
      continue;
    }
    __m256 s = _mm256_add_ps(first ? _mm256_cvtph_ps(ho) : _mm256_loadu_ps(acc + i), _mm256_cvtph_ps(hx));
    _mm256_storeu_ps(acc + i, last ? _mm256_div_ps(s, r) : s);
  }
  for (; i < n; i++) acc[i] = add_term(first ? adampi__from_f16(own[i]) : acc[i], adampi__from_f16(in[i]), last, ranks);
}

/* 2: AVX-512 with F16C, 1: AVX2 with F16C (the OS saving the registers: libgcc checks), 0: none;
 * both levels ask for all of x86-64-v3, as the x86-64-v3 kernel set does (internal.h), so that
 * wherever the CPU converts, the update kernels round float16 as they write it (step.c). Read
 * once, when the library is loaded (one thread, before any call), so that the update pass's
 * threads only read it; 0 (the software conversions, the same bits) until then. A build with its
 * clones capped at x86-64-v3 (ADAMPI_CLONES_AVX2, internal.h) stops at 1 too, so that on an
 * AVX-512 machine its tests run the conversions an AVX2 CPU runs (tests/CMakeLists.txt). */
static int f16_level;

__attribute__((constructor)) static void f16_detect(void)
{
  __builtin_cpu_init();
  f16_level = __builtin_cpu_supports("x86-64-v3") != 0; /* AVX2 and F16C among them */
#if !defined(ADAMPI_CLONES_AVX2)
  if (f16_level && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("f16c"))
    f16_level = 2;
#endif
}
#endif

adampi__round_fn adampi__f16_rounding(void)
{
#if defined(ADAMPI__HW_CONVERSIONS)
  switch (f16_level) {
  case 2: return round_f16_avx512;
  case 1: return round_f16_avx2;
  }
#endif
  return NULL;
}

adampi__add16_fn adampi__f16_adding(void)
{
#if defined(ADAMPI__HW_CONVERSIONS)
  switch (f16_level) {
  case 2: return add_f16_avx512;
  case 1: return add_f16_avx2;
  }
#endif
  return NULL;
}

static void widen_f16_any(const uint16_t *in, float *out, int64_t n)
{
#if defined(ADAMPI__HW_CONVERSIONS)
  switch (f16_level) {
  case 2: widen_f16_avx512(in, out, n); return;
  case 1: widen_f16_avx2(in, out, n); return;
  }
#endif
  widen_f16(in, out, n);
}

ADAMPI_CLONES
static void widen_bf16(const uint16_t *restrict in, float *restrict out, int64_t n)
{
  for (int64_t i = 0; i < n; i++) out[i] = adampi__from_bf16(in[i]);
}

void adampi__round(adampi_dtype dtype, const float *in, void *out, int64_t n)
{
  if (n <= 0) return;
  if (dtype == ADAMPI_BFLOAT16) round_bf16(in, out, n);
  else if (dtype == ADAMPI_FLOAT16) {
    adampi__round_fn hw = adampi__f16_rounding();
    if (hw) hw(in, out, n);
    else round_f16(in, out, n);
  }
  else if (in != out) memmove(out, in, (size_t)n * sizeof(float));
}

void adampi__widen(adampi_dtype dtype, const void *in, float *out, int64_t n)
{
  if (n <= 0) return;
  if (dtype == ADAMPI_BFLOAT16) widen_bf16(in, out, n);
  else if (dtype == ADAMPI_FLOAT16) widen_f16_any(in, out, n);
  else if (in != out) memmove(out, in, (size_t)n * sizeof(float));
}

adampi_status adampi_round_to(adampi_dtype dtype, const float *in, void *out, int64_t n)
{
  if (adampi_dtype_size(dtype) == 0 || n < 0 || (n > 0 && (in == NULL || out == NULL))) return ADAMPI_ERR_ARG;
  adampi__round(dtype, in, out, n);
  return ADAMPI_OK;
}

adampi_status adampi_widen(adampi_dtype dtype, const void *in, float *out, int64_t n)
{
  if (adampi_dtype_size(dtype) == 0 || n < 0 || (n > 0 && (in == NULL || out == NULL))) return ADAMPI_ERR_ARG;
  adampi__widen(dtype, in, out, n);
  return ADAMPI_OK;
}

/* Elements per block of the intake: the unscaling reads each block back from L1, so the shard is
 * read and written once. */
#define INTAKE_BLOCK 4096

void adampi__intake(adampi_dtype dtype, const void *g, float *out, int64_t n, float scale)
{
  const size_t elem = adampi_dtype_size(dtype);
  for (int64_t k = 0; k < n; k += INTAKE_BLOCK) {
    int64_t m = n - k < INTAKE_BLOCK ? n - k : INTAKE_BLOCK;
    const void *in = (const char *)g + (size_t)k * elem;
    if (in != out + k) adampi__widen(dtype, in, out + k, m);
    adampi__unscale_array(out + k, m, scale);
  }
}

void adampi__master_from(adampi *opt, const void *param_shard)
{
  if (opt->master == NULL) return;
  adampi__widen(opt->cfg.dtype, param_shard, opt->master, opt->hi - opt->lo);
}

const float *adampi_master_shard(const adampi *opt)
{
  if (opt == NULL || !opt->committed || opt->master == NULL || !opt->master_valid || opt->hi == opt->lo) return NULL;
  return opt->master;
}

adampi_status adampi_set_master(adampi *opt, const float *values, adampi_params_form form, void *params)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  if (!opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "adampi_set_master before adampi_commit");
  adampi_status st = ADAMPI_OK;
  int64_t n = opt->hi - opt->lo;
  const float *mine = values == NULL ? NULL : form == ADAMPI_PARAMS_FULL ? values + opt->lo : values;
  if (form != ADAMPI_PARAMS_SHARD && form != ADAMPI_PARAMS_FULL)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "form = %d is not a known form", (int)form);
  else if (values == NULL && (n > 0 || form == ADAMPI_PARAMS_FULL))
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: values is NULL", opt->rank);
  else
    st = adampi__check_shard(opt, "the master values", mine, 0);
  st = adampi__agree(opt, st);
  if (st != ADAMPI_OK) return st;
  if (opt->master) {
    if (n > 0) memcpy(opt->master, mine, (size_t)n * sizeof(float));
    opt->master_valid = 1;
  }
  if (params != NULL) {
    /* Full values are on every rank, so every rank rounds the whole buffer itself. */
    int64_t count = form == ADAMPI_PARAMS_FULL ? opt->numel : n;
    adampi__round(opt->cfg.dtype, values, params, count);
  }
  return ADAMPI_OK;
}

adampi_loss_scaler adampi_loss_scaler_defaults(void)
{
  adampi_loss_scaler s = {65536.0, 2.0, 0.5, 2000, 0};
  return s;
}

void adampi_loss_scaler_update(adampi_loss_scaler *s, int skipped)
{
  if (s == NULL) return;
  if (skipped) {
    s->scale *= s->backoff_factor;
    s->good_steps = 0;
    return;
  }
  if (++s->good_steps < s->growth_interval) return;
  s->good_steps = 0;
  if (isfinite(s->scale * s->growth_factor)) s->scale *= s->growth_factor;
}
