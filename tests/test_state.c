/*
 * test_state.c - adampi_set_state and adampi_allgather: state handed in round-trips exactly and
 * steps on as the original would; every refusal is the same status on every rank, names the
 * problem and changes nothing.
 */
#include "mpi_check.h"

#include <math.h>

static const int64_t shape_w[2] = {5, 7}, shape_b[1] = {6};

static adampi *make(adampi_kind kind)
{
  adampi_config cfg = adampi_config_defaults(kind);
  adampi *opt = NULL;
  ck_assert_int_eq(adampi_create(MPI_COMM_WORLD, &cfg, &opt, NULL, 0), ADAMPI_OK);
  adampi_hparams hp = kind == ADAMPI_ADAMP ? adampi_adamp_defaults() : adampi_sgdp_defaults(0.1);
  if (kind == ADAMPI_SGDP) hp.momentum = 0.9;
  hp.weight_decay = 1e-2;
  int g;
  ck_assert_int_eq(adampi_add_group(opt, &hp, &g), ADAMPI_OK);
  ck_assert_int_eq(adampi_add_tensor(opt, "w", 2, shape_w, g, NULL), ADAMPI_OK);
  ck_assert_int_eq(adampi_add_tensor(opt, "b", 1, shape_b, g, NULL), ADAMPI_OK);
  ck_assert_int_eq(adampi_commit(opt), ADAMPI_OK);
  return opt;
}

static void fill(float *x, int64_t n, uint64_t seed)
{
  for (int64_t i = 0; i < n; i++) x[i] = test_uniform(&seed);
}

/* Take steps with gradients of seed, on the full buffers. */
static void steps(adampi *opt, float *w, int count, uint64_t seed)
{
  int64_t n = adampi_numel(opt);
  float *g = malloc((size_t)n * sizeof *g);
  for (int k = 0; k < count; k++) {
    fill(g, n, seed + (uint64_t)k);
    ck_assert_int_eq(adampi_step(opt, w, g, NULL), ADAMPI_OK);
  }
  free(g);
}

/* This rank's shard of state kind s as a fresh copy (NULL for an empty shard). */
static float *copy_state(adampi *opt, adampi_state_kind s)
{
  int64_t lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  const float *x = adampi_state_shard(opt, s);
  float *c = malloc((size_t)(hi - lo + 1) * sizeof *c);
  if (hi > lo) memcpy(c, x, (size_t)(hi - lo) * sizeof *c);
  return c;
}

static int same_state(adampi *a, adampi *b, adampi_state_kind s)
{
  int64_t lo, hi;
  adampi_shard(a, adampi_rank(a), &lo, &hi);
  return hi == lo || memcmp(adampi_state_shard(a, s), adampi_state_shard(b, s), (size_t)(hi - lo) * sizeof(float)) == 0;
}

START_TEST(adamp_state_round_trips_and_steps_on_alike)
{
  adampi *a = make(ADAMPI_ADAMP), *b = make(ADAMPI_ADAMP);
  int64_t n = adampi_numel(a);
  float *wa = malloc((size_t)n * sizeof *wa), *wb = malloc((size_t)n * sizeof *wb);
  fill(wa, n, 1);
  steps(a, wa, 3, 10);
  memcpy(wb, wa, (size_t)n * sizeof *wb);
  float *m = copy_state(a, ADAMPI_STATE_EXP_AVG), *v = copy_state(a, ADAMPI_STATE_EXP_AVG_SQ);
  int64_t ts[2] = {adampi_tensor_step(a, 0), adampi_tensor_step(a, 1)};
  adampi_state_in in = {.exp_avg = m, .exp_avg_sq = v, .tensor_steps = ts, .steps_taken = adampi_steps_taken(a),
                        .steps_skipped = 0};
  ck_assert_int_eq(adampi_set_state(b, &in), ADAMPI_OK);
  ck_assert(same_state(a, b, ADAMPI_STATE_EXP_AVG) && same_state(a, b, ADAMPI_STATE_EXP_AVG_SQ));
  ck_assert_int_eq(adampi_tensor_step(b, 0), 3);
  ck_assert_int_eq(adampi_steps_taken(b), 3);
  steps(a, wa, 2, 20);
  steps(b, wb, 2, 20);
  ck_assert(memcmp(wa, wb, (size_t)n * sizeof *wa) == 0);
  ck_assert(same_state(a, b, ADAMPI_STATE_EXP_AVG) && same_state(a, b, ADAMPI_STATE_EXP_AVG_SQ));
  free(m), free(v), free(wa), free(wb);
  adampi_free(&a), adampi_free(&b);
}
END_TEST

START_TEST(allgather_shares_every_shard)
{
  adampi *a = make(ADAMPI_SGDP);
  int64_t n = adampi_numel(a), lo, hi;
  adampi_shard(a, adampi_rank(a), &lo, &hi);
  float *x = calloc((size_t)n, sizeof *x);
  for (int64_t i = lo; i < hi; i++) x[i] = (float)i + 0.5f;
  ck_assert_int_eq(adampi_allgather(a, x), ADAMPI_OK);
  for (int64_t i = 0; i < n; i++) ck_assert_float_eq(x[i], (float)i + 0.5f);
  /* NULL on one rank: every rank refuses, before any exchange. */
  adampi_status st = adampi_allgather(a, test_rank() == test_size() - 1 ? NULL : x);
  ck_assert_int_eq(st, ADAMPI_ERR_ARG);
  ck_assert_ptr_nonnull(strstr(adampi_last_error(a), "full is NULL"));
  free(x);
  adampi_free(&a);
}
END_TEST

