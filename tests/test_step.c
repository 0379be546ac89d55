/*
 * test_step.c - the step as a transaction and the data-parallel path: gradients averaged across
 * ranks; NaN/Inf in one rank's gradient or in parameters changes nothing anywhere, under both
 * policies; mismatched masks, hyper-parameters and NULL arguments fail on every rank without a
 * hang; tensors without a gradient are untouched; zero and tiny weights stay finite; the shared
 * step buffers give the same bits as the caller's and refuse alike.
 */
#include "mpi_check.h"

#include <math.h>

static const struct {
  const char *name;
  int ndim;
  int64_t shape[4];
  int group;
} shapes[] = {{"w", 2, {6, 10}, 0}, {"b", 1, {10}, 1}, {"s", 0, {0}, 1}, {"conv", 4, {3, 4, 2, 2}, 0}, {"rows", 2, {40, 2}, 0}};
#define NT 5

typedef struct fixture {
  adampi *opt;
  int64_t N, lo, hi;
  float *params; /* full */
  float *grads;  /* the shared step buffers' gradients, or NULL */
} fixture;

/* big: a sixth tensor of 3 x 5000, so that shards span several blocks of the direct reduction. */
static fixture make_sized(adampi_kind kind, adampi_nonfinite_policy policy, int big)
{
  fixture fx = {0};
  adampi_config cfg = adampi_config_defaults(kind);
  cfg.nonfinite = policy;
  char err[256];
  ck_assert_int_eq(adampi_create(MPI_COMM_WORLD, &cfg, &fx.opt, err, sizeof err), ADAMPI_OK);
  for (int g = 0; g < 2; g++) {
    adampi_hparams hp = kind == ADAMPI_ADAMP ? adampi_adamp_defaults() : adampi_sgdp_defaults(0.1);
    hp.momentum = kind == ADAMPI_SGDP ? 0.9 : 0.0;
    hp.weight_decay = g == 0 ? 0.01 : 0.0;
    ck_assert_ok(fx.opt, adampi_add_group(fx.opt, &hp, NULL));
  }
  for (int i = 0; i < NT; i++)
    ck_assert_ok(fx.opt, adampi_add_tensor(fx.opt, shapes[i].name, shapes[i].ndim, shapes[i].shape, shapes[i].group, NULL));
  const int64_t big_shape[2] = {3, 5000};
  if (big) ck_assert_ok(fx.opt, adampi_add_tensor(fx.opt, "big", 2, big_shape, 0, NULL));
  ck_assert_ok(fx.opt, adampi_commit(fx.opt));
  fx.N = adampi_numel(fx.opt);
  adampi_shard(fx.opt, adampi_rank(fx.opt), &fx.lo, &fx.hi);
  fx.params = malloc((size_t)fx.N * sizeof(float));
  uint64_t seed = 5;
  for (int64_t k = 0; k < fx.N; k++) fx.params[k] = test_uniform(&seed);
  return fx;
}

static fixture make(adampi_kind kind, adampi_nonfinite_policy policy) { return make_sized(kind, policy, 0); }

/* The same fixture with its parameters moved into the buffers of adampi_alloc_step_buffers. */
static fixture make_shared(adampi_kind kind, adampi_nonfinite_policy policy, int big)
{
  fixture fx = make_sized(kind, policy, big);
  float *p = NULL, *g = NULL;
  ck_assert_ok(fx.opt, adampi_alloc_step_buffers(fx.opt, &p, &g));
  ck_assert_msg(p != NULL && g != NULL && g != p, "step buffers %p %p", (void *)p, (void *)g);
  for (int64_t k = 0; k < fx.N; k++) ck_assert_msg(p[k] == 0.0f && g[k] == 0.0f, "step buffers not zeroed at %lld", (long long)k);
  memcpy(p, fx.params, (size_t)fx.N * sizeof(float));
  free(fx.params);
  fx.params = p;
  fx.grads = g;
  return fx;
}

static void drop(fixture *fx)
{
  if (fx->grads == NULL) free(fx->params); /* the step buffers go with the handle */
  adampi_free(&fx->opt);
}

/* Global gradient of a step: multiples of 2^-10 below 1, so sums of a few are exact. */
static void global_grad(int64_t N, int step, float *g)
{
  uint64_t seed = 77 + (uint64_t)step;
  for (int64_t k = 0; k < N; k++) g[k] = (float)((int)(test_uniform(&seed) * 512)) / 1024.0f;
}

/* This rank's local gradient: G + D_r with sum over ranks of D_r = 0, all exact in float. */
static void local_grad(int64_t N, int step, float *g)
{
  int P = test_size(), me = test_rank();
  global_grad(N, step, g);
  for (int64_t k = 0; k < N && P > 1; k++) {
    float sum = 0;
    for (int r = 0; r < P - 1; r++) {
      uint64_t seed = 1000 * (uint64_t)k + (uint64_t)r + 31 * (uint64_t)step;
      float d = (float)((int)(test_uniform(&seed) * 256)) / 1024.0f;
      if (r == me) g[k] += d;
      sum += d;
    }
    if (me == P - 1) g[k] -= sum;
  }
}

