/*
 * problem.h - the synthetic problem shared by the invariance, checkpoint and fault tests: tensors
 * with long rows, many short rows, a single row, rows longer than a rank's share, 0-d and 1-d
 * tensors; gradients that are a pure function of the step and the current parameters (random,
 * orthogonal per row, or orthogonal to the whole tensor, so both views project); missing
 * gradients; two groups; a learning rate that changes every step.
 */
#ifndef ADAMPI_TEST_PROBLEM_H
#define ADAMPI_TEST_PROBLEM_H

#include "mpi_check.h"

typedef struct problem_spec {
  const char *name;
  int ndim;
  int64_t shape[4];
  int group;
} problem_spec;

static const problem_spec problem_tensors[] = {
  {"long_rows", 2, {64, 300}, 0},   {"short_rows", 2, {500, 3}, 0}, {"scalar", 0, {0}, 1},
  {"bias", 1, {37}, 1},             {"one_row", 2, {1, 999}, 0},    {"huge_rows", 2, {2, 6000}, 0},
  {"conv", 4, {8, 4, 3, 3}, 0},     {"vector", 1, {5000}, 1},       {"tiny", 2, {2, 2}, 0},
};
#define PROBLEM_NT ((int)(sizeof problem_tensors / sizeof problem_tensors[0]))

typedef struct problem_variant {
  adampi_kind kind;
  int nesterov;
} problem_variant;

static const problem_variant problem_variants[] = {{ADAMPI_ADAMP, 0}, {ADAMPI_ADAMP, 1}, {ADAMPI_SGDP, 0}, {ADAMPI_SGDP, 1}};

static inline adampi_hparams problem_hparams(const problem_variant *v, int group)
{
  adampi_hparams hp = v->kind == ADAMPI_ADAMP ? adampi_adamp_defaults() : adampi_sgdp_defaults(0.05);
  hp.nesterov = v->nesterov;
  if (v->kind == ADAMPI_SGDP) hp.momentum = group ? 0.5 : 0.9;
  else hp.lr = 1e-2;
  if (group == 0) hp.weight_decay = 0.01;
  else hp.beta1 = 0.8, hp.beta2 = 0.99;
  return hp;
}

/* A committed optimizer for the problem on comm with the options of cfg (its kind must be v's;
 * TEST_THREADS, if set, overrides the thread count). NULL on failure, with the reason in err. */
static inline adampi *problem_create_cfg(MPI_Comm comm, const problem_variant *v, const adampi_config *options,
                                         char *err, size_t len)
{
  adampi_config cfg = *options;
  if (getenv("TEST_THREADS")) cfg.threads = atoi(getenv("TEST_THREADS")); /* results must not depend on it */
  adampi *opt = NULL;
  if (adampi_create(comm, &cfg, &opt, err, len) != ADAMPI_OK) return NULL;
  int rc = 0;
  for (int g = 0; g < 2 && !rc; g++) {
    adampi_hparams hp = problem_hparams(v, g);
    rc = adampi_add_group(opt, &hp, NULL);
  }
  for (int i = 0; i < PROBLEM_NT && !rc; i++)
    rc = adampi_add_tensor(opt, problem_tensors[i].name, problem_tensors[i].ndim, problem_tensors[i].shape,
                           problem_tensors[i].group, NULL);
  if (!rc) rc = adampi_commit(opt);
  if (rc) {
    snprintf(err, len, "%s", adampi_last_error(opt));
    adampi_free(&opt);
  }
  return opt;
}

/* problem_create_cfg with the defaults of v's kind and the given non-finite policy. */
static inline adampi *problem_create(MPI_Comm comm, const problem_variant *v, adampi_nonfinite_policy policy,
                                     char *err, size_t len)
{
  adampi_config cfg = adampi_config_defaults(v->kind);
  cfg.nonfinite = policy;
  return problem_create_cfg(comm, v, &cfg, err, len);
}

/* The initial parameters of this rank's shard. */
static inline void problem_init(const adampi *opt, float *shard)
{
  int64_t lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  uint64_t seed = 42;
  for (int64_t k = 0; k < hi; k++) {
    float x = 0.5f * test_uniform(&seed);
    if (k >= lo) shard[k - lo] = x;
  }
}

/* Gradient of step t for tensor i from its current full parameters. */
static inline void problem_grad(const adampi_tensor_info *t, int i, int step, const float *w, float *g)
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

