/*
 * test_mixed.c - mixed precision and clipping (issue 14): the 16-bit roundings on every special
 * case, the float16 conversions by F16C and the update's vector widening against the software
 * ones on every value, bitwise rank invariance of bfloat16 and float16 handles with clipping and a
 * gradient scale,
 * clipping as torch's clip_grad_norm_ (the norm, the factor, and a clipped step equal to an
 * unclipped step on the pre-multiplied gradients), the data-parallel 16-bit step through both
 * transports, float16 overflow under both policies, and the bad inputs, each refused on every
 * rank with nothing changed.
 */
#include "problem.h"

#include "../src/dtype.h"
#include "../src/internal.h"

#include <math.h>

#define STEPS 8

/* ---- rounding --------------------------------------------------------------------------------- */

static float from_bits(uint32_t u)
{
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

typedef struct rounding_case {
  uint32_t in;
  uint16_t bf16, f16;
  const char *what;
} rounding_case;

/* Expected bits from the IEEE definitions (round to nearest, ties to even). */
static const rounding_case rounding_cases[] = {
  {0x00000000u, 0x0000, 0x0000, "+0"},
  {0x80000000u, 0x8000, 0x8000, "-0"},
  {0x3F800000u, 0x3F80, 0x3C00, "1"},
  {0xBF800000u, 0xBF80, 0xBC00, "-1"},
  {0x3F808000u, 0x3F80, 0x3C04, "1 + 2^-8: bf16 tie, down to even"},
  {0x3F818000u, 0x3F82, 0x3C0C, "1 + 3*2^-8: bf16 tie, up to even"},
  {0x3F808001u, 0x3F81, 0x3C04, "just above a bf16 tie"},
  {0x3F801000u, 0x3F80, 0x3C00, "1 + 2^-11: f16 tie, down to even"},
  {0x3F803000u, 0x3F80, 0x3C02, "1 + 3*2^-11: f16 tie, up to even"},
  {0x477FE000u, 0x4780, 0x7BFF, "65504, f16 max"},
  {0x477FEFFFu, 0x4780, 0x7BFF, "just below 65520: f16 max"},
  {0x477FF000u, 0x4780, 0x7C00, "65520: f16 Inf"},
  {0x7F7FFFFFu, 0x7F80, 0x7C00, "float max: Inf in both"},
  {0x7F7F7FFFu, 0x7F7F, 0x7C00, "largest float that stays finite in bf16"},
  {0x7F800000u, 0x7F80, 0x7C00, "+Inf"},
  {0xFF800000u, 0xFF80, 0xFC00, "-Inf"},
  {0x38800000u, 0x3880, 0x0400, "2^-14, f16 min normal"},
  {0x387FC000u, 0x3880, 0x03FF, "1023 * 2^-24: the largest f16 subnormal"},
  {0x387FE000u, 0x3880, 0x0400, "1023.5 * 2^-24: f16 tie, up to even 2^-14 (normal)"},
  {0x33800000u, 0x3380, 0x0001, "2^-24, f16 min subnormal"},
  {0x33000000u, 0x3300, 0x0000, "2^-25: f16 tie, down to 0"},
  {0x33400000u, 0x3340, 0x0001, "3*2^-26: f16 rounds up to 2^-24"},
  {0x33C00000u, 0x33C0, 0x0002, "3*2^-25: f16 tie, up to even 2"},
  {0xB3C00000u, 0xB3C0, 0x8002, "-3*2^-25"},
  {0x00000001u, 0x0000, 0x0000, "smallest fp32 subnormal: 0 in bf16 (ties down) and f16"},
  {0x00012345u, 0x0001, 0x0000, "fp32 subnormal kept in bf16"},
  {0x007FFFFFu, 0x0080, 0x0000, "largest fp32 subnormal: rounds to the smallest normal in bf16"},
};

START_TEST(rounding_matches_the_ieee_bits_on_every_special_case)
{
  const rounding_case *c = &rounding_cases[_i];
  float in = from_bits(c->in), back;
  uint16_t b = 0, h = 0;
  ck_assert_int_eq(adampi_round_to(ADAMPI_BFLOAT16, &in, &b, 1), ADAMPI_OK);
  ck_assert_int_eq(adampi_round_to(ADAMPI_FLOAT16, &in, &h, 1), ADAMPI_OK);
  ck_assert_msg(b == c->bf16, "%s (0x%08x): bfloat16 0x%04x, expected 0x%04x", c->what, c->in, b, c->bf16);
  ck_assert_msg(h == c->f16, "%s (0x%08x): float16 0x%04x, expected 0x%04x", c->what, c->in, h, c->f16);
  /* Widening is exact: a representable value comes back as itself. */
  ck_assert_int_eq(adampi_widen(ADAMPI_FLOAT16, &h, &back, 1), ADAMPI_OK);
  uint16_t again = 0;
  adampi_round_to(ADAMPI_FLOAT16, &back, &again, 1);
  ck_assert_msg(again == h, "%s: float16 0x%04x does not round-trip (0x%04x)", c->what, h, again);
}
END_TEST

START_TEST(nan_stays_nan_and_every_float16_round_trips)
{
  float nan = from_bits(0x7FC00001u), out;
  uint16_t b, h;
  adampi_round_to(ADAMPI_BFLOAT16, &nan, &b, 1);
  adampi_round_to(ADAMPI_FLOAT16, &nan, &h, 1);
  adampi_widen(ADAMPI_BFLOAT16, &b, &out, 1);
  ck_assert_msg(isnan(out), "NaN rounded to bfloat16 is 0x%04x, not a NaN", b);
  adampi_widen(ADAMPI_FLOAT16, &h, &out, 1);
  ck_assert_msg(isnan(out), "NaN rounded to float16 is 0x%04x, not a NaN", h);
  for (uint32_t x = 0; x < 65536; x++) {
    uint16_t in = (uint16_t)x, back;
    adampi_widen(ADAMPI_FLOAT16, &in, &out, 1);
    if (isnan(out)) continue;
    adampi_round_to(ADAMPI_FLOAT16, &out, &back, 1);
    ck_assert_msg(back == in, "float16 0x%04x widens to %a and rounds back to 0x%04x", in, (double)out, back);
    adampi_widen(ADAMPI_BFLOAT16, &in, &out, 1);
    if (isnan(out)) continue;
    adampi_round_to(ADAMPI_BFLOAT16, &out, &back, 1);
    ck_assert_msg(back == in, "bfloat16 0x%04x widens to %a and rounds back to 0x%04x", in, (double)out, back);
  }
  ck_assert_int_eq(adampi_round_to((adampi_dtype)7, &nan, &h, 1), ADAMPI_ERR_ARG);
  ck_assert_int_eq(adampi_widen(ADAMPI_FLOAT16, NULL, &out, 1), ADAMPI_ERR_ARG);
  ck_assert_ptr_null(adampi_dtype_name((adampi_dtype)7));
  ck_assert_str_eq(adampi_dtype_name(ADAMPI_BFLOAT16), "bfloat16");
}
END_TEST

/* Where the CPU converts float16 itself (F16C, vcvtps2ph and vcvtph2ps), the library uses its
 * instructions; they must give the bits of the software conversions (src/dtype.h, which the
 * baseline build and machines without F16C use) for every input: all 2^32 floats, shared among the
 * ranks (1/64 of them, every exponent, in the sanitizer build), and all 2^16 halves, the
 * signalling NaNs among them (which vcvtph2ps would quiet); the kernels' float16 rounding 16 at a
 * time, on x86-64-v4 CPUs the wide set's (adampi__f16_round16_wide) and on x86-64-v3 ones the
 * x86-64-v3 set's (adampi__f16_round16_v3), and the latter's widening of every finite float16
 * (adampi__f16x8_v3). The bfloat16 rounding too, the
 * library's vector loop (its clone for this CPU) and the projected rows' 16 at a time
 * (adampi__bf16_round16, both forms) against the formula element by element here. */
#ifdef __SANITIZE_ADDRESS__
#define F16_CHUNK_STRIDE 64 /* instrumented builds: every 64th chunk, every exponent still met */
#else
#define F16_CHUNK_STRIDE 1
#endif
START_TEST(float16_conversions_give_the_software_bits_for_every_value)
{
  enum { CHUNK = 1 << 16 };
  static float in[CHUNK];
  static uint16_t got[CHUNK], want[CHUNK];
  int rank = test_rank(), size = test_size();
  uint64_t per = ((1ull << 32) / CHUNK + (uint64_t)size - 1) / (uint64_t)size;
  long bad = 0, bad_bf16 = 0, bad_bf16_16 = 0, bad_f16_16 = 0, bad_f16_v3 = 0;
  uint32_t first_bad = 0, first_bad_bf16 = 0, first_bad_bf16_16 = 0, first_bad_f16_16 = 0, first_bad_f16_v3 = 0;
#if defined(ADAMPI__WIDE_CLONES)
  const int wide_cpu = __builtin_cpu_supports("x86-64-v4");
#endif
#if defined(ADAMPI__HW_CONVERSIONS)
  const int v3_cpu = __builtin_cpu_supports("x86-64-v3");
#endif
  for (uint64_t c = (uint64_t)rank * per; c < (uint64_t)(rank + 1) * per && c < (1ull << 32) / CHUNK; c++) {
    if (c % F16_CHUNK_STRIDE != 0) continue;
    for (uint32_t j = 0; j < CHUNK; j++) in[j] = from_bits((uint32_t)(c * CHUNK) + j);
    ck_assert_int_eq(adampi_round_to(ADAMPI_FLOAT16, in, got, CHUNK), ADAMPI_OK);
    for (uint32_t j = 0; j < CHUNK; j++) want[j] = adampi__to_f16(in[j]);
    if (memcmp(got, want, sizeof got) != 0)
      for (uint32_t j = 0; j < CHUNK; j++)
        if (got[j] != want[j] && bad++ == 0) first_bad = (uint32_t)(c * CHUNK) + j;
#if defined(ADAMPI__WIDE_CLONES)
    if (wide_cpu) { /* the wide kernels' float16 rounding, 16 at a time */
      for (uint32_t j = 0; j < CHUNK; j += 16) adampi__f16_round16_wide(in + j, got + j);
      if (memcmp(got, want, sizeof got) != 0)
        for (uint32_t j = 0; j < CHUNK; j++)
          if (got[j] != want[j] && bad_f16_16++ == 0) first_bad_f16_16 = (uint32_t)(c * CHUNK) + j;
    }
#endif
#if defined(ADAMPI__HW_CONVERSIONS)
    if (v3_cpu) { /* the x86-64-v3 kernels' float16 rounding, 16 at a time */
      for (uint32_t j = 0; j < CHUNK; j += 16) adampi__f16_round16_v3(in + j, got + j);
      if (memcmp(got, want, sizeof got) != 0)
        for (uint32_t j = 0; j < CHUNK; j++)
          if (got[j] != want[j] && bad_f16_v3++ == 0) first_bad_f16_v3 = (uint32_t)(c * CHUNK) + j;
    }
#endif
    ck_assert_int_eq(adampi_round_to(ADAMPI_BFLOAT16, in, got, CHUNK), ADAMPI_OK);
    for (uint32_t j = 0; j < CHUNK; j++) {
      volatile float x = in[j]; /* one element at a time, not the library's vector loop */
      want[j] = adampi__to_bf16(x);
    }
    if (memcmp(got, want, sizeof got) != 0)
      for (uint32_t j = 0; j < CHUNK; j++)
        if (got[j] != want[j] && bad_bf16++ == 0) first_bad_bf16 = (uint32_t)(c * CHUNK) + j;
    for (int wide = 0; wide < 2; wide++) { /* the projected rows' rounding, 16 at a time, both forms */
      for (uint32_t j = 0; j < CHUNK; j += 16) adampi__bf16_round16(in + j, got + j, wide);
      if (memcmp(got, want, sizeof got) != 0)
        for (uint32_t j = 0; j < CHUNK; j++)
          if (got[j] != want[j] && bad_bf16_16++ == 0) first_bad_bf16_16 = (uint32_t)(c * CHUNK) + j;
    }
  }
  ck_assert_msg(bad == 0, "rank %d: %ld floats round to other float16 bits than the software's, the first 0x%08x", rank,
                bad, first_bad);
  ck_assert_msg(bad_f16_16 == 0,
                "rank %d: adampi__f16_round16_wide rounds %ld floats to other float16 bits than the software's, "
                "the first 0x%08x",
                rank, bad_f16_16, first_bad_f16_16);
  ck_assert_msg(bad_f16_v3 == 0,
                "rank %d: adampi__f16_round16_v3 rounds %ld floats to other float16 bits than the software's, "
                "the first 0x%08x",
                rank, bad_f16_v3, first_bad_f16_v3);
  ck_assert_msg(bad_bf16 == 0, "rank %d: %ld floats round to other bfloat16 bits than the formula's, the first 0x%08x",
                rank, bad_bf16, first_bad_bf16);
  ck_assert_msg(bad_bf16_16 == 0,
                "rank %d: adampi__bf16_round16 rounds %ld floats to other bfloat16 bits than the formula's, the first 0x%08x",
                rank, bad_bf16_16, first_bad_bf16_16);
  uint16_t halves[CHUNK];
  float wide[CHUNK];
  for (uint32_t x = 0; x < CHUNK; x++) halves[x] = (uint16_t)x;
  ck_assert_int_eq(adampi_widen(ADAMPI_FLOAT16, halves, wide, CHUNK), ADAMPI_OK);
  for (uint32_t x = 0; x < CHUNK; x++) {
    uint32_t a, b;
    float ref = adampi__from_f16((uint16_t)x);
    memcpy(&a, &wide[x], 4);
    memcpy(&b, &ref, 4);
    ck_assert_msg(a == b, "float16 0x%04x widens to 0x%08x, the software to 0x%08x", x, a, b);
  }
  /* the update's widening, 16 at a time, of every finite float16 (the update sees no other) */
  for (uint32_t x = 0; x < CHUNK; x += 16) {
    adampi__v16f v;
    adampi__f16x16(halves + x, &v);
    for (uint32_t j = 0; j < 16; j++) {
      if ((halves[x + j] & 0x7C00u) == 0x7C00u) continue; /* Inf or NaN */
      uint32_t a, b;
      float ref = adampi__from_f16(halves[x + j]), got = v[j];
      memcpy(&a, &got, 4);
      memcpy(&b, &ref, 4);
      ck_assert_msg(a == b, "adampi__f16x16 widens float16 0x%04x to 0x%08x, the software to 0x%08x", x + j, a, b);
    }
  }
#if defined(ADAMPI__HW_CONVERSIONS)
  for (uint32_t x = 0; v3_cpu && x < CHUNK; x += 8) { /* the x86-64-v3 set's, 8 at a time, by the CPU */
    float got[8];
    adampi__f16x8_v3(halves + x, got);
    for (uint32_t j = 0; j < 8; j++) {
      if ((halves[x + j] & 0x7C00u) == 0x7C00u) continue; /* Inf or NaN */
      uint32_t a, b;
      float ref = adampi__from_f16(halves[x + j]);
      memcpy(&a, &got[j], 4);
      memcpy(&b, &ref, 4);
      ck_assert_msg(a == b, "adampi__f16x8_v3 widens float16 0x%04x to 0x%08x, the software to 0x%08x", x + j, a, b);
    }
  }
#endif
}
END_TEST

/* ---- the problem in 16 bits ------------------------------------------------------------------ */

typedef struct mixed_setup {
  adampi_dtype dtype;
  double max_grad_norm; /* 0: off */
  double grad_scale;
} mixed_setup;

static adampi *mixed_create(MPI_Comm comm, const problem_variant *v, const mixed_setup *m, adampi_nonfinite_policy policy)
{
  adampi_config cfg = adampi_config_defaults(v->kind);
  cfg.nonfinite = policy;
  cfg.dtype = m->dtype;
  cfg.max_grad_norm = m->max_grad_norm;
  char err[512];
  adampi *opt = problem_create_cfg(comm, v, &cfg, err, sizeof err);
  ck_assert_msg(opt != NULL, "%s", err);
  return opt;
}

/* Everything a run leaves, gathered on every rank: the fp32 parameters (the master of a 16-bit
 * handle), the state, the counters and each step's norm and clipping factor. */
typedef struct mixed_result {
  problem_result r;
  double norms[STEPS], coefs[STEPS];
  int clipped;
} mixed_result;

/* The shard's gradients of step `step` in the handle's type, loss-scaled by m->grad_scale. */
static void shard_grads(const adampi *opt, const mixed_setup *m, int step, const float *full_w, float *full_g,
                        void *out)
{
  int64_t lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  for (int i = 0; i < PROBLEM_NT; i++) {
    adampi_tensor_info t;
    adampi_tensor(opt, i, &t);
    problem_grad(&t, i, step, full_w + t.offset, full_g + t.offset);
  }
  for (int64_t k = lo; k < hi; k++) full_g[k] *= (float)m->grad_scale;
  adampi_round_to(m->dtype, full_g + lo, out, hi - lo);
}

static void mixed_run(MPI_Comm comm, const problem_variant *v, const mixed_setup *m, mixed_result *out)
{
  adampi *opt = mixed_create(comm, v, m, ADAMPI_NONFINITE_ERROR);
  int64_t N = adampi_numel(opt), lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  size_t es = adampi_dtype_size(m->dtype);
  float *w0 = malloc((size_t)(hi - lo + 1) * sizeof(float)), *full = malloc((size_t)N * sizeof(float));
  float *gfull = malloc((size_t)N * sizeof(float));
  void *params = malloc((size_t)(hi - lo + 1) * es), *grads = malloc((size_t)(hi - lo + 1) * es);
  problem_init(opt, w0);
  ck_assert_ok(opt, adampi_set_master(opt, w0, ADAMPI_PARAMS_SHARD, params)); /* a model initialised in fp32 */
  out->clipped = 0;
  for (int step = 0; step < STEPS; step++) {
    unsigned char has[PROBLEM_NT];
    problem_mask(step, has);
    for (int g = 0; g < 2; g++) {
      adampi_hparams hp = problem_hparams(v, g);
      ck_assert_ok(opt, adampi_set_lr(opt, g, hp.lr * (1.0 + 0.05 * step)));
    }
    const float *master = m->dtype == ADAMPI_FLOAT32 ? params : adampi_master_shard(opt);
    gather_full(opt, comm, master, full);
    shard_grads(opt, m, step, full, gfull, grads);
    adampi_step_options o = adampi_step_defaults();
    o.has_grad = has;
    o.grad_scale = m->grad_scale;
    ck_assert_ok(opt, adampi_step_sharded_ex(opt, params, grads, &o));
    adampi_step_info info;
    ck_assert_ok(opt, adampi_last_step(opt, &info));
    ck_assert_msg(info.applied && !info.skipped, "step %d not applied", step);
    out->norms[step] = info.grad_norm;
    out->coefs[step] = info.clip_coef;
    out->clipped += info.clip_coef < 1.0;
  }
  const float *master = m->dtype == ADAMPI_FLOAT32 ? params : adampi_master_shard(opt);
  problem_collect(opt, comm, v->kind, master, &out->r);
  /* The 16-bit parameters are the master rounded. */
  if (m->dtype != ADAMPI_FLOAT32 && hi > lo) {
    void *expect = malloc((size_t)(hi - lo) * es);
    adampi_round_to(m->dtype, master, expect, hi - lo);
    ck_assert_msg(memcmp(expect, params, (size_t)(hi - lo) * es) == 0, "the %s parameters are not the master rounded",
                  adampi_dtype_name(m->dtype));
    free(expect);
  }
  free(w0);
  free(full);
  free(gfull);
  free(params);
  free(grads);
  adampi_free(&opt);
}

/* A threshold of 11 clips most steps of the problem (norms 7.8-11.4) but not all. The scales:
 * powers of two, which the code multiplies by their reciprocal, and 3, which it divides by
 * (adampi__grad_scaling), for 16-bit gradients read in place and for float32 ones. */
static const mixed_setup invariance_setups[] = {
  {ADAMPI_BFLOAT16, 11.0, 1.0}, {ADAMPI_FLOAT16, 11.0, 1024.0}, {ADAMPI_FLOAT32, 11.0, 3.0}, {ADAMPI_BFLOAT16, 0.0, 3.0},
};
#define NSETUPS ((int)(sizeof invariance_setups / sizeof invariance_setups[0]))

START_TEST(bitwise_identical_on_every_rank_count_for_every_type)
{
  const problem_variant *v = &problem_variants[_i % 4];
  const mixed_setup *m = &invariance_setups[_i / 4];
  static mixed_result world, part;
  mixed_run(MPI_COMM_WORLD, v, m, &world);
  if (m->max_grad_norm > 0)
    ck_assert_msg(world.clipped > 0 && world.clipped < STEPS, "clipping should act at some steps and not others (%d of %d)",
                  world.clipped, STEPS);
  int P = test_size(), me = test_rank();
  char bad[512] = "";
  for (int k = 1; k < P; k++) {
    MPI_Comm sub;
    MPI_Comm_split(MPI_COMM_WORLD, me < k ? 0 : MPI_UNDEFINED, me, &sub);
    if (sub == MPI_COMM_NULL) continue;
    mixed_run(sub, v, m, &part);
    char diff[400];
    problem_compare(&world.r, &part.r, diff, sizeof diff);
    if (!bad[0] && diff[0])
      snprintf(bad, sizeof bad, "%s, variant %d, clip %g: %d vs %d ranks: %s", adampi_dtype_name(m->dtype), _i % 4,
               m->max_grad_norm, P, k, diff);
    if (!bad[0] && (memcmp(world.norms, part.norms, sizeof world.norms) || memcmp(world.coefs, part.coefs, sizeof world.coefs)))
      snprintf(bad, sizeof bad, "%s: the gradient norms or clipping factors differ between %d and %d ranks",
               adampi_dtype_name(m->dtype), P, k);
    problem_release(&part.r);
    MPI_Comm_free(&sub);
  }
  ck_assert_msg(!bad[0], "%s", bad);
  problem_release(&world.r);
}
END_TEST

/* ---- clipping ---------------------------------------------------------------------------------- */

/* One fp32 step of the problem on world with the given threshold and gradients pre-multiplied
 * by pre; returns the gathered result and the step's info. */
static void one_step(const problem_variant *v, double max_norm, float pre, problem_result *r, adampi_step_info *info,
                     double *expect_norm)
{
  mixed_setup m = {ADAMPI_FLOAT32, max_norm, 1.0};
  adampi *opt = mixed_create(MPI_COMM_WORLD, v, &m, ADAMPI_NONFINITE_ERROR);
  int64_t N = adampi_numel(opt), lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  float *w = malloc((size_t)(hi - lo + 1) * sizeof(float)), *full = malloc((size_t)N * sizeof(float));
  float *g = malloc((size_t)N * sizeof(float));
  problem_init(opt, w);
  gather_full(opt, MPI_COMM_WORLD, w, full);
  unsigned char has[PROBLEM_NT];
  problem_mask(3, has); /* some tensors without a gradient: they do not count in the norm */
  double sum = 0.0;
  for (int i = 0; i < PROBLEM_NT; i++) {
    adampi_tensor_info t;
    adampi_tensor(opt, i, &t);
    problem_grad(&t, i, 4, full + t.offset, g + t.offset);
    for (int64_t k = t.offset; k < t.offset + t.numel && has[i]; k++) sum += (double)g[k] * g[k];
  }
  *expect_norm = sqrt(sum);
  for (int64_t k = 0; k < N; k++) g[k] *= pre;
  adampi_step_options o = adampi_step_defaults();
  o.has_grad = has;
  ck_assert_ok(opt, adampi_step_sharded_ex(opt, w, g + lo, &o));
  adampi_last_step(opt, info);
  problem_collect(opt, MPI_COMM_WORLD, v->kind, w, r);
  free(w);
  free(full);
  free(g);
  adampi_free(&opt);
}

START_TEST(clipping_is_clip_grad_norm)
{
  const problem_variant *v = &problem_variants[_i];
  problem_result plain, clipped, premult, loose;
  adampi_step_info ip, ic, im, il;
  double norm;
  one_step(v, 0.0, 1.0f, &plain, &ip, &norm);
  ck_assert_msg(fabs(ip.grad_norm - norm) <= 1e-12 * norm, "grad_norm %.17g, expected %.17g (tensors with a gradient only)",
                ip.grad_norm, norm);
  ck_assert_msg(ip.clip_coef == 1.0, "no clipping, but the factor is %g", ip.clip_coef);
  double max_norm = 0.3 * norm;
  one_step(v, max_norm, 1.0f, &clipped, &ic, &norm);
  float coef = (float)(max_norm / (ic.grad_norm + 1e-6));
  ck_assert_msg(ic.clip_coef == (double)coef, "clip factor %.9g, expected max_norm / (norm + 1e-6) = %.9g", ic.clip_coef,
                (double)coef);
  ck_assert_msg(ic.grad_norm == ip.grad_norm, "the reported norm is the norm before clipping");
  /* The clipped step is the unclipped step on gradients multiplied by the same float factor. */
  one_step(v, 0.0, coef, &premult, &im, &norm);
  char diff[400];
  problem_compare(&clipped, &premult, diff, sizeof diff);
  ck_assert_msg(!diff[0], "variant %d: clipped step vs step on pre-clipped gradients: %s", _i, diff);
  /* A threshold above the norm changes nothing, bit for bit. */
  one_step(v, 2.0 * norm, 1.0f, &loose, &il, &norm);
  problem_compare(&plain, &loose, diff, sizeof diff);
  ck_assert_msg(!diff[0] && il.clip_coef == 1.0, "variant %d: an inactive threshold changed the step: %s", _i, diff);
  problem_release(&plain);
  problem_release(&clipped);
  problem_release(&premult);
  problem_release(&loose);
}
END_TEST

/* ---- the data-parallel step in 16 bits --------------------------------------------------------- */

/* Gradients that are multiples of 2^-12 below 1 in magnitude: representable in bfloat16 (8 bits)
 * only when small; use 8 significant bits so sums over ranks are exact in fp32. */
static uint16_t dp_grad(adampi_dtype dt, int rank, int64_t k)
{
  float x = (float)(((k * 37 + rank * 11) % 255) - 127) / 256.0f;
  uint16_t h;
  adampi_round_to(dt, &x, &h, 1);
  return h;
}

START_TEST(data_parallel_16_bit_step_is_the_fp32_step_on_the_mean)
{
  const adampi_dtype dt = _i % 4 < 2 ? ADAMPI_BFLOAT16 : ADAMPI_FLOAT16;
  const int shared = _i % 2; /* the step buffers, or the caller's */
  const float scale = _i < 4 ? 2.0f : 3.0f; /* multiplied by 1/2, divided by 3 (adampi__grad_scaling) */
  const problem_variant *v = &problem_variants[0];
  mixed_setup m16 = {dt, 0.0, scale}, m32 = {ADAMPI_FLOAT32, 0.0, 1.0};
  adampi *o16 = mixed_create(MPI_COMM_WORLD, v, &m16, ADAMPI_NONFINITE_ERROR);
  adampi *o32 = mixed_create(MPI_COMM_WORLD, v, &m32, ADAMPI_NONFINITE_ERROR);
  int64_t N = adampi_numel(o16), lo, hi;
  adampi_shard(o16, adampi_rank(o16), &lo, &hi);
  int P = test_size(), me = test_rank();
  uint16_t *p16 = NULL, *g16 = NULL;
  if (shared) {
    ck_assert_ok(o16, adampi_alloc_step_buffers_ex(o16, (void **)&p16, (void **)&g16));
  } else {
    p16 = malloc((size_t)N * 2);
    g16 = malloc((size_t)N * 2);
  }
  float *w32 = malloc((size_t)N * sizeof(float)), *mean = malloc((size_t)N * sizeof(float));
  float *shard = malloc((size_t)(hi - lo + 1) * sizeof(float));
  uint64_t seed = 5;
  for (int64_t k = 0; k < N; k++) {
    float x = 0.5f * test_uniform(&seed);
    adampi_round_to(dt, &x, &p16[k], 1);
    adampi_widen(dt, &p16[k], &w32[k], 1); /* the same start: the master starts from the params */
  }
  for (int step = 0; step < 3; step++) {
    for (int64_t k = 0; k < N; k++) {
      g16[k] = dp_grad(dt, me + step, k);
      double sum = 0;
      for (int r = 0; r < P; r++) {
        float x;
        uint16_t h = dp_grad(dt, r + step, k);
        adampi_widen(dt, &h, &x, 1);
        sum += x;
      }
      mean[k] = (float)sum / (float)P / scale; /* the sum is exact; then / P, then / grad_scale */
    }
    adampi_step_options o = adampi_step_defaults();
    o.grad_scale = scale;
    ck_assert_ok(o16, adampi_step_ex(o16, p16, g16, &o));
    ck_assert_ok(o32, adampi_step_sharded(o32, w32 + lo, mean + lo, NULL));
    memcpy(shard, w32 + lo, (size_t)(hi - lo) * sizeof(float));
    gather_full(o32, MPI_COMM_WORLD, shard, w32);
  }
  const float *master = adampi_master_shard(o16);
  for (int64_t k = lo; k < hi; k++)
    ck_assert_msg(memcmp(&master[k - lo], &w32[k], 4) == 0, "%s, %s buffers: master %.9g vs fp32 step %.9g at %lld",
                  adampi_dtype_name(dt), shared ? "step" : "caller's", master[k - lo], w32[k], (long long)k);
  for (int64_t k = 0; k < N; k++) {
    uint16_t expect;
    adampi_round_to(dt, &w32[k], &expect, 1);
    ck_assert_msg(p16[k] == expect, "%s: params[%lld] = 0x%04x on rank %d, the master rounded is 0x%04x",
                  adampi_dtype_name(dt), (long long)k, p16[k], me, expect);
  }
  adampi_profile prof;
  ck_assert_ok(o16, adampi_get_profile(o16, &prof));
  ck_assert_int_eq(prof.master_bytes, (hi - lo) * 4);
  ck_assert_int_eq(prof.gradient_bytes, N * 2);
  if (!shared) free(p16), free(g16);
  free(w32);
  free(mean);
  free(shard);
  adampi_free(&o16);
  adampi_free(&o32);
}
END_TEST

/* Every finite 16-bit value as a gradient (_i / 3: bfloat16, float16; _i % 3: a scale of 1, of 4,
 * which multiplies by 1/4, and of 3, which divides), shuffled into the rows of a matrix of 40
 * columns (two blocks of 16 and a tail of 8): the 16-bit handle reads them in place (the statistics
 * pass widens them inside its row sums where the CPU has AVX2 or AVX-512, float16 by F16C,
 * and the update by the kernels' own widening) and must compute the bits of a float32 handle given
 * the same gradients widened: the tensor's diagnostics (the largest row cosine, the tensor's
 * cosine and norms, from the statistics pass's sums), the step's norm, the master and the state.
 * Subnormals, signed zeros and each type's largest values included. */
START_TEST(every_finite_16_bit_gradient_gives_the_float32_step)
{
  const adampi_dtype dt = _i / 3 ? ADAMPI_FLOAT16 : ADAMPI_BFLOAT16;
  const float scales[3] = {1.0f, 4.0f, 3.0f}, scale = scales[_i % 3];
  enum { COLS = 40 };
  static uint16_t values[1 << 16];
  int64_t n = 0;
  for (uint32_t x = 0; x < (1u << 16); x++) {
    uint16_t h = (uint16_t)x;
    float f;
    adampi_widen(dt, &h, &f, 1);
    if (isfinite(f)) values[n++] = h;
  }
  uint64_t seed = 11;
  for (int64_t k = n - 1; k > 0; k--) { /* the same shuffle on every rank */
    int64_t j = (int64_t)(test_rng(&seed) % (uint64_t)(k + 1));
    uint16_t t = values[k];
    values[k] = values[j], values[j] = t;
  }
  const int64_t shape[2] = {(n + COLS - 1) / COLS, COLS}, N = shape[0] * COLS;
  adampi *opt[2]; /* [0] 16-bit, [1] float32 */
  char err[512];
  for (int h = 0; h < 2; h++) {
    adampi_config cfg = adampi_config_defaults(ADAMPI_ADAMP);
    cfg.dtype = h ? ADAMPI_FLOAT32 : dt;
    ck_assert_msg(adampi_create(MPI_COMM_WORLD, &cfg, &opt[h], err, sizeof err) == ADAMPI_OK, "%s", err);
    adampi_hparams hp = problem_hparams(&problem_variants[0], 0);
    ck_assert_ok(opt[h], adampi_add_group(opt[h], &hp, NULL));
    ck_assert_ok(opt[h], adampi_add_tensor(opt[h], "every_value", 2, shape, 0, NULL));
    ck_assert_ok(opt[h], adampi_commit(opt[h]));
  }
  int64_t lo, hi;
  adampi_shard(opt[0], adampi_rank(opt[0]), &lo, &hi);
  const size_t m = (size_t)(hi - lo) + 1;
  uint16_t *p16 = malloc(m * 2), *g16 = malloc(m * 2);
  float *w32 = malloc(m * sizeof(float)), *g32 = malloc(m * sizeof(float));
  seed = 12;
  for (int64_t k = 0; k < N; k++) {
    float x = 0.5f * test_uniform(&seed);
    uint16_t xh, gh = k < n ? values[k] : 0;
    if (k < lo || k >= hi) continue;
    adampi_round_to(dt, &x, &xh, 1);
    adampi_widen(dt, &xh, &w32[k - lo], 1); /* a value of the type: both handles start alike */
    g16[k - lo] = gh;
    adampi_widen(dt, &gh, &g32[k - lo], 1);
  }
  ck_assert_ok(opt[0], adampi_set_master(opt[0], w32, ADAMPI_PARAMS_SHARD, p16));
  adampi_step_options o = adampi_step_defaults();
  o.grad_scale = scale;
  ck_assert_ok(opt[0], adampi_step_sharded_ex(opt[0], p16, g16, &o));
  ck_assert_ok(opt[1], adampi_step_sharded_ex(opt[1], w32, g32, &o));
  adampi_step_info info[2];
  adampi_diag d[2];
  for (int h = 0; h < 2; h++) {
    ck_assert_ok(opt[h], adampi_last_step(opt[h], &info[h]));
    ck_assert_msg(info[h].applied, "%s step not applied", h ? "float32" : adampi_dtype_name(dt));
    ck_assert_ok(opt[h], adampi_diag_get(opt[h], 0, &d[h]));
  }
  const char *what = adampi_dtype_name(dt);
  const double got[4] = {d[0].cos_channel, d[0].cos_layer, d[0].weight_norm, info[0].grad_norm};
  const double want[4] = {d[1].cos_channel, d[1].cos_layer, d[1].weight_norm, info[1].grad_norm};
  const char *names[4] = {"largest row cosine", "tensor cosine", "weight norm", "gradient norm"};
  for (int k = 0; k < 4; k++)
    ck_assert_msg(memcmp(&got[k], &want[k], sizeof got[k]) == 0, "%s, scale %g: %s %.17g, float32 %.17g", what,
                  (double)scale, names[k], got[k], want[k]);
  const float *a[3] = {adampi_master_shard(opt[0]), adampi_state_shard(opt[0], ADAMPI_STATE_EXP_AVG),
                       adampi_state_shard(opt[0], ADAMPI_STATE_EXP_AVG_SQ)};
  const float *b[3] = {w32, adampi_state_shard(opt[1], ADAMPI_STATE_EXP_AVG),
                       adampi_state_shard(opt[1], ADAMPI_STATE_EXP_AVG_SQ)};
  const char *arrays[3] = {"master", "exp_avg", "exp_avg_sq"};
  for (int s = 0; s < 3; s++)
    for (int64_t k = 0; k < hi - lo; k++)
      ck_assert_msg(memcmp(&a[s][k], &b[s][k], sizeof(float)) == 0 || (isnan(a[s][k]) && isnan(b[s][k])),
                    "%s, scale %g: %s[%lld] = %a, float32 %a (gradient 0x%04x)", what, (double)scale, arrays[s],
                    (long long)(lo + k), (double)a[s][k], (double)b[s][k], g16[k]);
  free(p16), free(g16), free(w32), free(g32);
  adampi_free(&opt[0]);
  adampi_free(&opt[1]);
}
END_TEST

/* ---- overflow and bad input -------------------------------------------------------------------- */

typedef struct snapshot {
  problem_result r;
  void *params;
  size_t bytes;
} snapshot;

static void take(const adampi *opt, const problem_variant *v, const void *params, size_t bytes, snapshot *s)
{
  const float *master = adampi_master_shard(opt);
  problem_collect(opt, MPI_COMM_WORLD, v->kind, master ? master : params, &s->r);
  s->params = malloc(bytes + 1);
  memcpy(s->params, params, bytes);
  s->bytes = bytes;
}

static void assert_unchanged(const snapshot *a, const snapshot *b, const char *what)
{
  char diff[400];
  problem_result r = b->r;
  r.skipped = a->r.skipped; /* a skipped step counts itself, and changes nothing else */
  problem_compare(&a->r, &r, diff, sizeof diff);
  ck_assert_msg(!diff[0], "%s changed the master or the state: %s", what, diff);
  ck_assert_msg(memcmp(a->params, b->params, a->bytes) == 0, "%s changed the parameters", what);
}

static void release(snapshot *s)
{
  problem_release(&s->r);
  free(s->params);
}

/* A 16-bit handle of the problem on every rank, its master set from fp32 values, with buffers for
 * the shard and the full fp32 parameters and gradients. */
typedef struct shard16 {
  adampi *opt;
  int64_t N, lo, hi;
  size_t n;
  float *w, *full, *gfull;
  uint16_t *params, *grads;
} shard16;

static void shard16_open(shard16 *f, const problem_variant *v, const mixed_setup *m, adampi_nonfinite_policy policy)
{
  f->opt = mixed_create(MPI_COMM_WORLD, v, m, policy);
  f->N = adampi_numel(f->opt);
  adampi_shard(f->opt, adampi_rank(f->opt), &f->lo, &f->hi);
  f->n = (size_t)(f->hi - f->lo);
  f->w = malloc((f->n + 1) * 4), f->full = malloc((size_t)f->N * 4), f->gfull = malloc((size_t)f->N * 4);
  f->params = malloc((f->n + 1) * 2), f->grads = malloc((f->n + 1) * 2);
  problem_init(f->opt, f->w);
  ck_assert_ok(f->opt, adampi_set_master(f->opt, f->w, ADAMPI_PARAMS_SHARD, f->params));
}

/* The shard's 16-bit gradients of step `step` of setup m, from the current master. */
static void shard16_grads(shard16 *f, const mixed_setup *m, int step)
{
  gather_full(f->opt, MPI_COMM_WORLD, adampi_master_shard(f->opt), f->full);
  shard_grads(f->opt, m, step, f->full, f->gfull, f->grads);
}

static void shard16_close(shard16 *f)
{
  free(f->w), free(f->full), free(f->gfull), free(f->params), free(f->grads);
  adampi_free(&f->opt);
}

/* _i / 2 == 0: float16 gradients that overflow; 1, 2: bfloat16, float16 gradients with Inf and NaN
 * among them, in the tensors of more than one dimension only (every 7th element, in their rows'
 * whole blocks of 16, on the ranks that hold such elements): the vector loops of the rows that the
 * statistics pass reads in place (adampi__row_sums16, where the CPU has AVX2 or AVX-512; the
 * AVX2 loop in test_mixed_avx2clones). */
START_TEST(float16_overflow_skips_or_fails_and_changes_nothing)
{
  const adampi_nonfinite_policy policy = _i % 2 ? ADAMPI_NONFINITE_SKIP : ADAMPI_NONFINITE_ERROR;
  const int spoil = _i / 2 != 0, bf16 = _i / 2 == 1;
  const uint16_t inf = bf16 ? 0x7F80 : 0x7C00, nan = bf16 ? 0xFFC1 : 0xFC01; /* NaNs with the quiet bit clear */
  const problem_variant *v = &problem_variants[0];
  mixed_setup m = {bf16 ? ADAMPI_BFLOAT16 : ADAMPI_FLOAT16, 1.0, 65536.0};
  shard16 f;
  shard16_open(&f, v, &m, policy);
  adampi *opt = f.opt;
  uint16_t *params = f.params, *grads = f.grads;
  size_t n = f.n;
  adampi_step_options o = adampi_step_defaults();
  o.grad_scale = m.grad_scale;
  shard16_grads(&f, &m, 0);
  ck_assert_ok(opt, adampi_step_sharded_ex(opt, params, grads, &o)); /* one good step first */
  snapshot before, after;
  take(opt, v, params, n * 2, &before);
  /* A loss scale of 2^24 makes the gradients overflow float16 on the last rank only. */
  mixed_setup big = m;
  big.grad_scale = test_rank() == test_size() - 1 ? 16777216.0 : m.grad_scale;
  shard16_grads(&f, spoil ? &m : &big, 1);
  int hit = 0;
  for (int i = 0; spoil && i < PROBLEM_NT; i++) {
    adampi_tensor_info t;
    adampi_tensor(opt, i, &t);
    if (t.ndim < 2) continue;
    const int64_t row = t.numel / t.shape[0], blocks = row - row % 16; /* the rows' whole blocks of 16 */
    for (int64_t k = t.offset; k < t.offset + t.numel; k++)
      if (k >= f.lo && k < f.hi && k % 7 == 0 && (k - t.offset) % row < blocks)
        grads[k - f.lo] = (k / 7) % 2 ? inf : nan, hit = 1;
  }
  int any_hit = 0;
  MPI_Allreduce(&hit, &any_hit, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  ck_assert_msg(!spoil || any_hit, "no element of a matrix to spoil");
  adampi_status st = adampi_step_sharded_ex(opt, params, grads, &o);
  adampi_step_info info;
  adampi_last_step(opt, &info);
  if (policy == ADAMPI_NONFINITE_SKIP) {
    ck_assert_msg(st == ADAMPI_OK && info.skipped && !info.applied, "skip policy: status %s, skipped %d",
                  adampi_strerror(st), info.skipped);
    ck_assert_int_eq(adampi_steps_skipped(opt), 1);
  } else {
    ck_assert_msg(st == ADAMPI_ERR_NONFINITE && strstr(adampi_last_error(opt), "NaN or Inf") != NULL,
                  "error policy: %s: %s", adampi_strerror(st), adampi_last_error(opt));
  }
  ck_assert_msg(info.nonfinite_tensor >= 0, "the tensor with the overflow is named");
  ck_assert_msg(!isfinite(info.grad_norm), "the norm of an overflowed step is not finite (%g)", info.grad_norm);
  take(opt, v, params, n * 2, &after);
  assert_unchanged(&before, &after, spoil ? "a 16-bit step with Inf and NaN" : "an overflowed float16 step");
  /* The loss scaler's answer to it, and its growth. */
  adampi_loss_scaler ls = adampi_loss_scaler_defaults();
  ck_assert(ls.scale == 65536.0 && ls.growth_interval == 2000);
  adampi_loss_scaler_update(&ls, 1);
  ck_assert(ls.scale == 32768.0 && ls.good_steps == 0);
  for (int k = 0; k < 1999; k++) adampi_loss_scaler_update(&ls, 0);
  ck_assert(ls.scale == 32768.0 && ls.good_steps == 1999);
  adampi_loss_scaler_update(&ls, 0);
  ck_assert(ls.scale == 65536.0 && ls.good_steps == 0);
  release(&before);
  release(&after);
  shard16_close(&f);
}
END_TEST

START_TEST(bad_input_is_refused_with_nothing_changed)
{
  const problem_variant *v = &problem_variants[2];
  char err[512] = "";
  adampi *bad = NULL;
  adampi_config cfg = adampi_config_defaults(v->kind);
  cfg.dtype = (adampi_dtype)3;
  ck_assert_int_eq(adampi_create(MPI_COMM_WORLD, &cfg, &bad, err, sizeof err), ADAMPI_ERR_ARG);
  ck_assert_msg(strstr(err, "dtype") != NULL, "the message names dtype: %s", err);
  cfg = adampi_config_defaults(v->kind);
  const double bad_norms[] = {-1.0, NAN, INFINITY};
  for (int k = 0; k < 3; k++) {
    cfg.max_grad_norm = bad_norms[k];
    ck_assert_int_eq(adampi_create(MPI_COMM_WORLD, &cfg, &bad, err, sizeof err), ADAMPI_ERR_ARG);
    ck_assert_msg(strstr(err, "max_grad_norm") != NULL, "the message names max_grad_norm: %s", err);
  }
  /* Element types that differ across ranks: refused at commit. */
  if (test_size() > 1) {
    mixed_setup m = {test_rank() == 1 ? ADAMPI_FLOAT16 : ADAMPI_BFLOAT16, 0.0, 1.0};
    cfg = adampi_config_defaults(v->kind);
    cfg.dtype = m.dtype;
    ck_assert(adampi_create(MPI_COMM_WORLD, &cfg, &bad, err, sizeof err) == ADAMPI_OK);
    adampi_hparams hp = problem_hparams(v, 0);
    adampi_add_group(bad, &hp, NULL);
    int64_t shape[1] = {10};
    adampi_add_tensor(bad, "x", 1, shape, 0, NULL);
    ck_assert_int_eq(adampi_commit(bad), ADAMPI_ERR_MISMATCH);
    ck_assert_msg(strstr(adampi_last_error(bad), "element type") != NULL, "%s", adampi_last_error(bad));
    adampi_free(&bad);
  }

  mixed_setup m = {ADAMPI_BFLOAT16, 1.0, 1.0};
  shard16 f;
  shard16_open(&f, v, &m, ADAMPI_NONFINITE_ERROR);
  adampi *opt = f.opt;
  uint16_t *params = f.params, *grads = f.grads;
  size_t n = f.n;
  shard16_grads(&f, &m, 0);
  ck_assert_ok(opt, adampi_step_sharded_ex(opt, params, grads, NULL));
  snapshot before, after;
  take(opt, v, params, n * 2, &before);

  ck_assert_int_eq(adampi_set_max_grad_norm(opt, -0.5), ADAMPI_ERR_HPARAM);
  ck_assert_msg(strstr(adampi_last_error(opt), "max_grad_norm") != NULL, "%s", adampi_last_error(opt));
  ck_assert_int_eq(adampi_set_max_grad_norm(opt, NAN), ADAMPI_ERR_HPARAM);
  const double bad_scales[] = {0.0, -2.0, NAN, INFINITY};
  for (int k = 0; k < 4; k++) {
    adampi_step_options o = adampi_step_defaults();
    o.grad_scale = test_rank() == 0 ? bad_scales[k] : 1.0; /* on one rank only: every rank fails */
    ck_assert_int_eq(adampi_step_sharded_ex(opt, params, grads, &o), ADAMPI_ERR_ARG);
    ck_assert_msg(test_rank() != 0 || strstr(adampi_last_error(opt), "grad_scale") != NULL, "%s", adampi_last_error(opt));
  }
  if (test_size() > 1) {
    adampi_step_options o = adampi_step_defaults();
    o.grad_scale = test_rank() == 0 ? 2.0 : 1.0;
    ck_assert_int_eq(adampi_step_sharded_ex(opt, params, grads, &o), ADAMPI_ERR_MISMATCH);
    ck_assert_ok(opt, adampi_set_max_grad_norm(opt, test_rank() == 0 ? 2.0 : 1.0));
    ck_assert_int_eq(adampi_step_sharded_ex(opt, params, grads, NULL), ADAMPI_ERR_MISMATCH);
    ck_assert_msg(strstr(adampi_last_error(opt), "max_grad_norm") != NULL, "%s", adampi_last_error(opt));
    ck_assert_ok(opt, adampi_set_max_grad_norm(opt, 1.0));
  }
  /* A NaN master value on one rank: refused everywhere, naming the tensor. */
  float *nanw = malloc((n + 1) * 4);
  memcpy(nanw, adampi_master_shard(opt) ? adampi_master_shard(opt) : f.w, n * 4);
  if (test_rank() == 0 && n > 0) nanw[n / 2] = NAN;
  ck_assert_int_eq(adampi_set_master(opt, nanw, ADAMPI_PARAMS_SHARD, params), ADAMPI_ERR_NONFINITE);
  ck_assert_int_eq(adampi_set_master(opt, NULL, ADAMPI_PARAMS_FULL, params), ADAMPI_ERR_ARG);
  take(opt, v, params, n * 2, &after);
  assert_unchanged(&before, &after, "the refused calls");
  release(&before);
  release(&after);
  free(nanw);
  shard16_close(&f);
}
END_TEST

/* ---- the gradient scale ------------------------------------------------------------------------ */

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define HAVE_MXCSR 1
#endif

/* The scales adampi__grad_scaling multiplies by the reciprocal of: every power of two from 2^-126
 * to 2^126 and nothing else. There, for every float x (the bits of every bfloat16 value, with
 * each pattern's low half set too: every exponent, both signs, subnormals, Inf), x * q gives the
 * bits of x / s, in the default floating-point mode and with denormals-are-zero and
 * flush-to-zero set, where a subnormal q (2^127's reciprocal) would read as 0. Elsewhere it divides
 * by s itself. */
START_TEST(gradient_scale_multiplies_exactly_where_it_gives_the_division_bits)
{
  float scales[256 + 8];
  int ns = 0;
  for (uint32_t e = 0; e < 255; e++) scales[ns++] = from_bits(e ? e << 23 : 1u); /* 2^-149 (subnormal), 2^-126 .. 2^127 */
  const float others[] = {3.0f, 0.75f, 1.5f * 65536.0f, 0x1.000002p0f, 0x1.fffffep127f, 0x1p-127f, 0x1p-149f * 3.0f};
  for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) scales[ns++] = others[i];
#ifdef HAVE_MXCSR
  const unsigned int mode = _mm_getcsr();
  const int modes = 2;
#else
  const int modes = 1;
#endif
  for (int i = 0; i < ns; i++) {
    const float s = scales[i];
    uint32_t u;
    memcpy(&u, &s, 4);
    const int pow2 = (u & 0x7FFFFFu) == 0 && (u >> 23) >= 1 && (u >> 23) <= 253;
    float q;
    const int mul = adampi__grad_scaling(s, &q);
    ck_assert_msg(mul == pow2, "scale %a: %s, expected %s", (double)s, mul ? "multiplies" : "divides",
                  pow2 ? "a multiplication" : "a division");
    if (!mul) {
      ck_assert_msg(q == s, "scale %a: divides by %a", (double)s, (double)q);
      continue;
    }
    ck_assert_msg(q * s == 1.0f, "scale %a: reciprocal %a", (double)s, (double)q);
    for (int m = 0; m < modes; m++) {
#ifdef HAVE_MXCSR
      if (m) _mm_setcsr(mode | 0x8040u); /* FTZ and DAZ */
#endif
      for (uint32_t h = 0; h < 0x20000u; h++) {
        volatile float x = from_bits((h >> 1) << 16 | (h & 1 ? 0x8001u : 0u)), d = x / s, p = x * q;
        uint32_t a, b;
        float dv = d, pv = p;
        memcpy(&a, &dv, 4);
        memcpy(&b, &pv, 4);
        if (a != b && !(isnan(dv) && isnan(pv))) {
#ifdef HAVE_MXCSR
          _mm_setcsr(mode);
#endif
          ck_abort_msg("scale %a%s: %a / s = 0x%08x but * (1/s) = 0x%08x", (double)s, m ? " (FTZ, DAZ)" : "",
                       (double)x, a, b);
        }
      }
#ifdef HAVE_MXCSR
      _mm_setcsr(mode);
#endif
    }
  }
}
END_TEST

static Suite *make_suite(void)
{
  Suite *s = suite_create("mixed");
  TCase *tc = tcase_create("rounding");
  tcase_add_loop_test(tc, rounding_matches_the_ieee_bits_on_every_special_case, 0,
                      (int)(sizeof rounding_cases / sizeof rounding_cases[0]));
  tcase_add_test(tc, nan_stays_nan_and_every_float16_round_trips);
  tcase_add_test(tc, float16_conversions_give_the_software_bits_for_every_value);
  tcase_add_test(tc, gradient_scale_multiplies_exactly_where_it_gives_the_division_bits);
  suite_add_tcase(s, tc);
  tc = tcase_create("steps");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, bitwise_identical_on_every_rank_count_for_every_type, 0, 4 * NSETUPS);
  tcase_add_loop_test(tc, clipping_is_clip_grad_norm, 0, 4);
  tcase_add_loop_test(tc, data_parallel_16_bit_step_is_the_fp32_step_on_the_mean, 0, 8);
  tcase_add_loop_test(tc, every_finite_16_bit_gradient_gives_the_float32_step, 0, 6);
  tcase_add_loop_test(tc, float16_overflow_skips_or_fails_and_changes_nothing, 0, 6);
  tcase_add_test(tc, bad_input_is_refused_with_nothing_changed);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) { return run_mpi_suite(argc, argv, make_suite); }