/* Gradients of this rank that are not exact in float: their sum depends on the order of additions. */
static void rounding_grad(int64_t N, int step, float *g)
{
  uint64_t seed = 4242 + 1000 * (uint64_t)test_rank() + (uint64_t)step;
  for (int64_t k = 0; k < N; k++) g[k] = (float)(test_uniform(&seed) - 0.5) * 0.37f;
}

typedef struct snapshot {
  float *params, *s0, *s1;
  int64_t steps[NT];
} snapshot;

static snapshot take(const fixture *fx)
{
  snapshot s;
  size_t n = (size_t)(fx->hi - fx->lo) + 1;
  s.params = malloc((size_t)fx->N * sizeof(float));
  memcpy(s.params, fx->params, (size_t)fx->N * sizeof(float));
  s.s0 = calloc(n, sizeof(float));
  s.s1 = calloc(n, sizeof(float));
  const float *a = adampi_state_shard(fx->opt, ADAMPI_STATE_EXP_AVG), *b = adampi_state_shard(fx->opt, ADAMPI_STATE_EXP_AVG_SQ);
  if (!a) a = adampi_state_shard(fx->opt, ADAMPI_STATE_MOMENTUM);
  if (a) memcpy(s.s0, a, (n - 1) * sizeof(float));
  if (b) memcpy(s.s1, b, (n - 1) * sizeof(float));
  for (int i = 0; i < NT; i++) s.steps[i] = adampi_tensor_step(fx->opt, i);
  return s;
}

/* 1 if nothing differs bit for bit from the snapshot. */
static int unchanged(const fixture *fx, const snapshot *s)
{
  snapshot now = take(fx);
  size_t n = (size_t)(fx->hi - fx->lo);
  int same = !memcmp(now.params, s->params, (size_t)fx->N * sizeof(float)) && !memcmp(now.s0, s->s0, n * sizeof(float)) &&
             !memcmp(now.s1, s->s1, n * sizeof(float)) && !memcmp(now.steps, s->steps, sizeof now.steps);
  free(now.params), free(now.s0), free(now.s1);
  return same;
}

static void release(snapshot *s) { free(s->params), free(s->s0), free(s->s1); }

START_TEST(data_parallel_equals_sharded_with_the_mean_gradient)
{
  adampi_kind kind = _i ? ADAMPI_SGDP : ADAMPI_ADAMP;
  fixture dp = make(kind, ADAMPI_NONFINITE_ERROR), sh = make(kind, ADAMPI_NONFINITE_ERROR);
  float *g = malloc((size_t)dp.N * sizeof(float));
  for (int step = 0; step < 5; step++) {
    local_grad(dp.N, step, g);
    ck_assert_ok(dp.opt, adampi_step(dp.opt, dp.params, g, NULL));
    global_grad(sh.N, step, g);
    ck_assert_ok(sh.opt, adampi_step_sharded(sh.opt, sh.params + sh.lo, g + sh.lo, NULL));
    gather_full(sh.opt, MPI_COMM_WORLD, sh.params + sh.lo, sh.params);
  }
  int64_t d = -1;
  for (int64_t k = 0; k < dp.N && d < 0; k++)
    if (memcmp(&dp.params[k], &sh.params[k], sizeof(float))) d = k;
  ck_assert_msg(d < 0, "[rank %d] data-parallel and sharded differ at %lld: %.9g vs %.9g", test_rank(), (long long)d,
                d >= 0 ? dp.params[d] : 0.0, d >= 0 ? sh.params[d] : 0.0);
  /* Every rank holds the same full parameters after the all-gather. */
  unsigned long h = 0, lo, hi;
  for (int64_t k = 0; k < dp.N; k++) {
    uint32_t bits;
    memcpy(&bits, &dp.params[k], 4);
    h = h * 1000003ul + bits;
  }
  MPI_Allreduce(&h, &lo, 1, MPI_UNSIGNED_LONG, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&h, &hi, 1, MPI_UNSIGNED_LONG, MPI_MAX, MPI_COMM_WORLD);
  ck_assert_msg(lo == hi, "ranks hold different parameters after a data-parallel step");
  free(g);
  drop(&dp);
  drop(&sh);
}
END_TEST

