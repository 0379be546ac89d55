/*
 * test_invariance.c - bitwise rank invariance: the same global gradients give the same bits of
 * parameters and state after many steps on every number of ranks from 1 to the world size.
 * One run on MPI_COMM_WORLD is compared with runs on sub-communicators of every smaller size.
 * The problem has long rows, many short rows, a single row, rows longer than a rank's share,
 * 0-d and 1-d tensors, gradients that trigger channel and layer projections, missing gradients,
 * two groups and a changing learning rate, so shards start and end inside tensors.
 */
#include "mpi_check.h"

#include <math.h>

#define STEPS 12

typedef struct spec {
  const char *name;
  int ndim;
  int64_t shape[4];
  int group;
} spec;

static const spec tensors[] = {
  {"long_rows", 2, {64, 300}, 0},   {"short_rows", 2, {500, 3}, 0}, {"scalar", 0, {0}, 1},
  {"bias", 1, {37}, 1},             {"one_row", 2, {1, 999}, 0},    {"huge_rows", 2, {2, 6000}, 0},
  {"conv", 4, {8, 4, 3, 3}, 0},     {"vector", 1, {5000}, 1},       {"tiny", 2, {2, 2}, 0},
};
#define NT ((int)(sizeof tensors / sizeof tensors[0]))

typedef struct variant {
  adampi_kind kind;
  int nesterov;
} variant;

static const variant variants[] = {{ADAMPI_ADAMP, 0}, {ADAMPI_ADAMP, 1}, {ADAMPI_SGDP, 0}, {ADAMPI_SGDP, 1}};

typedef struct result {
  int64_t numel;
  float *params, *s0, *s1;
  int64_t steps[NT];
  int views[3];
  double diag[STEPS][NT][4]; /* the double sums behind every decision, bit for bit */
} result;

static adampi_hparams group_hparams(const variant *v, int group)
{
  adampi_hparams hp = v->kind == ADAMPI_ADAMP ? adampi_adamp_defaults() : adampi_sgdp_defaults(0.05);
  hp.nesterov = v->nesterov;
  if (v->kind == ADAMPI_SGDP) hp.momentum = group ? 0.5 : 0.9;
  else hp.lr = 1e-2;
  if (group == 0) hp.weight_decay = 0.01;
  else hp.beta1 = 0.8, hp.beta2 = 0.99;
  return hp;
}

/* Gradient of step t for tensor i from the current full parameters: random, orthogonal to each
 * row (channel view projects) or orthogonal to the whole tensor (layer view may project). */
static void make_grad(const adampi_tensor_info *t, int i, int step, const float *w, float *g)
{
  uint64_t seed = 1000003ull * (uint64_t)step + 7919ull * (uint64_t)i + 17;
  for (int64_t k = 0; k < t->numel; k++) g[k] = 0.1f * test_uniform(&seed);
  int mode = (step + i) % 3;
  if (t->ndim < 2 || mode == 0) return;
  int64_t rows = mode == 1 ? t->shape[0] : 1, len = t->numel / rows;
  for (int64_t r = 0; r < rows; r++) {
    double gw = 0, ww = 0;
    for (int64_t k = r * len; k < (r + 1) * len; k++) gw += (double)g[k] * w[k], ww += (double)w[k] * w[k];
    for (int64_t k = r * len; k < (r + 1) * len && ww > 0; k++) g[k] = (float)(g[k] - w[k] * (gw / ww));
  }
}