static inline void problem_mask(int step, unsigned char *has)
{
  uint64_t ms = 99 + (uint64_t)step;
  for (int i = 0; i < PROBLEM_NT; i++) has[i] = step == 0 || (test_rng(&ms) % 5) != 0;
}

/* Steps [from, to) on comm; the shard's parameters are updated in place. Returns the first
 * failing status. views (3 counters) may be NULL; diag (to-from x PROBLEM_NT x 4 doubles) may be NULL. */
static inline adampi_status problem_steps(adampi *opt, MPI_Comm comm, const problem_variant *v, float *shard, int from,
                                          int to, int *views, double *diag)
{
  int64_t N = adampi_numel(opt), lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  float *full = malloc((size_t)N * sizeof *full), *grads = malloc((size_t)N * sizeof *grads);
  adampi_status st = ADAMPI_OK;
  for (int step = from; step < to && st == ADAMPI_OK; step++) {
    unsigned char has[PROBLEM_NT];
    problem_mask(step, has);
    for (int g = 0; g < 2 && st == ADAMPI_OK; g++) {
      adampi_hparams hp = problem_hparams(v, g);
      st = adampi_set_lr(opt, g, hp.lr * (1.0 + 0.05 * step));
    }
    gather_full(opt, comm, shard, full);
    for (int i = 0; i < PROBLEM_NT; i++) {
      adampi_tensor_info t;
      adampi_tensor(opt, i, &t);
      problem_grad(&t, i, step, full + t.offset, grads + t.offset);
    }
    if (st == ADAMPI_OK) st = adampi_step_sharded(opt, shard, grads + lo, has);
    for (int i = 0; i < PROBLEM_NT && st == ADAMPI_OK; i++) {
      adampi_diag d;
      adampi_diag_get(opt, i, &d);
      if (views && d.updated) views[d.view]++;
      if (diag) {
        double x[4] = {d.cos_channel, d.cos_layer, d.weight_norm, d.grad_norm};
        memcpy(diag + ((size_t)(step - from) * PROBLEM_NT + (size_t)i) * 4, x, sizeof x);
      }
    }
  }
  free(full);
  free(grads);
  return st;
}

/* Full parameters, state arrays and step counters, gathered on every rank of comm. */
typedef struct problem_result {
  int64_t numel;
  float *params, *s0, *s1;
  int64_t steps[PROBLEM_NT];
  int64_t taken, skipped;
} problem_result;

static inline void problem_collect(const adampi *opt, MPI_Comm comm, adampi_kind kind, const float *shard,
                                   problem_result *r)
{
  r->numel = adampi_numel(opt);
  r->params = malloc((size_t)r->numel * sizeof(float));
  r->s0 = calloc((size_t)r->numel, sizeof(float));
  r->s1 = calloc((size_t)r->numel, sizeof(float));
  gather_full(opt, comm, shard, r->params); /* empty shards pass NULL: gather_full sends nothing */
  gather_full(opt, comm, adampi_state_shard(opt, kind == ADAMPI_ADAMP ? ADAMPI_STATE_EXP_AVG : ADAMPI_STATE_MOMENTUM), r->s0);
  if (kind == ADAMPI_ADAMP) gather_full(opt, comm, adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG_SQ), r->s1);
  for (int i = 0; i < PROBLEM_NT; i++) r->steps[i] = adampi_tensor_step(opt, i);
  r->taken = adampi_steps_taken(opt);
  r->skipped = adampi_steps_skipped(opt);
}

static inline void problem_release(problem_result *r)
{
  free(r->params);
  free(r->s0);
  free(r->s1);
}

/* "" if a and b are bitwise equal, else a description of the first difference. */
static inline void problem_compare(const problem_result *a, const problem_result *b, char *out, size_t len)
{
  out[0] = '\0';
  const char *what[3] = {"params", "state0", "state1"};
  const float *x[3] = {a->params, a->s0, a->s1}, *y[3] = {b->params, b->s0, b->s1};
  for (int s = 0; s < 3; s++)
    for (int64_t k = 0; k < a->numel; k++)
      if (memcmp(&x[s][k], &y[s][k], sizeof(float)) != 0) {
        snprintf(out, len, "%s differ at element %lld: %.9g vs %.9g", what[s], (long long)k, x[s][k], y[s][k]);
        return;
      }
  if (memcmp(a->steps, b->steps, sizeof a->steps) != 0) snprintf(out, len, "tensor step counters differ");
  else if (a->taken != b->taken || a->skipped != b->skipped) snprintf(out, len, "steps taken/skipped differ");
}

#endif