/* _i: 0 NaN, 1 +Inf, 2 -Inf in the last rank's local gradient; both policies. */
START_TEST(nonfinite_gradient_on_one_rank_changes_nothing)
{
  const float bad_values[3] = {NAN, INFINITY, -INFINITY};
  for (int policy = 0; policy < 2; policy++) {
    fixture fx = make(ADAMPI_ADAMP, (adampi_nonfinite_policy)policy);
    float *g = malloc((size_t)fx.N * sizeof(float));
    local_grad(fx.N, 0, g);
    ck_assert_ok(fx.opt, adampi_step(fx.opt, fx.params, g, NULL)); /* non-zero state first */
    snapshot before = take(&fx);
    local_grad(fx.N, 1, g);
    adampi_tensor_info t;
    adampi_tensor(fx.opt, 3, &t); /* "conv" */
    if (test_rank() == test_size() - 1) g[t.offset + 5] = bad_values[_i];
    adampi_status st = adampi_step(fx.opt, fx.params, g, NULL);
    if (policy == ADAMPI_NONFINITE_ERROR) {
      ck_assert_msg(st == ADAMPI_ERR_NONFINITE, "[rank %d] status %s", test_rank(), adampi_strerror(st));
      ck_assert_msg(strstr(adampi_last_error(fx.opt), "'conv'") && strstr(adampi_last_error(fx.opt), "gradient") &&
                        strstr(adampi_last_error(fx.opt), "step 1"),
                    "message: %s", adampi_last_error(fx.opt));
      ck_assert_int_eq(adampi_steps_skipped(fx.opt), 0);
    } else {
      ck_assert_msg(st == ADAMPI_OK, "[rank %d] skip policy returned %s", test_rank(), adampi_strerror(st));
      ck_assert_int_eq(adampi_steps_skipped(fx.opt), 1);
    }
    ck_assert_msg(unchanged(&fx, &before), "[rank %d] policy %d: a refused step changed something", test_rank(), policy);
    ck_assert_int_eq(adampi_steps_taken(fx.opt), 1);
    /* The optimizer goes on normally afterwards. */
    local_grad(fx.N, 2, g);
    ck_assert_ok(fx.opt, adampi_step(fx.opt, fx.params, g, NULL));
    ck_assert_int_eq(adampi_tensor_step(fx.opt, 3), 2);
    release(&before);
    free(g);
    drop(&fx);
  }
}
END_TEST

/* A NaN or Inf in the parameters (not the gradients): AdamP and SGDP, both policies, both step
 * modes. The last element lies in the last non-empty shard: only its owner sees it. */
START_TEST(nonfinite_parameter_is_refused)
{
  static const struct {
    adampi_kind kind;
    adampi_nonfinite_policy policy;
    float value;
    int data_parallel;
  } cases[] = {
    {ADAMPI_SGDP, ADAMPI_NONFINITE_ERROR, NAN, 0},       {ADAMPI_ADAMP, ADAMPI_NONFINITE_ERROR, INFINITY, 0},
    {ADAMPI_ADAMP, ADAMPI_NONFINITE_SKIP, -INFINITY, 1}, {ADAMPI_SGDP, ADAMPI_NONFINITE_SKIP, NAN, 1},
    {ADAMPI_ADAMP, ADAMPI_NONFINITE_ERROR, NAN, 1},
  };
  const int c = _i;
  fixture fx = make(cases[c].kind, cases[c].policy);
  float *g = malloc((size_t)fx.N * sizeof(float));
  global_grad(fx.N, 0, g);
  fx.params[fx.N - 1] = cases[c].value; /* identical on every rank, as adampi_step requires */
  snapshot before = take(&fx);
  adampi_status st = cases[c].data_parallel ? adampi_step(fx.opt, fx.params, g, NULL)
                                            : adampi_step_sharded(fx.opt, fx.params + fx.lo, g + fx.lo, NULL);
  if (cases[c].policy == ADAMPI_NONFINITE_ERROR) {
    ck_assert_msg(st == ADAMPI_ERR_NONFINITE, "[rank %d] case %d: status %s", test_rank(), c, adampi_strerror(st));
    ck_assert_msg(strstr(adampi_last_error(fx.opt), "parameters of tensor 4 'rows'"), "case %d: message: %s", c,
                  adampi_last_error(fx.opt));
  } else {
    ck_assert_msg(st == ADAMPI_OK, "[rank %d] case %d: skip policy returned %s", test_rank(), c, adampi_strerror(st));
    ck_assert_int_eq(adampi_steps_skipped(fx.opt), 1);
  }
  ck_assert_msg(unchanged(&fx, &before), "case %d: a refused step changed something", c);
  ck_assert_int_eq(adampi_steps_taken(fx.opt), 0);
  release(&before);
  free(g);
  drop(&fx);
}
END_TEST