static void run(MPI_Comm comm, const variant *v, result *res)
{
  adampi_config cfg = adampi_config_defaults(v->kind);
  adampi *opt = NULL;
  char err[256];
  ck_assert_int_eq(adampi_create(comm, &cfg, &opt, err, sizeof err), ADAMPI_OK);
  for (int g = 0; g < 2; g++) {
    adampi_hparams hp = group_hparams(v, g);
    ck_assert_ok(opt, adampi_add_group(opt, &hp, NULL));
  }
  for (int i = 0; i < NT; i++) ck_assert_ok(opt, adampi_add_tensor(opt, tensors[i].name, tensors[i].ndim, tensors[i].shape, tensors[i].group, NULL));
  ck_assert_ok(opt, adampi_commit(opt));
  int64_t N = adampi_numel(opt), lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  float *full = malloc((size_t)N * sizeof *full), *grads = malloc((size_t)N * sizeof *grads);
  float *w = malloc((size_t)(hi - lo + 1) * sizeof *w);
  uint64_t seed = 42;
  for (int64_t k = 0; k < N; k++) full[k] = 0.5f * test_uniform(&seed);
  memcpy(w, full + lo, (size_t)(hi - lo) * sizeof *w);
  memset(res->views, 0, sizeof res->views);
  memset(res->diag, 0, sizeof res->diag);
  for (int step = 0; step < STEPS; step++) {
    unsigned char has[NT];
    uint64_t ms = 99 + (uint64_t)step;
    for (int i = 0; i < NT; i++) has[i] = step == 0 || (test_rng(&ms) % 5) != 0;
    for (int g = 0; g < 2; g++) {
      adampi_hparams hp = group_hparams(v, g);
      ck_assert_ok(opt, adampi_set_lr(opt, g, hp.lr * (1.0 + 0.05 * step)));
    }
    gather_full(opt, comm, w, full);
    for (int i = 0; i < NT; i++) {
      adampi_tensor_info t;
      adampi_tensor(opt, i, &t);
      make_grad(&t, i, step, full + t.offset, grads + t.offset);
    }
    ck_assert_ok(opt, adampi_step_sharded(opt, w, grads + lo, has));
    for (int i = 0; i < NT; i++) {
      adampi_diag d;
      adampi_diag_get(opt, i, &d);
      if (d.updated) res->views[d.view]++;
      double x[4] = {d.cos_channel, d.cos_layer, d.weight_norm, d.grad_norm};
      memcpy(res->diag[step][i], x, sizeof x);
    }
  }
  res->numel = N;
  res->params = malloc((size_t)N * sizeof(float));
  res->s0 = calloc((size_t)N, sizeof(float));
  res->s1 = calloc((size_t)N, sizeof(float));
  gather_full(opt, comm, w, res->params);
  adampi_state_kind k0 = v->kind == ADAMPI_ADAMP ? ADAMPI_STATE_EXP_AVG : ADAMPI_STATE_MOMENTUM;
  gather_full(opt, comm, adampi_state_shard(opt, k0), res->s0);
  if (v->kind == ADAMPI_ADAMP) gather_full(opt, comm, adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG_SQ), res->s1);
  for (int i = 0; i < NT; i++) res->steps[i] = adampi_tensor_step(opt, i);
  free(full);
  free(grads);
  free(w);
  adampi_free(&opt);
}

static void free_result(result *r)
{
  free(r->params);
  free(r->s0);
  free(r->s1);
}

static int64_t first_diff(const float *a, const float *b, int64_t n)
{
  for (int64_t k = 0; k < n; k++)
    if (memcmp(&a[k], &b[k], sizeof(float)) != 0) return k;
  return -1;
}

START_TEST(bitwise_identical_on_every_rank_count)
{
  const variant *v = &variants[_i];
  result world;
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
    result part;
    run(sub, v, &part);
    /* Record the first difference and assert only after the loop: a rank that left early
     * would leave the others waiting in the next collective. */
    const char *what[3] = {"params", "state0", "state1"};
    const float *a[3] = {world.params, world.s0, world.s1}, *b[3] = {part.params, part.s0, part.s1};
    for (int x = 0; x < 3 && !bad[0]; x++) {
      int64_t d = first_diff(a[x], b[x], world.numel);
      if (d >= 0)
        snprintf(bad, sizeof bad, "variant %d: %s differ between %d and %d ranks at element %lld (%.9g vs %.9g)", _i,
                 what[x], P, k, (long long)d, a[x][d], b[x][d]);
    }
    if (!bad[0] && memcmp(world.steps, part.steps, sizeof world.steps) != 0)
      snprintf(bad, sizeof bad, "step counters differ on %d ranks", k);
    for (int t = 0; t < STEPS && !bad[0]; t++)
      for (int i = 0; i < NT && !bad[0]; i++)
        if (memcmp(world.diag[t][i], part.diag[t][i], sizeof world.diag[t][i]) != 0)
          snprintf(bad, sizeof bad,
                   "variant %d: statistics of tensor '%s' at step %d differ between %d and %d ranks (|w| %.17g vs %.17g)",
                   _i, tensors[i].name, t, P, k, world.diag[t][i][2], part.diag[t][i][2]);
    compared++;
    free_result(&part);
    MPI_Comm_free(&sub);
  }
  ck_assert_msg(!bad[0], "%s", bad);
  if (me == 0 && _i == 0)
    printf("rank invariance: world of %d compared with %d smaller rank counts; views none/channel/layer %d/%d/%d\n", P,
           compared, world.views[0], world.views[1], world.views[2]);
  free_result(&world);
}
END_TEST

static Suite *make_suite(void)
{
  Suite *s = suite_create("invariance");
  TCase *tc = tcase_create("ranks");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, bitwise_identical_on_every_rank_count, 0, (int)(sizeof variants / sizeof variants[0]));
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) { return run_mpi_suite(argc, argv, make_suite); }
