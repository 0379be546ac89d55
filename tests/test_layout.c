/*
 * test_layout.c - registration, agreement across ranks and sharding: cuts only between channel
 * rows of tensors with ndim > 1, balanced shards, more ranks than rows, and mismatched
 * registrations that every rank reports with the same message and without hanging.
 */
#include "mpi_check.h"

static adampi *make(adampi_kind kind)
{
  adampi_config cfg = adampi_config_defaults(kind);
  adampi *opt = NULL;
  char err[256];
  ck_assert_int_eq(adampi_create(MPI_COMM_WORLD, &cfg, &opt, err, sizeof err), ADAMPI_OK);
  adampi_hparams hp = kind == ADAMPI_ADAMP ? adampi_adamp_defaults() : adampi_sgdp_defaults(0.1);
  ck_assert_ok(opt, adampi_add_group(opt, &hp, NULL));
  return opt;
}

static void add(adampi *opt, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
  int64_t shape[3] = {d0, d1, d2};
  ck_assert_ok(opt, adampi_add_tensor(opt, name, ndim, shape, 0, NULL));
}

/* Every shard boundary falls between rows of tensors with ndim > 1; shards tile [0, N). */
static void check_cuts(const adampi *opt)
{
  int P = adampi_size(opt);
  int64_t prev = 0, N = adampi_numel(opt);
  for (int r = 0; r < P; r++) {
    int64_t lo, hi;
    ck_assert_int_eq(adampi_shard(opt, r, &lo, &hi), ADAMPI_OK);
    ck_assert_msg(lo == prev && hi >= lo, "shard %d is [%lld, %lld) after %lld", r, (long long)lo, (long long)hi,
                  (long long)prev);
    prev = hi;
    for (int i = 0; i < adampi_num_tensors(opt); i++) {
      adampi_tensor_info t;
      adampi_tensor(opt, i, &t);
      if (t.ndim < 2 || hi <= t.offset || hi >= t.offset + t.numel) continue;
      int64_t row = t.numel / t.shape[0];
      ck_assert_msg((hi - t.offset) % row == 0, "cut %lld inside a row of '%s' (rows of %lld)", (long long)hi, t.name,
                    (long long)row);
    }
  }
  ck_assert_int_eq(prev, N);
}

START_TEST(shards_are_balanced_and_cut_between_rows)
{
  adampi *opt = make(ADAMPI_ADAMP);
  add(opt, "conv", 3, 64, 27, 1);
  add(opt, "bias", 1, 1000, 0, 0);
  add(opt, "scalar", 0, 0, 0, 0);
  add(opt, "fc", 2, 300, 40, 0);
  add(opt, "short", 2, 2000, 3, 0);
  ck_assert_ok(opt, adampi_commit(opt));
  ck_assert_int_eq(adampi_numel(opt), 64 * 27 + 1000 + 1 + 300 * 40 + 2000 * 3);
  check_cuts(opt);
  int P = adampi_size(opt);
  int64_t N = adampi_numel(opt);
  for (int r = 0; r < P; r++) {
    int64_t lo, hi;
    adampi_shard(opt, r, &lo, &hi);
    /* Within one row (the longest is 40) of the ideal cut. */
    ck_assert_msg(llabs(lo - N * r / P) <= 40, "shard %d starts at %lld, ideal %lld", r, (long long)lo,
                  (long long)(N * r / P));
  }
  int64_t lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  if (hi > lo) {
    ck_assert_ptr_nonnull(adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG));
    ck_assert_ptr_nonnull(adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG_SQ));
  }
  ck_assert_ptr_null(adampi_state_shard(opt, ADAMPI_STATE_MOMENTUM));
  adampi_free(&opt);
}
END_TEST

START_TEST(more_ranks_than_rows)
{
  adampi *opt = make(ADAMPI_SGDP);
  add(opt, "w", 2, 2, 10, 0);
  ck_assert_ok(opt, adampi_commit(opt));
  check_cuts(opt);
  int nonempty = 0;
  for (int r = 0; r < adampi_size(opt); r++) {
    int64_t lo, hi;
    adampi_shard(opt, r, &lo, &hi);
    nonempty += hi > lo;
  }
  ck_assert_int_le(nonempty, 2);
  adampi_free(&opt);
}
END_TEST