START_TEST(ranks_that_disagree_fail_together)
{
  fixture fx = make(ADAMPI_ADAMP, ADAMPI_NONFINITE_ERROR);
  float *g = malloc((size_t)fx.N * sizeof(float));
  global_grad(fx.N, 0, g);
  snapshot before = take(&fx);
  int last = test_rank() == test_size() - 1, multi = test_size() > 1;
  unsigned char has[NT] = {1, 1, 1, 1, 1};
  if (last) has[2] = 0;
  adampi_status st = adampi_step_sharded(fx.opt, fx.params + fx.lo, g + fx.lo, has);
  ck_assert_int_eq(st, multi ? ADAMPI_ERR_MISMATCH : ADAMPI_OK);
  if (multi) {
    ck_assert_msg(strstr(adampi_last_error(fx.opt), "has_grad"), "message: %s", adampi_last_error(fx.opt));
    ck_assert_msg(unchanged(&fx, &before), "a refused step changed something");
    ck_assert_ok(fx.opt, adampi_set_lr(fx.opt, 0, last ? 0.5 : 0.25));
    st = adampi_step_sharded(fx.opt, fx.params + fx.lo, g + fx.lo, NULL);
    ck_assert_int_eq(st, ADAMPI_ERR_MISMATCH);
    ck_assert_msg(unchanged(&fx, &before), "a refused step changed something");
    ck_assert_ok(fx.opt, adampi_set_lr(fx.opt, 0, 0.25));
  }
  /* A NULL argument on one rank: every rank fails, nobody waits, nothing changes. */
  release(&before);
  before = take(&fx); /* on 1 rank the first step above was a valid one */
  int64_t n = fx.hi - fx.lo;
  st = adampi_step_sharded(fx.opt, (last && n) ? NULL : fx.params + fx.lo, g + fx.lo, NULL);
  int expect_fail = 0, local = last && n;
  MPI_Allreduce(&local, &expect_fail, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (expect_fail) {
    ck_assert_msg(st == ADAMPI_ERR_ARG, "[rank %d] NULL on the last rank gave %s", test_rank(), adampi_strerror(st));
    ck_assert_msg(strstr(adampi_last_error(fx.opt), "param_shard") || strstr(adampi_last_error(fx.opt), "failed"),
                  "message: %s", adampi_last_error(fx.opt));
  }
  ck_assert_msg(unchanged(&fx, &before), "a refused step (NULL param_shard) changed something");
  st = adampi_step(fx.opt, last ? NULL : fx.params, g, NULL);
  ck_assert_msg(st == ADAMPI_ERR_ARG, "[rank %d] NULL params on the last rank gave %s", test_rank(), adampi_strerror(st));
  ck_assert_msg(unchanged(&fx, &before), "a refused step (NULL params) changed something");
  st = adampi_step(fx.opt, fx.params, last ? NULL : g, NULL);
  ck_assert_msg(st == ADAMPI_ERR_ARG, "[rank %d] NULL grads on the last rank gave %s", test_rank(), adampi_strerror(st));
  ck_assert_msg(unchanged(&fx, &before), "a refused step (NULL grads) changed something");
  ck_assert_int_eq(adampi_step(NULL, fx.params, g, NULL), ADAMPI_ERR_ARG);
  release(&before);
  free(g);
  drop(&fx);
}
END_TEST

START_TEST(tensors_without_gradient_are_untouched)
{
  fixture fx = make(ADAMPI_SGDP, ADAMPI_NONFINITE_ERROR);
  float *g = malloc((size_t)fx.N * sizeof(float));
  global_grad(fx.N, 0, g);
  ck_assert_ok(fx.opt, adampi_step(fx.opt, fx.params, g, NULL));
  snapshot before = take(&fx);
  unsigned char has[NT] = {1, 0, 1, 0, 1};
  global_grad(fx.N, 1, g);
  ck_assert_ok(fx.opt, adampi_step(fx.opt, fx.params, g, has));
  for (int i = 0; i < NT; i++) {
    adampi_tensor_info t;
    adampi_tensor(fx.opt, i, &t);
    int same = !memcmp(fx.params + t.offset, before.params + t.offset, (size_t)t.numel * sizeof(float));
    ck_assert_msg(same == !has[i], "tensor %d (has_grad %d): parameters %s", i, has[i], same ? "unchanged" : "changed");
    ck_assert_int_eq(adampi_tensor_step(fx.opt, i), has[i] ? 2 : 1);
    adampi_diag d;
    adampi_diag_get(fx.opt, i, &d);
    ck_assert_int_eq(d.updated, has[i]);
  }
  release(&before);
  free(g);
  drop(&fx);
}
END_TEST

START_TEST(zero_and_tiny_weights_stay_finite)
{
  for (int kind = 0; kind < 2; kind++) {
    fixture fx = make((adampi_kind)kind, ADAMPI_NONFINITE_ERROR);
    float *g = calloc((size_t)fx.N, sizeof(float));
    adampi_tensor_info w, conv;
    adampi_tensor(fx.opt, 0, &w);
    adampi_tensor(fx.opt, 3, &conv);
    for (int64_t k = 0; k < w.numel; k++) fx.params[w.offset + k] = 0.0f;     /* zero weights */
    for (int64_t k = 0; k < conv.numel; k++) fx.params[conv.offset + k] *= 1e-12f; /* below eps */
    for (int step = 0; step < 3; step++) {
      if (step > 0) global_grad(fx.N, step, g); /* step 0: all-zero gradients */
      ck_assert_ok(fx.opt, adampi_step(fx.opt, fx.params, g, NULL));
    }
    for (int64_t k = 0; k < fx.N; k++) ck_assert_msg(isfinite(fx.params[k]), "kind %d: element %lld is %g", kind, (long long)k, fx.params[k]);
    adampi_diag d;
    adampi_diag_get(fx.opt, 0, &d);
    ck_assert_msg(d.updated && d.step == 3, "diag of the zero tensor: updated %d step %lld", d.updated, (long long)d.step);
    free(g);
    drop(&fx);
  }
}
END_TEST

/* The step buffers of adampi_alloc_step_buffers (direct loads within the node) give the same bits
 * as buffers of the caller's (messages): parameters on every rank, state, counters; over steps
 * with a has_grad mask, shards of several reduction blocks, gradients whose sum depends on the
 * order of the additions. _i: AdamP, SGDP. */
START_TEST(step_buffers_give_the_same_bits_as_messages)
{
  adampi_kind kind = _i ? ADAMPI_SGDP : ADAMPI_ADAMP;
  fixture own = make_sized(kind, ADAMPI_NONFINITE_ERROR, 1), shm = make_shared(kind, ADAMPI_NONFINITE_ERROR, 1);
  ck_assert_msg(!memcmp(own.params, shm.params, (size_t)own.N * sizeof(float)), "fixtures differ");
  float *g = malloc((size_t)own.N * sizeof(float));
  for (int step = 0; step < 5; step++) {
    unsigned char has[NT + 1] = {1, 1, 1, 1, 1, 1};
    if (step == 3) has[1] = has[5] = 0;
    if (step == 3 && test_rank() == test_size() - 1) {
      /* A stray value outside this rank's shard, in a tensor without gradient: the step gives every
       * rank the owners' values again, through either kind of buffers. */
      adampi_tensor_info b;
      adampi_tensor(own.opt, 1, &b);
      if (b.offset < own.lo) own.params[b.offset] = shm.params[b.offset] = 99.0f;
    }
    rounding_grad(own.N, step, g);
    ck_assert_ok(own.opt, adampi_step(own.opt, own.params, g, has));
    rounding_grad(shm.N, step, shm.grads);
    ck_assert_ok(shm.opt, adampi_step(shm.opt, shm.params, shm.grads, has));
    /* Checked on every rank together, so that a failure on one rank leaves no other one waiting. */
    int bad = memcmp(own.params, shm.params, (size_t)own.N * sizeof(float)) != 0, any = 0;
    for (int64_t k = 0; k < own.N; k++) bad |= (shm.params[k] == 99.0f) << 1;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_BOR, MPI_COMM_WORLD);
    ck_assert_msg(any == 0, "[rank %d] step %d: %s (this rank: %d)", test_rank(), step,
                  any & 2 ? "a stray value survived the step" : "the two kinds of buffers disagree", bad);
  }
  int64_t d = -1;
  for (int64_t k = 0; k < own.N && d < 0; k++)
    if (memcmp(&own.params[k], &shm.params[k], sizeof(float))) d = k;
  ck_assert_msg(d < 0, "[rank %d] step buffers and own buffers differ at %lld: %.9g vs %.9g", test_rank(), (long long)d,
                d >= 0 ? own.params[d] : 0.0, d >= 0 ? shm.params[d] : 0.0);
  int64_t n = own.hi - own.lo;
  for (int k = 0; k < 3; k++) {
    const float *a = adampi_state_shard(own.opt, (adampi_state_kind)k), *b = adampi_state_shard(shm.opt, (adampi_state_kind)k);
    ck_assert_msg((a == NULL) == (b == NULL) && (!a || !memcmp(a, b, (size_t)n * sizeof(float))), "state %d differs", k);
  }
  for (int i = 0; i <= NT; i++) ck_assert_int_eq(adampi_tensor_step(own.opt, i), adampi_tensor_step(shm.opt, i));
  adampi_profile prof;
  ck_assert_ok(shm.opt, adampi_get_profile(shm.opt, &prof));
  int64_t need = 2 * shm.N * (int64_t)sizeof(float); /* rounded up to whole pages */
  ck_assert_msg(prof.buffer_bytes >= need && prof.buffer_bytes < need + 65536, "buffer_bytes %lld for %lld", (long long)prof.buffer_bytes,
                (long long)need);
  ck_assert_ok(own.opt, adampi_get_profile(own.opt, &prof));
  ck_assert_int_eq(prof.buffer_bytes, 0);
  /* allocated_bytes: the state arrays and the gradient shard, on more than one rank the 4 MiB
   * packet buffer of the pairwise exchanges, and little else for a problem this small. */
  int64_t arrays = 1; /* the gradient shard */
  for (int k = 0; k < 3; k++) arrays += adampi_state_shard(own.opt, (adampi_state_kind)k) != NULL;
  int64_t least = arrays * n * (int64_t)sizeof(float) + (test_size() > 1 ? (int64_t)4 << 20 : 0);
  ck_assert_msg(prof.allocated_bytes >= least && prof.allocated_bytes < least + 65536,
                "[rank %d] allocated_bytes %lld, expected %lld and at most 64 KiB more", test_rank(),
                (long long)prof.allocated_bytes, (long long)least);
  /* Mixed: the shared parameters with the caller's gradients take the message path, same bits. */
  rounding_grad(own.N, 5, g);
  ck_assert_ok(own.opt, adampi_step(own.opt, own.params, g, NULL));
  ck_assert_ok(shm.opt, adampi_step(shm.opt, shm.params, g, NULL));
  ck_assert_msg(!memcmp(own.params, shm.params, (size_t)own.N * sizeof(float)), "mixed buffers: results differ");
  free(g);
  drop(&own);
  drop(&shm);
}
END_TEST