/* One bad field on one rank (the last): every rank gets status and a message with `word`; nothing
 * changes anywhere. */
static void refused(adampi_kind kind, int what, adampi_status expect, const char *word)
{
  adampi *a = make(kind);
  int64_t n = adampi_numel(a), lo, hi;
  adampi_shard(a, adampi_rank(a), &lo, &hi);
  float *w = malloc((size_t)n * sizeof *w);
  fill(w, n, 2);
  steps(a, w, 2, 30);
  adampi_state_kind s0 = kind == ADAMPI_ADAMP ? ADAMPI_STATE_EXP_AVG : ADAMPI_STATE_MOMENTUM;
  float *x = copy_state(a, s0), *y = kind == ADAMPI_ADAMP ? copy_state(a, ADAMPI_STATE_EXP_AVG_SQ) : NULL;
  float *before0 = copy_state(a, s0);
  int64_t ts[2] = {2, 2};
  adampi_state_in in = {.tensor_steps = ts, .steps_taken = 2};
  if (kind == ADAMPI_ADAMP) in.exp_avg = x, in.exp_avg_sq = y;
  else in.momentum = x;
  int me = test_rank() == test_size() - 1;
  if (me) {
    if (what == 0 && hi > lo) x[0] = NAN;
    if (what == 1 && hi > lo && y) y[hi - lo - 1] = -1.0f;
    if (what == 2) ts[1] = 5; /* counters that differ across ranks (or a changed count on 1 rank) */
    if (what == 3) ts[0] = -1;
    if (what == 4) in.exp_avg = in.momentum = NULL, in.exp_avg_sq = NULL;
    if (what == 5) in.exp_avg = x; /* the other kind's array */
  }
  adampi_status st = adampi_set_state(a, &in);
  if (test_size() == 1 && what == 2) expect = ADAMPI_OK; /* one rank cannot disagree */
  ck_assert_int_eq(st, expect);
  if (expect != ADAMPI_OK) {
    ck_assert_msg(strstr(adampi_last_error(a), word) != NULL, "%s", adampi_last_error(a));
    ck_assert(hi == lo || memcmp(adampi_state_shard(a, s0), before0, (size_t)(hi - lo) * sizeof(float)) == 0);
    ck_assert_int_eq(adampi_tensor_step(a, 1), 2);
  }
  free(x), free(y), free(before0), free(w);
  adampi_free(&a);
}

START_TEST(refusals_change_nothing)
{
  int64_t lo, hi;
  adampi *probe = make(ADAMPI_ADAMP);
  adampi_shard(probe, test_size() - 1, &lo, &hi);
  int last_has_elements = hi > lo;
  adampi_free(&probe);
  if (last_has_elements) {
    refused(ADAMPI_ADAMP, 0, ADAMPI_ERR_NONFINITE, "exp_avg of tensor");
    refused(ADAMPI_ADAMP, 1, ADAMPI_ERR_ARG, "exp_avg_sq of tensor 'b' holds a negative value");
    refused(ADAMPI_SGDP, 0, ADAMPI_ERR_NONFINITE, "momentum of tensor");
    refused(ADAMPI_ADAMP, 4, ADAMPI_ERR_ARG, "is NULL but the shard holds");
  }
  refused(ADAMPI_ADAMP, 2, ADAMPI_ERR_MISMATCH, "different step counters");
  refused(ADAMPI_SGDP, 3, ADAMPI_ERR_ARG, "outside 0..2^53");
  refused(ADAMPI_SGDP, 5, ADAMPI_ERR_ARG, "given to an SGDP optimizer");
}
END_TEST

START_TEST(before_commit)
{
  adampi_config cfg = adampi_config_defaults(ADAMPI_ADAMP);
  adampi *a = NULL;
  ck_assert_int_eq(adampi_create(MPI_COMM_WORLD, &cfg, &a, NULL, 0), ADAMPI_OK);
  adampi_state_in in = {0};
  float x = 0;
  ck_assert_int_eq(adampi_set_state(a, &in), ADAMPI_ERR_STATE);
  ck_assert_int_eq(adampi_allgather(a, &x), ADAMPI_ERR_STATE);
  ck_assert_int_eq(adampi_set_state(NULL, &in), ADAMPI_ERR_ARG);
  adampi_free(&a);
}
END_TEST

static Suite *make_suite(void)
{
  Suite *s = suite_create("state");
  TCase *tc = tcase_create("state");
  tcase_set_timeout(tc, 0);
  tcase_add_test(tc, adamp_state_round_trips_and_steps_on_alike);
  tcase_add_test(tc, allgather_shares_every_shard);
  tcase_add_test(tc, refusals_change_nothing);
  tcase_add_test(tc, before_commit);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) { return run_mpi_suite(argc, argv, make_suite); }
