/*
 * test_invariance.c - bitwise rank invariance: the same global gradients give the same bits of
 * parameters, state and the double statistics behind every decision after many steps, on every
 * number of ranks from 1 to the world size. One run on MPI_COMM_WORLD is compared with runs on
 * sub-communicators of every smaller size, for AdamP and SGDP with and without nesterov, on the
 * problem of problem.h (shards start and end inside tensors; both projection views occur). And
 * the rows of one tensor, several to a task, against the same rows as tensors of one row each.
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

/* ---- a tensor's rows against as many one-row tensors ------------------------------------------ */

#define ROWS 150 /* 150 rows of 1000: more than one task holds (ADAMPI_TASK_LEN elements), on one */
#define LEN 1000 /* rank or two; rows that end inside a block of 256 and inside a chunk of 16 */
#define ROW_STEPS 4

/* A handle of v's kind and dtype on MPI_COMM_WORLD holding the rows as one tensor (split 0) or as
 * ROWS tensors of one row each. */
static adampi *rows_handle(const problem_variant *v, adampi_dtype dtype, int split)
{
  adampi_config cfg = adampi_config_defaults(v->kind);
  cfg.dtype = dtype;
  if (getenv("TEST_THREADS")) cfg.threads = atoi(getenv("TEST_THREADS"));
  adampi *opt = NULL;
  char err[512];
  ck_assert_msg(adampi_create(MPI_COMM_WORLD, &cfg, &opt, err, sizeof err) == ADAMPI_OK, "%s", err);
  adampi_hparams hp = problem_hparams(v, 0);
  ck_assert_ok(opt, adampi_add_group(opt, &hp, NULL));
  const int64_t shape[2] = {split ? 1 : ROWS, LEN};
  for (int r = 0; r < (split ? ROWS : 1); r++) {
    char name[32];
    snprintf(name, sizeof name, "row%d", r);
    ck_assert_ok(opt, adampi_add_tensor(opt, split ? name : "rows", 2, shape, 0, NULL));
  }
  ck_assert_ok(opt, adampi_commit(opt));
  return opt;
}

/* The gradients of step `step`: random, then made orthogonal to each row of w, so that every row
 * is projected under the channel view whether it is a row of one tensor or a tensor of its own. */
static void rows_grad(int step, const float *w, float *g)
{
  for (int64_t r = 0; r < ROWS; r++) {
    uint64_t seed = 7001 * (uint64_t)step + (uint64_t)r;
    double gw = 0, ww = 0;
    for (int64_t k = r * LEN; k < (r + 1) * LEN; k++) {
      g[k] = 0.1f * test_uniform(&seed);
      gw += (double)g[k] * w[k], ww += (double)w[k] * w[k];
    }
    for (int64_t k = r * LEN; k < (r + 1) * LEN; k++) g[k] = (float)(g[k] - w[k] * (gw / ww));
  }
}

/* ROW_STEPS steps of the handle; out: its fp32 parameters (the master of a 16-bit handle) and
 * state arrays, gathered, ROWS * LEN floats each. */
static void rows_run(adampi *opt, const problem_variant *v, adampi_dtype dtype, float *out[3])
{
  const int64_t N = (int64_t)ROWS * LEN;
  int64_t lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  size_t es = adampi_dtype_size(dtype);
  float *full = malloc((size_t)N * sizeof(float)), *g = malloc((size_t)N * sizeof(float));
  void *params = malloc((size_t)(hi - lo + 1) * es), *grads = malloc((size_t)(hi - lo + 1) * es);
  uint64_t seed = 42;
  for (int64_t k = 0; k < N; k++) full[k] = 0.5f * test_uniform(&seed);
  ck_assert_ok(opt, adampi_set_master(opt, full + lo, ADAMPI_PARAMS_SHARD, params));
  for (int step = 0; step < ROW_STEPS; step++) {
    gather_full(opt, MPI_COMM_WORLD, dtype == ADAMPI_FLOAT32 ? params : adampi_master_shard(opt), full);
    rows_grad(step, full, g);
    ck_assert_ok(opt, adampi_round_to(dtype, g + lo, grads, hi - lo));
    ck_assert_ok(opt, adampi_step_sharded_ex(opt, params, grads, NULL));
    for (int i = 0; i < adampi_num_tensors(opt); i++) {
      adampi_diag d;
      ck_assert_ok(opt, adampi_diag_get(opt, i, &d));
      ck_assert_msg(d.updated && d.view == ADAMPI_VIEW_CHANNEL, "step %d: tensor %d not projected row by row", step, i);
    }
  }
  const int adamp = v->kind == ADAMPI_ADAMP;
  const float *arrays[3] = {dtype == ADAMPI_FLOAT32 ? params : adampi_master_shard(opt),
                            adampi_state_shard(opt, adamp ? ADAMPI_STATE_EXP_AVG : ADAMPI_STATE_MOMENTUM),
                            adamp ? adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG_SQ) : NULL};
  for (int a = 0; a < 3; a++) {
    out[a] = calloc((size_t)N, sizeof(float));
    if (a < 2 || arrays[a]) gather_full(opt, MPI_COMM_WORLD, arrays[a], out[a]);
  }
  free(full), free(g), free(params), free(grads);
}

/* The rows of a tensor are updated task by task, several rows to a call (the kernel tables' rows):
 * the same bits as the same rows held as tensors of one row, each in a task of its own, for every
 * kind, element type and rank count. */
START_TEST(rows_of_one_tensor_give_the_bits_of_one_row_tensors)
{
  const problem_variant *v = &problem_variants[_i % 4];
  const adampi_dtype types[3] = {ADAMPI_FLOAT32, ADAMPI_BFLOAT16, ADAMPI_FLOAT16};
  const adampi_dtype dtype = types[_i / 4];
  const char *what[3] = {"parameters", "state 0", "state 1"};
  float *res[2][3];
  for (int split = 0; split < 2; split++) {
    adampi *opt = rows_handle(v, dtype, split);
    rows_run(opt, v, dtype, res[split]);
    adampi_free(&opt);
  }
  char bad[256] = ""; /* the first difference (an assertion per element would cost Check a write each) */
  for (int a = 0; a < 3; a++) {
    for (int64_t k = 0; k < (int64_t)ROWS * LEN && !bad[0]; k++)
      if (memcmp(&res[0][a][k], &res[1][a][k], sizeof(float)) != 0)
        snprintf(bad, sizeof bad, "%s, variant %d: %s differ at row %lld, element %lld: %.9g as one tensor, %.9g as "
                 "one-row tensors", adampi_dtype_name(dtype), _i % 4, what[a], (long long)(k / LEN),
                 (long long)(k % LEN), res[0][a][k], res[1][a][k]);
    free(res[0][a]), free(res[1][a]);
  }
  ck_assert_msg(!bad[0], "%s", bad);
}
END_TEST

static Suite *make_suite(void)
{
  Suite *s = suite_create("invariance");
  TCase *tc = tcase_create("ranks");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, bitwise_identical_on_every_rank_count, 0, 4);
  suite_add_tcase(s, tc);
  TCase *rows = tcase_create("rows");
  tcase_set_timeout(rows, 300);
  tcase_add_loop_test(rows, rows_of_one_tensor_give_the_bits_of_one_row_tensors, 0, 12);
  suite_add_tcase(s, rows);
  return s;
}

int main(int argc, char **argv) { return run_mpi_suite(argc, argv, make_suite); }