/* Through the step buffers, a refused step changes nothing either: a NaN in the last rank's
 * gradients, ranks that do not all pass the step buffers, a NULL argument. */
START_TEST(step_buffers_refused_steps_change_nothing)
{
  fixture fx = make_shared(ADAMPI_ADAMP, ADAMPI_NONFINITE_ERROR, 0);
  int last = test_rank() == test_size() - 1;
  local_grad(fx.N, 0, fx.grads);
  ck_assert_ok(fx.opt, adampi_step(fx.opt, fx.params, fx.grads, NULL));
  snapshot before = take(&fx);
  local_grad(fx.N, 1, fx.grads);
  if (last) fx.grads[fx.N / 2] = NAN;
  adampi_status st = adampi_step(fx.opt, fx.params, fx.grads, NULL);
  ck_assert_msg(st == ADAMPI_ERR_NONFINITE, "[rank %d] NaN: status %s", test_rank(), adampi_strerror(st));
  ck_assert_msg(unchanged(&fx, &before), "[rank %d] a refused step (NaN) changed something", test_rank());
  local_grad(fx.N, 1, fx.grads);
  if (test_size() > 1) {
    float *copy = malloc((size_t)fx.N * sizeof(float));
    memcpy(copy, fx.params, (size_t)fx.N * sizeof(float));
    st = adampi_step(fx.opt, last ? copy : fx.params, fx.grads, NULL);
    ck_assert_msg(st == ADAMPI_ERR_MISMATCH, "[rank %d] mixed buffers across ranks: status %s", test_rank(), adampi_strerror(st));
    ck_assert_msg(strstr(adampi_last_error(fx.opt), "adampi_alloc_step_buffers"), "message: %s", adampi_last_error(fx.opt));
    ck_assert_msg(unchanged(&fx, &before), "[rank %d] a refused step (mismatch) changed something", test_rank());
    ck_assert_msg(!memcmp(copy, fx.params, (size_t)fx.N * sizeof(float)), "the caller's copy changed");
    free(copy);
  }
  st = adampi_step(fx.opt, fx.params, last ? NULL : fx.grads, NULL);
  ck_assert_msg(st == ADAMPI_ERR_ARG, "[rank %d] NULL grads: status %s", test_rank(), adampi_strerror(st));
  ck_assert_msg(unchanged(&fx, &before), "[rank %d] a refused step (NULL) changed something", test_rank());
  ck_assert_ok(fx.opt, adampi_step(fx.opt, fx.params, fx.grads, NULL)); /* and it goes on */
  ck_assert_int_eq(adampi_steps_taken(fx.opt), 2);
  release(&before);
  drop(&fx);
}
END_TEST

