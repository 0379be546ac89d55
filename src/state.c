/*
 * state.c - optimizer state handed in by the caller (adampi_set_state) and the all-gather of a
 * flat buffer's shards (adampi_allgather): what a front end needs to build a whole state dict from
 * the shards and to take one back, made on any number of ranks.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COUNTER ((int64_t)1 << 53)

/* FNV-1a over the counters: equal on every rank exactly when the counters are. */
static uint64_t counters_hash(const adampi *opt, const adampi_state_in *in)
{
  uint64_t h = 1469598103934665603ull;
  const int64_t head[2] = {in->steps_taken, in->steps_skipped};
  const unsigned char *bytes[2] = {(const unsigned char *)head, (const unsigned char *)in->tensor_steps};
  size_t lens[2] = {sizeof head, (size_t)opt->num_tensors * sizeof(int64_t)};
  for (int k = 0; k < 2; k++)
    for (size_t i = 0; i < lens[k]; i++) h = (h ^ bytes[k][i]) * 1099511628211ull;
  return h;
}

/* The tensor holding flat element e (tensors are laid out in registration order). */
static int tensor_at(const adampi *opt, int64_t e)
{
  int a = 0, b = opt->num_tensors - 1;
  while (a < b) {
    int m = (a + b + 1) / 2;
    if (opt->tensors[m].offset <= e) a = m;
    else b = m - 1;
  }
  return a;
}

adampi_status adampi__check_shard(adampi *opt, const char *what, const float *x, int nonneg)
{
  int64_t n = opt->hi - opt->lo;
  for (int64_t k = 0; k < n; k++) {
    if (isfinite(x[k]) && !(nonneg && x[k] < 0.0f)) continue;
    int64_t e = opt->lo + k;
    const adampi__tensor *t = &opt->tensors[tensor_at(opt, e)];
    return ADAMPI_FAIL(opt, isfinite(x[k]) ? ADAMPI_ERR_ARG : ADAMPI_ERR_NONFINITE,
                       "rank %d: %s of tensor '%s' holds %s (%g) at element %lld; nothing was changed", opt->rank,
                       what, t->name, isfinite(x[k]) ? "a negative value" : "NaN or Inf", (double)x[k],
                       (long long)(e - t->offset));
  }
  return ADAMPI_OK;
}

static adampi_status check_state_in(adampi *opt, const adampi_state_in *in)
{
  int adamp = opt->cfg.kind == ADAMPI_ADAMP, empty = opt->hi == opt->lo;
  if (in == NULL) return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: the state is NULL", opt->rank);
  if (in->tensor_steps == NULL && opt->num_tensors > 0)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: tensor_steps is NULL", opt->rank);
  if (adamp ? in->momentum != NULL : in->exp_avg != NULL || in->exp_avg_sq != NULL)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: %s given to an %s optimizer", opt->rank,
                       adamp ? "momentum" : "exp_avg/exp_avg_sq", adamp ? "AdamP" : "SGDP");
  if (!empty && (adamp ? in->exp_avg == NULL || in->exp_avg_sq == NULL : in->momentum == NULL))
    return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: %s is NULL but the shard holds %lld elements", opt->rank,
                       adamp ? (in->exp_avg == NULL ? "exp_avg" : "exp_avg_sq") : "momentum",
                       (long long)(opt->hi - opt->lo));
  if (in->steps_taken < 0 || in->steps_taken > MAX_COUNTER || in->steps_skipped < 0 || in->steps_skipped > MAX_COUNTER)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "steps_taken = %lld / steps_skipped = %lld outside 0..2^53",
                       (long long)in->steps_taken, (long long)in->steps_skipped);
  for (int i = 0; i < opt->num_tensors; i++)
    if (in->tensor_steps[i] < 0 || in->tensor_steps[i] > MAX_COUNTER)
      return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "the step of tensor %d '%s' is %lld, outside 0..2^53", i,
                         opt->tensors[i].name, (long long)in->tensor_steps[i]);
  if (empty) return ADAMPI_OK;
  adampi_status st = adamp ? adampi__check_shard(opt, "exp_avg", in->exp_avg, 0) : adampi__check_shard(opt, "momentum", in->momentum, 0);
  if (st == ADAMPI_OK && adamp) st = adampi__check_shard(opt, "exp_avg_sq", in->exp_avg_sq, 1);
  return st;
}

adampi_status adampi_set_state(adampi *opt, const adampi_state_in *in)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  if (!opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "set_state before adampi_commit");
  adampi_status st = check_state_in(opt, in);
  size_t n = (size_t)(opt->hi - opt->lo), bytes = n * sizeof(float);
  int adamp = opt->cfg.kind == ADAMPI_ADAMP;
  float *s0 = NULL, *s1 = NULL;
  if (st == ADAMPI_OK) {
    s0 = adampi__alloc_zeroed(bytes);
    s1 = adampi__alloc_zeroed(adamp ? bytes : 0);
    if ((n > 0 && s0 == NULL) || (adamp && n > 0 && s1 == NULL))
      st = ADAMPI_FAIL(opt, ADAMPI_ERR_NOMEM, "rank %d: no memory to stage %zu bytes of state", opt->rank, 2 * bytes);
  }
  /* The counters must be the same everywhere: compare their hash across ranks (only if every rank
   * could compute it, so agree on the local checks first). */
  if ((st = adampi__agree(opt, st)) != ADAMPI_OK) goto done;
  /* One maximum over {h, ~h}: the largest and (complemented) the smallest hash. */
  uint64_t h = counters_hash(opt, in), mine[2] = {h, ~h}, most[2] = {0, 0};
  if (MPI_Allreduce(mine, most, 2, MPI_UINT64_T, MPI_MAX, opt->comm) != MPI_SUCCESS)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_MPI, "MPI_Allreduce of the state counters failed");
  else if (most[0] != ~most[1])
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_MISMATCH,
                     "ranks hold different step counters (tensor steps, steps_taken or steps_skipped); nothing was changed");
  if ((st = adampi__agree(opt, st)) != ADAMPI_OK) goto done;

  /* Everything is checked on every rank: swap the staged copies in. */
  if (n > 0) {
    memcpy(s0, adamp ? in->exp_avg : in->momentum, bytes);
    if (adamp) memcpy(s1, in->exp_avg_sq, bytes);
  }
  float *old0 = opt->state[ADAMPI__EXP_AVG], *old1 = opt->state[ADAMPI__EXP_AVG_SQ];
  opt->state[ADAMPI__EXP_AVG] = s0, s0 = old0;
  if (adamp) opt->state[ADAMPI__EXP_AVG_SQ] = s1, s1 = old1;
  for (int i = 0; i < opt->num_tensors; i++) {
    opt->tensors[i].updates = in->tensor_steps[i];
    memset(&opt->tensors[i].diag, 0, sizeof opt->tensors[i].diag);
  }
  opt->steps_taken = in->steps_taken;
  opt->steps_skipped = in->steps_skipped;
done:
  adampi__free_zeroed(s0, bytes);
  adampi__free_zeroed(s1, adamp ? bytes : 0);
  return st;
}

adampi_status adampi_allgather(adampi *opt, float *full)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  if (!opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "allgather before adampi_commit");
  adampi_status st = full == NULL ? ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: full is NULL", opt->rank) : ADAMPI_OK;
  if ((st = adampi__agree(opt, st)) != ADAMPI_OK) return st;
  if (opt->size == 1) return ADAMPI_OK;
  st = adampi__pairwise_share(opt, full, sizeof(float), NULL);
  return adampi__agree(opt, st);
}
