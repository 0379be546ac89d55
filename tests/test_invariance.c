/*
 * test_invariance.c - bitwise rank invariance: the same global gradients give the same bits of
 * parameters, state and the double statistics behind every decision after many steps, on every
 * number of ranks from 1 to the world size. One run on MPI_COMM_WORLD is compared with runs on
 * sub-communicators of every smaller size, for AdamP and SGDP with and without nesterov, on the
 * problem of problem.h (shards start and end inside tensors; both projection views occur).
 */
#include "problem.h"

#define STEPS 12

typedef struct run_result {
  problem_result r;
  int views[3];
  double diag[STEPS * PROBLEM_NT * 4];
} run_result;

static void run(MPI_Comm comm, const problem_variant *v, run_result *out)
{
  char err[512];
  adampi *opt = problem_create(comm, v, ADAMPI_NONFINITE_ERROR, err, sizeof err);
  ck_assert_msg(opt != NULL, "%s", err);
  int64_t lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  float *w = malloc((size_t)(hi - lo + 1) * sizeof *w);
  problem_init(opt, w);
  memset(out->views, 0, sizeof out->views);
  ck_assert_ok(opt, problem_steps(opt, comm, v, w, 0, STEPS, out->views, out->diag));
  problem_collect(opt, comm, v->kind, w, &out->r);
  free(w);
  adampi_free(&opt);
}

START_TEST(bitwise_identical_on_every_rank_count)
{
  const problem_variant *v = &problem_variants[_i];
  static run_result world, part;
  run(MPI_COMM_WORLD, v, &world);
  ck_assert_msg(world.views[ADAMPI_VIEW_CHANNEL] > 0 && world.views[ADAMPI_VIEW_LAYER] > 0 && world.views[ADAMPI_VIEW_NONE] > 0,
                "the problem must exercise every view: none %d channel %d layer %d", world.views[0], world.views[1],
                world.views[2]);
  int P = test_size(), me = test_rank(), compared = 0;
  char bad[512] = "";
  for (int k = 1; k < P; k++) {
    MPI_Comm sub;
    MPI_Comm_split(MPI_COMM_WORLD, me < k ? 0 : MPI_UNDEFINED, me, &sub);
    if (sub == MPI_COMM_NULL) continue;
    run(sub, v, &part);
    /* Record the first difference and assert only after the loop: a rank that left early
     * would leave the others waiting in the next collective. */
    char diff[400];
    problem_compare(&world.r, &part.r, diff, sizeof diff);
    if (!bad[0] && diff[0]) snprintf(bad, sizeof bad, "variant %d, %d vs %d ranks: %s", _i, P, k, diff);
    for (int x = 0; x < STEPS * PROBLEM_NT && !bad[0]; x++)
      if (memcmp(&world.diag[4 * x], &part.diag[4 * x], 4 * sizeof(double)) != 0)
        snprintf(bad, sizeof bad,
                 "variant %d: statistics of tensor '%s' at step %d differ between %d and %d ranks (|w| %.17g vs %.17g)",
                 _i, problem_tensors[x % PROBLEM_NT].name, x / PROBLEM_NT, P, k, world.diag[4 * x + 2],
                 part.diag[4 * x + 2]);
    compared++;
    problem_release(&part.r);
    MPI_Comm_free(&sub);
  }
  ck_assert_msg(!bad[0], "%s", bad);
  if (me == 0 && _i == 0)
    printf("rank invariance: world of %d compared with %d smaller rank counts; views none/channel/layer %d/%d/%d\n", P,
           compared, world.views[0], world.views[1], world.views[2]);
  problem_release(&world.r);
}
END_TEST

static Suite *make_suite(void)
{
  Suite *s = suite_create("invariance");
  TCase *tc = tcase_create("ranks");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, bitwise_identical_on_every_rank_count, 0, 4);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) { return run_mpi_suite(argc, argv, make_suite); }