/* adampi_alloc_step_buffers refuses, on every rank alike and changing nothing: before commit, a
 * NULL pointer on one rank, a second call. */
START_TEST(step_buffers_refusals)
{
  adampi_config cfg = adampi_config_defaults(ADAMPI_SGDP);
  adampi *opt = NULL;
  char err[256];
  ck_assert_int_eq(adampi_create(MPI_COMM_WORLD, &cfg, &opt, err, sizeof err), ADAMPI_OK);
  float *p = (float *)&cfg, *g = (float *)&cfg; /* sentinels: must stay untouched */
  ck_assert_int_eq(adampi_alloc_step_buffers(opt, &p, &g), ADAMPI_ERR_STATE);
  ck_assert_msg(strstr(adampi_last_error(opt), "before adampi_commit"), "message: %s", adampi_last_error(opt));
  ck_assert_int_eq(adampi_alloc_step_buffers(NULL, &p, &g), ADAMPI_ERR_ARG);
  adampi_hparams hp = adampi_sgdp_defaults(0.1);
  ck_assert_ok(opt, adampi_add_group(opt, &hp, NULL));
  const int64_t shape[2] = {4, 3};
  ck_assert_ok(opt, adampi_add_tensor(opt, "w", 2, shape, 0, NULL));
  ck_assert_ok(opt, adampi_commit(opt));
  int last = test_rank() == test_size() - 1;
  adampi_status st = adampi_alloc_step_buffers(opt, &p, last ? NULL : &g);
  ck_assert_msg(st == ADAMPI_ERR_ARG, "[rank %d] NULL on the last rank: status %s", test_rank(), adampi_strerror(st));
  ck_assert_msg(p == (float *)&cfg && g == (float *)&cfg, "a refused call wrote the pointers");
  ck_assert_ok(opt, adampi_alloc_step_buffers(opt, &p, &g));
  float *p2 = p, *g2 = g;
  ck_assert_int_eq(adampi_alloc_step_buffers(opt, &p2, &g2), ADAMPI_ERR_STATE);
  ck_assert_msg(p2 == p && g2 == g, "a refused second call wrote the pointers");
  for (int k = 0; k < 12; k++) p[k] = 1.0f, g[k] = 0.5f;
  ck_assert_ok(opt, adampi_step(opt, p, g, NULL)); /* the first buffers still work */
  ck_assert_msg(p[0] < 1.0f, "the step did not move the weights: %g", p[0]);
  adampi_free(&opt);
}
END_TEST

