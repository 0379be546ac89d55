/*
 * test_reference.c - adampi against the PyTorch transcription of MATHS.md (tests/reference), on the
 * fixtures in tests/fixtures: parameters and state after all steps within a relative error of
 * 2e-6 per tensor, the same projection decision (none / channel / layer) for every tensor at
 * every step, and the same per-tensor step counters. Prints the largest difference it saw.
 */
#include "mpi_check.h"
#include "replay.h"

#include <hdf5.h>
#include <math.h>

#define TOLERANCE 2e-6

static const char *cases[] = {"adamp_basic",   "adamp_layer",    "adamp_nesterov_wd_groups", "sgdp_momentum",
                              "sgdp_nesterov", "sgdp_dampening", "edge_values",              "edge_values_sgdp",
                              "wide_rows"};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static double worst_seen = 0.0;

static void fixture(char *buf, size_t len, const char *name, const char *suffix)
{
  const char *dir = getenv("ADAMPI_FIXTURES");
  snprintf(buf, len, "%s/%s.%s.h5", dir ? dir : "tests/fixtures", name, suffix);
}

/* Read a whole float dataset (or int8 for decisions) of the expected file; NULL if absent. */
static void *read_all(hid_t f, const char *path, hid_t memtype, size_t elem, int64_t *count)
{
  if (H5Lexists(f, path, H5P_DEFAULT) <= 0) return NULL;
  hid_t d = H5Dopen2(f, path, H5P_DEFAULT), s = H5Dget_space(d);
  hssize_t n = H5Sget_simple_extent_npoints(s);
  void *buf = malloc((size_t)n * elem + 1);
  ck_assert_msg(H5Dread(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0, "cannot read %s", path);
  H5Sclose(s);
  H5Dclose(d);
  *count = (int64_t)n;
  return buf;
}

static double rel_error(const float *x, const float *y, int64_t n)
{
  double num = 0, den = 0;
  for (int64_t k = 0; k < n; k++) {
    double d = (double)x[k] - (double)y[k];
    num += d * d;
    den += (double)y[k] * y[k];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

START_TEST(matches_the_pytorch_reference)
{
  const char *name = cases[_i];
  char in[1024], exp[1024], err[1024] = "";
  fixture(in, sizeof in, name, "in");
  fixture(exp, sizeof exp, name, "expected");
  replay_file *rf = NULL;
  adampi *opt = NULL;
  ck_assert_msg(replay_open(MPI_COMM_WORLD, in, &rf, err, sizeof err) == 0, "%s: %s", in, err);
  ck_assert_msg(replay_make_optimizer(rf, NULL, &opt, err, sizeof err) == 0, "%s: %s", name, err);
  int64_t N = adampi_numel(opt), lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  float *w = calloc((size_t)(hi - lo) + 1, sizeof *w);
  ck_assert_msg(replay_read_params(rf, opt, w, err, sizeof err) == 0, "%s: %s", name, err);

  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t f = H5Fopen(exp, H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_msg(f >= 0, "cannot open %s", exp);
  int T = replay_steps(rf), n = replay_num_tensors(rf), wrong_views = 0;
  int64_t count = 0;
  signed char *decisions = read_all(f, "decisions", H5T_NATIVE_SCHAR, 1, &count);
  ck_assert_msg(decisions && count == (int64_t)T * n, "%s: /decisions missing or of the wrong size", exp);
  char first_wrong[256] = "";
  for (int t = 0; t < T; t++) {
    ck_assert_msg(replay_run(rf, opt, w, t, t + 1, err, sizeof err) == 0, "%s: %s", name, err);
    for (int i = 0; i < n; i++) {
      adampi_diag d;
      adampi_diag_get(opt, i, &d);
      int got = d.updated ? (int)d.view : -1, want = decisions[t * n + i];
      if (got != want && !wrong_views++)
        snprintf(first_wrong, sizeof first_wrong, "step %d tensor %d: view %d, reference %d", t, i, got, want);
    }
  }
  ck_assert_msg(wrong_views == 0, "%s: %d decisions differ from the reference, first at %s", name, wrong_views, first_wrong);

  adampi_kind kind = replay_kind(rf);
  float *full = malloc((size_t)N * sizeof *full), *s0 = malloc((size_t)N * sizeof *s0), *s1 = calloc((size_t)N, sizeof *s1);
  gather_full(opt, MPI_COMM_WORLD, w, full);
  gather_full(opt, MPI_COMM_WORLD, adampi_state_shard(opt, kind == ADAMPI_ADAMP ? ADAMPI_STATE_EXP_AVG : ADAMPI_STATE_MOMENTUM), s0);
  if (kind == ADAMPI_ADAMP) gather_full(opt, MPI_COMM_WORLD, adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG_SQ), s1);
  double worst = 0.0;
  char worst_what[128] = "";
  for (int i = 0; i < n; i++) {
    adampi_tensor_info t;
    adampi_tensor(opt, i, &t);
    const char *paths[3] = {"params/%d", kind == ADAMPI_ADAMP ? "state/%d/exp_avg" : "state/%d/momentum", "state/%d/exp_avg_sq"};
    const float *mine[3] = {full, s0, s1};
    for (int x = 0; x < (kind == ADAMPI_ADAMP ? 3 : 2); x++) {
      char path[64];
      snprintf(path, sizeof path, paths[x], i);
      float *ref = read_all(f, path, H5T_NATIVE_FLOAT, sizeof(float), &count);
      ck_assert_msg(ref && count == t.numel, "%s: %s missing or of the wrong size", exp, path);
      double e = rel_error(mine[x] + t.offset, ref, t.numel);
      if (e > worst || e != e) worst = e, snprintf(worst_what, sizeof worst_what, "%s", path);
      free(ref);
    }
    char spath[32];
    snprintf(spath, sizeof spath, "state/%d", i);
    int64_t step = -1;
    hid_t a = H5Aopen_by_name(f, spath, "step", H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_msg(a >= 0 && H5Aread(a, H5T_NATIVE_INT64, &step) >= 0, "%s: %s has no step", exp, spath);
    H5Aclose(a);
    ck_assert_msg(step == adampi_tensor_step(opt, i), "%s: tensor %d step %lld, reference %lld", name, i,
                  (long long)adampi_tensor_step(opt, i), (long long)step);
  }
  H5Fclose(f);
  if (test_rank() == 0)
    printf("reference %-26s %d ranks: max relative error %.3g (%s), %d steps, decisions equal\n", name, test_size(), worst,
           worst_what, T);
  if (worst > worst_seen) worst_seen = worst;
  ck_assert_msg(worst <= TOLERANCE, "%s: %s differs from the reference by %.3g (tolerance %g)", name, worst_what, worst,
                TOLERANCE);
  free(decisions);
  free(full);
  free(s0);
  free(s1);
  free(w);
  adampi_free(&opt);
  replay_close(&rf);
}
END_TEST

static Suite *make_suite(void)
{
  Suite *s = suite_create("reference");
  TCase *tc = tcase_create("fixtures");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, matches_the_pytorch_reference, 0, NCASES);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) { return run_mpi_suite(argc, argv, make_suite); }