START_TEST(single_row_and_long_rows_stay_whole)
{
  adampi *opt = make(ADAMPI_ADAMP);
  add(opt, "one_row", 2, 1, 500, 0);
  add(opt, "long", 2, 3, 5000, 0);
  add(opt, "vec", 1, 17, 0, 0);
  ck_assert_ok(opt, adampi_commit(opt));
  check_cuts(opt);
  adampi_free(&opt);
}
END_TEST

START_TEST(local_registration_errors)
{
  adampi *opt = make(ADAMPI_ADAMP);
  int64_t shape[9] = {2, 3, 1, 1, 1, 1, 1, 1, 1};
  ck_assert_int_eq(adampi_add_tensor(opt, "", 2, shape, 0, NULL), ADAMPI_ERR_ARG);
  ck_assert_int_eq(adampi_add_tensor(opt, NULL, 2, shape, 0, NULL), ADAMPI_ERR_ARG);
  ck_assert_int_eq(adampi_add_tensor(opt, "a", 9, shape, 0, NULL), ADAMPI_ERR_ARG);
  ck_assert_msg(strstr(adampi_last_error(opt), "ndim = 9"), "message: %s", adampi_last_error(opt));
  ck_assert_int_eq(adampi_add_tensor(opt, "a", 2, NULL, 0, NULL), ADAMPI_ERR_ARG);
  int64_t zero[2] = {4, 0}, neg[2] = {-1, 3};
  ck_assert_int_eq(adampi_add_tensor(opt, "z", 2, zero, 0, NULL), ADAMPI_ERR_ARG);
  ck_assert_msg(strstr(adampi_last_error(opt), "dimension 1 is 0"), "message: %s", adampi_last_error(opt));
  ck_assert_int_eq(adampi_add_tensor(opt, "n", 2, neg, 0, NULL), ADAMPI_ERR_ARG);
  ck_assert_int_eq(adampi_add_tensor(opt, "g", 2, shape, 5, NULL), ADAMPI_ERR_ARG);
  ck_assert_msg(strstr(adampi_last_error(opt), "group 5"), "message: %s", adampi_last_error(opt));
  char longname[400];
  memset(longname, 'x', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  ck_assert_int_eq(adampi_add_tensor(opt, longname, 1, shape, 0, NULL), ADAMPI_ERR_ARG);
  ck_assert_int_eq(adampi_num_tensors(opt), 0);
  int idx = -1;
  ck_assert_ok(opt, adampi_add_tensor(opt, "a", 8, shape, 0, &idx));
  ck_assert_int_eq(idx, 0);
  ck_assert_int_eq(adampi_add_tensor(opt, "a", 1, shape, 0, NULL), ADAMPI_ERR_ARG);
  ck_assert_msg(strstr(adampi_last_error(opt), "already registered"), "message: %s", adampi_last_error(opt));
  float w = 0, g = 0;
  ck_assert_int_eq(adampi_step_sharded(opt, &w, &g, NULL), ADAMPI_ERR_STATE);
  ck_assert_msg(strstr(adampi_last_error(opt), "before adampi_commit"), "message: %s", adampi_last_error(opt));
  ck_assert_int_eq(adampi_step(opt, &w, &g, NULL), ADAMPI_ERR_STATE);
  ck_assert_int_eq(adampi_save(opt, "/tmp/adampi_never_written.h5", &w, NULL), ADAMPI_ERR_STATE);
  ck_assert_int_eq(adampi_load(opt, "/tmp/adampi_never_written.h5", &w, NULL), ADAMPI_ERR_STATE);
  adampi_profile prof;
  ck_assert_int_eq(adampi_get_profile(opt, &prof), ADAMPI_ERR_STATE);
  ck_assert_ok(opt, adampi_commit(opt));
  ck_assert_int_eq(adampi_add_tensor(opt, "b", 1, shape, 0, NULL), ADAMPI_ERR_STATE);
  ck_assert_int_eq(adampi_num_tensors(opt), 1);
  adampi_hparams hp = adampi_adamp_defaults();
  ck_assert_int_eq(adampi_add_group(opt, &hp, NULL), ADAMPI_ERR_STATE);
  ck_assert_int_eq(adampi_num_groups(opt), 1);
  ck_assert_int_eq(adampi_commit(opt), ADAMPI_ERR_STATE);
  adampi_free(&opt);
}
END_TEST

START_TEST(no_tensors_is_an_error_everywhere)
{
  adampi *opt = make(ADAMPI_ADAMP);
  ck_assert_int_eq(adampi_commit(opt), ADAMPI_ERR_ARG);
  ck_assert_msg(strstr(adampi_last_error(opt), "no tensors"), "message: %s", adampi_last_error(opt));
  adampi_free(&opt);
}
END_TEST

/* Same message text on every rank (compared through a checksum). */
static void assert_same_everywhere(const char *msg)
{
  unsigned long h = 5381;
  for (const char *p = msg; *p; p++) h = h * 33 + (unsigned char)*p;
  unsigned long lo, hi;
  MPI_Allreduce(&h, &lo, 1, MPI_UNSIGNED_LONG, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&h, &hi, 1, MPI_UNSIGNED_LONG, MPI_MAX, MPI_COMM_WORLD);
  ck_assert_msg(lo == hi, "[rank %d] ranks report different messages; mine: %s", test_rank(), msg);
}

/* Variant v of a registration: rank 1 (the last rank with 2 ranks) differs in one respect. */
static void register_variant(adampi *opt, int v, int differ)
{
  if (v == 6 || (differ && v == 7)) { /* a second parameter group (v 7: on one rank only) */
    adampi_hparams hp = adampi_adamp_defaults();
    adampi_add_group(opt, &hp, NULL);
  }
  if (differ && v == 5) { /* the same tensors in another order */
    add(opt, "b", 2, 4, 5, 0);
    add(opt, "a", 2, 4, 5, 0);
    add(opt, "c", 1, 7, 0, 0);
    return;
  }
  add(opt, "a", 2, 4, 5, 0);
  if (differ && v == 0) add(opt, "b_renamed", 2, 4, 5, 0);
  else if (differ && v == 1) add(opt, "b", 2, 5, 4, 0);
  else if (differ && v == 2) add(opt, "b", 1, 20, 0, 0);
  else add(opt, "b", 2, 4, 5, 0);
  int64_t seven = 7;
  if (!(differ && v == 3)) ck_assert_ok(opt, adampi_add_tensor(opt, "c", 1, &seven, differ && v == 6 ? 1 : 0, NULL));
  if (differ && v == 4) {
    adampi_hparams hp = adampi_adamp_defaults();
    hp.lr = 0.5;
    adampi_set_hparams(opt, 0, &hp);
  }
}

START_TEST(mismatched_registration_fails_on_every_rank)
{
  if (test_size() < 2) return;
  static const char *expect[] = {"b_renamed", "[5, 4]", "[20]", "tensor 2", "lr = 0.001", "tensor 0", "group 1", "rank 1 added 2"};
  adampi *opt = make(ADAMPI_ADAMP);
  register_variant(opt, _i, test_rank() == 1);
  adampi_status st = adampi_commit(opt);
  ck_assert_msg(st == ADAMPI_ERR_MISMATCH, "[rank %d] variant %d: commit returned %s", test_rank(), _i,
                adampi_strerror(st));
  const char *msg = adampi_last_error(opt);
  ck_assert_msg(strstr(msg, expect[_i]) != NULL, "variant %d: message '%s' lacks '%s'", _i, msg, expect[_i]);
  ck_assert_msg(strstr(msg, "rank 1") != NULL, "variant %d: message '%s' does not name rank 1", _i, msg);
  assert_same_everywhere(msg);
  /* Nothing was committed: a step still says so, on every rank alike. */
  float w = 0, g = 0;
  ck_assert_int_eq(adampi_step_sharded(opt, &w, &g, NULL), ADAMPI_ERR_STATE);
  int64_t lo, hi;
  ck_assert_int_eq(adampi_shard(opt, 0, &lo, &hi), ADAMPI_ERR_STATE);
  ck_assert_ptr_null(adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG));
  adampi_free(&opt);
}
END_TEST

static Suite *make_suite(void)
{
  Suite *s = suite_create("layout");
  TCase *tc = tcase_create("sharding");
  tcase_add_test(tc, shards_are_balanced_and_cut_between_rows);
  tcase_add_test(tc, more_ranks_than_rows);
  tcase_add_test(tc, single_row_and_long_rows_stay_whole);
  suite_add_tcase(s, tc);
  tc = tcase_create("registration");
  tcase_add_test(tc, local_registration_errors);
  tcase_add_test(tc, no_tensors_is_an_error_everywhere);
  tcase_add_loop_test(tc, mismatched_registration_fails_on_every_rank, 0, 8);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) { return run_mpi_suite(argc, argv, make_suite); }