/* The diagnostics belong to the last step that updated the tensor: a refused step (_i = 0, error
 * policy) or a skipped one (_i = 1, skip policy) leaves every field of every tensor as it was,
 * although its statistics (other gradients, one NaN) differ from those of the step before. */
START_TEST(refused_or_skipped_step_leaves_diagnostics)
{
  adampi_nonfinite_policy policy = _i == 0 ? ADAMPI_NONFINITE_ERROR : ADAMPI_NONFINITE_SKIP;
  fixture fx = make(ADAMPI_ADAMP, policy);
  float *g = malloc((size_t)fx.N * sizeof(float));
  local_grad(fx.N, 0, g);
  ck_assert_ok(fx.opt, adampi_step(fx.opt, fx.params, g, NULL));
  adampi_diag before[NT], after[NT];
  for (int i = 0; i < NT; i++) ck_assert_ok(fx.opt, adampi_diag_get(fx.opt, i, &before[i]));
  local_grad(fx.N, 1, g);
  for (int64_t k = 0; k < fx.N; k++) g[k] *= 3.0f; /* other norms than step 0's */
  adampi_tensor_info t;
  adampi_tensor(fx.opt, 3, &t); /* "conv" */
  if (test_rank() == test_size() - 1) g[t.offset + 5] = NAN;
  adampi_status st = adampi_step(fx.opt, fx.params, g, NULL);
  ck_assert_msg(st == (_i == 0 ? ADAMPI_ERR_NONFINITE : ADAMPI_OK), "[rank %d] status %s", test_rank(), adampi_strerror(st));
  for (int i = 0; i < NT; i++) {
    ck_assert_ok(fx.opt, adampi_diag_get(fx.opt, i, &after[i]));
    const adampi_diag *a = &before[i], *b = &after[i];
    ck_assert_msg(a->updated == b->updated && a->view == b->view && a->step == b->step,
                  "[rank %d] policy %d tensor %d: updated/view/step %d/%d/%lld became %d/%d/%lld", test_rank(), _i, i,
                  a->updated, (int)a->view, (long long)a->step, b->updated, (int)b->view, (long long)b->step);
    ck_assert_msg(!memcmp(&a->cos_channel, &b->cos_channel, sizeof(double)) &&
                      !memcmp(&a->cos_layer, &b->cos_layer, sizeof(double)) &&
                      !memcmp(&a->weight_norm, &b->weight_norm, sizeof(double)) &&
                      !memcmp(&a->grad_norm, &b->grad_norm, sizeof(double)),
                  "[rank %d] policy %d tensor %d: cosines/norms %g %g %g %g became %g %g %g %g after a step that "
                  "changed nothing",
                  test_rank(), _i, i, a->cos_channel, a->cos_layer, a->weight_norm, a->grad_norm, b->cos_channel,
                  b->cos_layer, b->weight_norm, b->grad_norm);
  }
  /* The next step that updates publishes its own: the gradient norm of "w" is 3x step 0's or so. */
  if (test_rank() == test_size() - 1) g[t.offset + 5] = 0.0f;
  ck_assert_ok(fx.opt, adampi_step(fx.opt, fx.params, g, NULL));
  ck_assert_ok(fx.opt, adampi_diag_get(fx.opt, 0, &after[0]));
  ck_assert_msg(after[0].updated && after[0].step == 2 && after[0].grad_norm > 2.0 * before[0].grad_norm,
                "[rank %d] policy %d: the committed step published updated %d step %lld grad_norm %g (step 0: %g)",
                test_rank(), _i, after[0].updated, (long long)after[0].step, after[0].grad_norm, before[0].grad_norm);
  free(g);
  drop(&fx);
}
END_TEST

/* One element of AdamP's unprojected update at update t without weight decay, as MATHS.md writes
 * it, element by element and with both divisions: the coefficients in double, rounded to float
 * once; then m, v, the direction and w. Not contracted, as the library is not. */
__attribute__((optimize("fp-contract=off"))) static float adam_element(float w, float g, float *m, float *v,
                                                                        int64_t t, const adampi_hparams *hp)
{
  const double bc1 = 1.0 - pow(hp->beta1, (double)t), bc2 = 1.0 - pow(hp->beta2, (double)t);
  const float b1 = (float)hp->beta1, omb1 = (float)(1.0 - hp->beta1);
  const float b2 = (float)hp->beta2, omb2 = (float)(1.0 - hp->beta2);
  const float sqbc2 = (float)sqrt(bc2), eps = (float)hp->eps, lr_bc1 = (float)(hp->lr / bc1);
  float mi = b1 * *m + omb1 * g;
  float vi = b2 * *v + omb2 * g * g;
  float denom = sqrtf(vi) / sqbc2 + eps;
  float u = mi / denom;
  *m = mi, *v = vi;
  return w * 1.0f - lr_bc1 * u;
}

/* Late in a run, sqrt(1 - beta2^t) rounds to 1 in float (from update 16,626 with beta2 = 0.999)
 * and the kernels skip the division by it (src/adamp.c, UNIT). Each element of a 1-D tensor (never
 * projected) after one step from a state set at counter T, against adam_element bit for bit: at
 * T = 3 (the division taken) and T = 20,000 (skipped); 203 elements, so that every rank's shard has
 * blocks of 16 and a tail; the kernels of the set this CPU runs. */
START_TEST(adamp_late_in_a_run_gives_the_formula_bits)
{
  const int64_t T = _i == 0 ? 3 : 20000, len = 203;
  adampi_config cfg = adampi_config_defaults(ADAMPI_ADAMP);
  adampi *opt = NULL;
  char err[256];
  ck_assert_int_eq(adampi_create(MPI_COMM_WORLD, &cfg, &opt, err, sizeof err), ADAMPI_OK);
  adampi_hparams hp = adampi_adamp_defaults();
  hp.weight_decay = 0.0;
  hp.lr = 1.0; /* with w small, w's new bits are u's: a direction one ulp off shows */
  ck_assert_ok(opt, adampi_add_group(opt, &hp, NULL));
  ck_assert_ok(opt, adampi_add_tensor(opt, "b", 1, &len, 0, NULL));
  ck_assert_ok(opt, adampi_commit(opt));
  int64_t lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  const int64_t n = hi - lo;
  float *w = malloc((size_t)n * sizeof(float) + 4), *g = malloc((size_t)n * sizeof(float) + 4);
  float *m = malloc((size_t)n * sizeof(float) + 4), *v = malloc((size_t)n * sizeof(float) + 4);
  float *want = malloc((size_t)n * sizeof(float) + 4);
  uint64_t seed = 11 + (uint64_t)lo;
  for (int64_t i = 0; i < n; i++) {
    w[i] = test_uniform(&seed) * 0x1p-12f, g[i] = test_uniform(&seed) * 0x1p-4f;
    m[i] = test_uniform(&seed) * 0x1p-5f, v[i] = fabsf(test_uniform(&seed)) * 0x1p-9f;
  }
  adampi_state_in in = {m, v, NULL, &T, T, 0};
  ck_assert_ok(opt, adampi_set_state(opt, &in));
  for (int64_t i = 0; i < n; i++) want[i] = adam_element(w[i], g[i], &m[i], &v[i], T + 1, &hp);
  ck_assert_ok(opt, adampi_step_sharded(opt, w, g, NULL));
  const float *ms = adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG),
              *vs = adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG_SQ);
  for (int64_t i = 0; i < n; i++)
    ck_assert_msg(!memcmp(&w[i], &want[i], 4) && !memcmp(&ms[i], &m[i], 4) && !memcmp(&vs[i], &v[i], 4),
                  "[rank %d] update %lld, element %lld: w %a m %a v %a, the formula %a %a %a", test_rank(),
                  (long long)(T + 1), (long long)(lo + i), w[i], ms[i], vs[i], want[i], m[i], v[i]);
  free(w), free(g), free(m), free(v), free(want);
  adampi_free(&opt);
}
END_TEST

static Suite *make_suite(void)
{
  Suite *s = suite_create("step");
  TCase *tc = tcase_create("transaction");
  tcase_add_loop_test(tc, data_parallel_equals_sharded_with_the_mean_gradient, 0, 2);
  tcase_add_loop_test(tc, nonfinite_gradient_on_one_rank_changes_nothing, 0, 3);
  tcase_add_loop_test(tc, nonfinite_parameter_is_refused, 0, 5);
  tcase_add_test(tc, ranks_that_disagree_fail_together);
  tcase_add_test(tc, tensors_without_gradient_are_untouched);
  tcase_add_test(tc, zero_and_tiny_weights_stay_finite);
  tcase_add_loop_test(tc, refused_or_skipped_step_leaves_diagnostics, 0, 2);
  tcase_add_loop_test(tc, adamp_late_in_a_run_gives_the_formula_bits, 0, 2);
  suite_add_tcase(s, tc);
  TCase *buffers = tcase_create("step buffers");
  tcase_add_loop_test(buffers, step_buffers_give_the_same_bits_as_messages, 0, 2);
  tcase_add_test(buffers, step_buffers_refused_steps_change_nothing);
  tcase_add_test(buffers, step_buffers_refusals);
  suite_add_tcase(s, buffers);
  return s;
}

int main(int argc, char **argv) { return run_mpi_suite(argc, argv, make_suite); }
