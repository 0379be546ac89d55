/*
 * step.c - one optimizer step: gather_row_stats (read only), one exchange in which the ranks also
 * agree on errors, decide_projection, then apply_update (the only writes). SPEC.md throughout.
 *
 * Collectives per step: sharded step 1 (2 when a tensor cut across ranks is projected under the
 * layer view: its <w,u> exists only once the decision is known, and computing it speculatively
 * for every cut tensor would cost a second read of its state at every step); data-parallel step
 * adds an agreement on arguments, the gradient reduce-scatter and the parameter all-gather.
 */
#include "internal.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* FNV-1a over what every rank must pass identically: the gradient mask and all hyper-parameters.
 * 48 bits, so that it travels exactly as a double. */
static double step_hash(const adampi *opt, const unsigned char *has_grad)
{
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < opt->num_tensors; i++) {
    h ^= has_grad ? (has_grad[i] != 0) : 1;
    h *= 1099511628211ull;
  }
  for (int g = 0; g < opt->num_groups; g++) {
    unsigned char p[ADAMPI_HPARAMS_BYTES];
    adampi__hparams_bytes(&opt->groups[g], p);
    for (size_t i = 0; i < sizeof p; i++) {
      h ^= p[i];
      h *= 1099511628211ull;
    }
  }
  return (double)(h >> 16);
}

static adampi__coef coef_for(const adampi *opt, const adampi__tensor *t, int64_t step, int view)
{
  const adampi_hparams *hp = &opt->groups[t->group];
  double r = view != ADAMPI_VIEW_NONE ? hp->wd_ratio : 1.0; /* weight-decay factor */
  return opt->cfg.kind == ADAMPI_ADAMP ? adampi__adamp_coef(hp, step, r) : adampi__sgdp_coef(hp, r);
}

/* <w,u> of n elements at shard position e under coefficients c (reads only). */
static double dot_wu(const adampi *opt, const float *w, const float *g, int64_t e, int64_t n,
                     const adampi__coef *c)
{
  if (opt->cfg.kind == ADAMPI_ADAMP)
    return adampi__adamp_wu(g + e, opt->state0 + e, opt->state1 + e, w + e, n, c);
  return adampi__sgdp_wu(g + e, opt->state0 + e, w + e, n, c);
}

static void apply(const adampi *opt, float *w, const float *g, int64_t e, int64_t n, const adampi__coef *c,
                  int proj, float k)
{
  if (opt->cfg.kind == ADAMPI_ADAMP)
    adampi__adamp_apply(g + e, opt->state0 + e, opt->state1 + e, w + e, n, c, proj, k);
  else
    adampi__sgdp_apply(g + e, opt->state0 + e, w + e, n, c, proj, k);
}

/* k such that u - w*k removes the radial part: <w,u> / (||w|| + eps)^2 (SPEC.md step 2). */
static float radial_coefficient(double wu, double ww, double eps)
{
  double norm = sqrt(ww) + eps;
  return (float)(wu / (norm * norm));
}

/* Layer-view tensors need <w,u> over all their rows before any row is updated. */
static adampi_status layer_coefficients(adampi *opt, float *w, const float *g)
{
  adampi_status st = ADAMPI_OK;
  int any = 0, exchange = 0;
  for (int i = 0; i < opt->num_tensors; i++) {
    adampi__tensor *t = &opt->tensors[i];
    if (opt->view[i] != ADAMPI_VIEW_LAYER) continue;
    if (!any) memset(opt->wu_nodes, 0, (size_t)opt->num_nodes * sizeof(double));
    any = 1;
    exchange |= t->first_rank != t->last_rank;
    if (t->my_nodes == 0) continue;
    adampi__coef c = coef_for(opt, t, t->step + 1, ADAMPI_VIEW_LAYER);
    for (int64_t r = t->my_leaf_lo; r < t->my_leaf_hi; r++) {
      int64_t e = t->offset + r * t->leaf_len - opt->lo;
      opt->row_wu[t->my_row_base + r - t->my_leaf_lo] = dot_wu(opt, w, g, e, t->leaf_len, &c);
    }
    adampi__wu_nodes(opt, t);
  }
  if (exchange) opt->profile.exchange_bytes += opt->num_nodes * (int64_t)sizeof(double);
  if (exchange)
    ADAMPI_MPI(opt, MPI_Allreduce(MPI_IN_PLACE, opt->wu_nodes, (int)opt->num_nodes, MPI_DOUBLE, MPI_SUM, opt->comm));
  for (int i = 0; i < opt->num_tensors && any; i++) {
    adampi__tensor *t = &opt->tensors[i];
    if (opt->view[i] != ADAMPI_VIEW_LAYER || t->my_nodes == 0) continue;
    opt->k_layer[i] = radial_coefficient(adampi__combine_wu(opt, t), t->sums.ww, opt->groups[t->group].eps);
  }
done:
  return st;
}

/* The writes of the step, once every rank knows every decision: in parallel over chunks. */
static void apply_update(adampi *opt, float *w, const float *g, const unsigned char *has_grad)
{
  for (int i = 0; i < opt->num_tensors; i++) {
    adampi__tensor *t = &opt->tensors[i];
    if (has_grad && !has_grad[i]) {
      t->diag.updated = 0; /* the rest stays that of its last update */
      continue;
    }
    t->step++;
    t->diag = t->staged; /* the step commits: its diagnostics become the published ones */
    t->diag.updated = 1;
    t->diag.step = t->step;
    t->diag.view = (adampi_view)opt->view[i];
    opt->coefs[i] = coef_for(opt, t, t->step, opt->view[i]);
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(opt->threads) if (opt->threads > 1)
  for (int64_t q = 0; q < opt->num_chunks; q++) {
    const adampi__chunk *ch = &opt->chunks[q];
    const adampi__tensor *t = &opt->tensors[ch->tensor];
    const adampi__coef *c = &opt->coefs[ch->tensor];
    int64_t first = t->offset + ch->r0 * t->leaf_len - opt->lo;
    int64_t n = (ch->r1 - ch->r0) * t->leaf_len;
    if (!t->diag.updated) {
      /* Unchanged, but the peers get the owner's values all the same, as from an all-gather. */
      if (opt->mirror) adampi__mirror_update(opt, w, first, n);
      continue;
    }
    if (opt->view[ch->tensor] == ADAMPI_VIEW_LAYER) {
      apply(opt, w, g, first, n, c, 1, opt->k_layer[ch->tensor]);
    } else if (opt->view[ch->tensor] == ADAMPI_VIEW_NONE) {
      apply(opt, w, g, first, n, c, 0, 0.0f);
    } else {
      /* Row by row: <w_r,u_r> while the row is read, then the update from cache. */
      double eps = opt->groups[t->group].eps;
      int keep_u = t->leaf_len <= opt->u_row_len;
#ifdef _OPENMP
      float *u_row = opt->u_row + (size_t)omp_get_thread_num() * (size_t)opt->u_row_len;
#else
      float *u_row = opt->u_row;
#endif
      for (int64_t r = ch->r0; r < ch->r1; r++) {
        int64_t e = t->offset + r * t->leaf_len - opt->lo;
        double ww = opt->row_sums[t->my_row_base + r - t->my_leaf_lo].ww;
        if (keep_u && opt->cfg.kind == ADAMPI_ADAMP) { /* state stored and u computed once, then w from u */
          double wu = adampi__adamp_moments_wu(g + e, opt->state0 + e, opt->state1 + e, w + e, u_row, t->leaf_len, c);
          adampi__adamp_finish_w(w + e, u_row, t->leaf_len, c, radial_coefficient(wu, ww, eps));
        } else if (keep_u) {
          double wu = adampi__sgdp_buffer_wu(g + e, opt->state0 + e, w + e, u_row, t->leaf_len, c);
          adampi__sgdp_finish(opt->state0 + e, w + e, u_row, t->leaf_len, c, radial_coefficient(wu, ww, eps));
        } else {
          double wu = dot_wu(opt, w, g, e, t->leaf_len, c);
          apply(opt, w, g, e, t->leaf_len, c, 1, radial_coefficient(wu, ww, eps));
        }
      }
    }
    if (opt->mirror) adampi__mirror_update(opt, w, first, n); /* from cache, to every peer */
  }
}

/* The sharded step on w = params[lo, hi), g = averaged grads[lo, hi). local_st/local_msg: an
 * error this rank found before the step, which the exchange makes known to every rank. */
static adampi_status step_shard(adampi *opt, float *w, const float *g, const unsigned char *has_grad,
                                adampi_status local_st)
{
  adampi_status st = ADAMPI_OK;
  int P = opt->size;
  double t0 = MPI_Wtime();
  memset(opt->stats, 0, (size_t)opt->stats_len * sizeof(double));
  opt->stats[opt->rank] = (double)local_st;
  opt->stats[P + opt->rank] = step_hash(opt, has_grad);
  if (local_st == ADAMPI_OK) adampi__gather_row_stats(opt, w, g, has_grad);
  double t1 = MPI_Wtime();
  opt->profile.seconds[ADAMPI_PHASE_STATS] = t1 - t0;
  opt->profile.exchange_bytes = opt->stats_len * (int64_t)sizeof(double);
  ADAMPI_MPI(opt, MPI_Allreduce(MPI_IN_PLACE, opt->stats, (int)opt->stats_len, MPI_DOUBLE, MPI_SUM, opt->comm));

  for (int r = 0; r < P; r++) {
    if (opt->stats[r] == 0.0) continue;
    st = (adampi_status)(int)opt->stats[r];
    if (r != opt->rank) st = ADAMPI_FAIL(opt, st, "rank %d failed: %s", r, adampi_strerror(st));
    return st;
  }
  for (int r = 1; r < P; r++)
    if (opt->stats[P + r] != opt->stats[P])
      return ADAMPI_FAIL(opt, ADAMPI_ERR_MISMATCH,
                         "ranks 0 and %d passed different has_grad masks or hold different "
                         "hyper-parameters (every rank must make the same set_lr/set_hparams calls)",
                         r);

  int is_param = 0;
  int bad = adampi__decide_projection(opt, has_grad, &is_param);
  if (bad >= 0) {
    if (opt->cfg.nonfinite == ADAMPI_NONFINITE_SKIP) {
      opt->steps_skipped++;
      return ADAMPI_OK;
    }
    return ADAMPI_FAIL(opt, ADAMPI_ERR_NONFINITE,
                       "NaN or Inf in the %s of tensor %d '%s' at step %lld; nothing was changed",
                       is_param ? "parameters" : "gradient", bad, opt->tensors[bad].name,
                       (long long)(opt->steps_taken + opt->steps_skipped));
  }
  st = layer_coefficients(opt, w, g);
  if (st != ADAMPI_OK) return st;
  double t2 = MPI_Wtime();
  opt->profile.seconds[ADAMPI_PHASE_EXCHANGE] = t2 - t1;
  apply_update(opt, w, g, has_grad);
  opt->profile.seconds[ADAMPI_PHASE_UPDATE] = MPI_Wtime() - t2;
  opt->steps_taken++;
done:
  return st;
}

adampi_status adampi_step_sharded(adampi *opt, float *param_shard, const float *grad_shard,
                                  const unsigned char *has_grad)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  opt->profile.seconds[ADAMPI_PHASE_REDUCE_SCATTER] = opt->profile.seconds[ADAMPI_PHASE_ALLGATHER] = 0.0;
  opt->profile.gradient_bytes = 0;
  /* Commit is collective and agreed, so this test gives the same answer on every rank. */
  if (!opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "step before adampi_commit");
  adampi_status local = ADAMPI_OK;
  if (opt->hi > opt->lo && (param_shard == NULL || grad_shard == NULL))
    local = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: %s is NULL but its shard holds %lld elements", opt->rank,
                        param_shard == NULL ? "param_shard" : "grad_shard", (long long)(opt->hi - opt->lo));
  return step_shard(opt, param_shard, grad_shard, has_grad, local);
}

/* Elements of chunk k (of len elements each) of a range of total elements: 0 past its end. */
static int chunk(int64_t total, int64_t k, int64_t len)
{
  return (int)(total - k < len ? (total > k ? total - k : 0) : len);
}

/* One chunk of a reduce-scatter round into the shard: the first round adds the received chunk to
 * this rank's own gradients, later ones to the running sum, and the last also divides by the rank
 * count. The same additions, in the same order, as copy, add round by round, divide; in one pass
 * over the chunk instead of three. */
static void add_chunk(float *restrict mine, const float *restrict own, const float *restrict tmp, int64_t len,
                      int first, int last, float ranks)
{
  if (first && last)
    for (int64_t i = 0; i < len; i++) mine[i] = (own[i] + tmp[i]) / ranks;
  else if (first)
    for (int64_t i = 0; i < len; i++) mine[i] = own[i] + tmp[i];
  else if (last)
    for (int64_t i = 0; i < len; i++) mine[i] = (mine[i] + tmp[i]) / ranks;
  else
    for (int64_t i = 0; i < len; i++) mine[i] += tmp[i];
}

/* Rank q's step buffers, if this rank maps them (a step through the step buffers, q on this
 * node), else NULL: then q's data travel as messages. */
static const float *near_grads(const adampi *opt, int q) { return opt->mirror ? opt->peer_grads[q] : NULL; }
static int near(const adampi *opt, int q) { return opt->mirror && opt->peer_params[q] != NULL; }

/* Sum the ranks' gradients into the shard and divide by the rank count: a pairwise exchange in
 * P - 1 rounds (round s: send my copy of rank r+s's shard, receive rank r-s's copy of mine), in
 * chunks through a fixed scratch buffer. Measured 2-3x faster than MPI_Reduce_scatter on one
 * node here (benchmarks/bench_step --mode dp), and its order of additions is fixed by us. In a
 * step through the step buffers, a rank on this node is read where its gradients lie instead
 * (same additions, same order). */
static adampi_status reduce_scatter_mean(adampi *opt, const float *grads)
{
  adampi_status st = ADAMPI_OK;
  int P = opt->size, r = opt->rank;
  int64_t n = opt->hi - opt->lo;
  float *mine = opt->grad_shard, *tmp = opt->rs_scratch;
  for (int s = 1; s < P; s++) {
    int to = (r + s) % P, from = (r - s + P) % P;
    const float *in = near_grads(opt, from);
    int dest = near(opt, to) ? MPI_PROC_NULL : to, src = in ? MPI_PROC_NULL : from;
    int64_t to_lo = opt->shard_lo[to], to_n = opt->shard_lo[to + 1] - to_lo;
    for (int64_t k = 0; k < to_n || k < n; k += opt->rs_scratch_len) {
      int send = dest == MPI_PROC_NULL ? 0 : chunk(to_n, k, opt->rs_scratch_len);
      int recv = chunk(n, k, opt->rs_scratch_len);
      if (dest != MPI_PROC_NULL || src != MPI_PROC_NULL)
        ADAMPI_MPI(opt, MPI_Sendrecv(grads + to_lo + (send ? k : 0), send, MPI_FLOAT, dest, 17, tmp, in ? 0 : recv, MPI_FLOAT,
                                     src, 17, opt->comm, MPI_STATUS_IGNORE));
      if (recv > 0)
        add_chunk(mine + k, grads + opt->lo + k, in ? in + opt->lo + k : tmp, recv, s == 1, s == P - 1, (float)P);
    }
  }
done:
  return st;
}

/* Every rank's updated shard into every rank's params: the same pairwise rounds as the
 * reduce-scatter, received in place (measured faster than MPI_Allgatherv here, and its counts are
 * chunks, so any buffer size works). In a step through the step buffers, ranks on this node have
 * stored their shards already (adampi__mirror_update): only the other pairs exchange. */
adampi_status adampi__allgather_params(adampi *opt, float *params)
{
  adampi_status st = ADAMPI_OK;
  int P = opt->size, r = opt->rank;
  int64_t n = opt->hi - opt->lo;
  for (int s = 1; s < P; s++) {
    int to = (r + s) % P, from = (r - s + P) % P;
    int dest = near(opt, to) ? MPI_PROC_NULL : to, src = near(opt, from) ? MPI_PROC_NULL : from;
    if (dest == MPI_PROC_NULL && src == MPI_PROC_NULL) continue;
    int64_t from_lo = opt->shard_lo[from], from_n = opt->shard_lo[from + 1] - from_lo;
    for (int64_t k = 0; k < from_n || k < n; k += opt->rs_scratch_len) {
      int send = dest == MPI_PROC_NULL ? 0 : chunk(n, k, opt->rs_scratch_len);
      int recv = src == MPI_PROC_NULL ? 0 : chunk(from_n, k, opt->rs_scratch_len);
      ADAMPI_MPI(opt, MPI_Sendrecv(params + opt->lo + (send ? k : 0), send, MPI_FLOAT, dest, 18,
                                   params + from_lo + (recv ? k : 0), recv, MPI_FLOAT, src, 18, opt->comm,
                                   MPI_STATUS_IGNORE));
    }
  }
done:
  return st;
}

adampi_status adampi_step(adampi *opt, float *params, const float *grads, const unsigned char *has_grad)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  if (!opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "step before adampi_commit");
  adampi_status st = ADAMPI_OK;
  const int P = opt->size;
  int status = ADAMPI_OK, direct = adampi__direct_step(opt, params, grads);
  if (params == NULL || grads == NULL)
    status = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: %s is NULL", opt->rank, params == NULL ? "params" : "grads");
  /* The reduce-scatter needs every rank's buffers: agree on the arguments first. One maximum over
   * {the worst status with the lowest rank that has it, direct, !direct}; the collective also
   * orders every rank's writes to its shared gradients before the direct reduction's loads. */
  int mine[3] = {status * P + (P - 1 - opt->rank), direct, !direct}, worst[3];
  adampi__step_buffers_sync(opt);
  ADAMPI_MPI(opt, MPI_Allreduce(mine, worst, 3, MPI_INT, MPI_MAX, opt->comm));
  adampi__step_buffers_sync(opt);
  if (worst[0] / P != ADAMPI_OK) {
    int rank = P - 1 - worst[0] % P;
    adampi_status ws = (adampi_status)(worst[0] / P);
    return rank == opt->rank ? ws
                             : ADAMPI_FAIL(opt, ws, "rank %d failed: %s", rank, adampi_strerror(ws));
  }
  if (worst[1] && worst[2])
    return ADAMPI_FAIL(opt, ADAMPI_ERR_MISMATCH,
                       "some ranks passed the buffers of adampi_alloc_step_buffers and some did not "
                       "(rank %d did%s): every rank must pass them, or none; nothing was changed",
                       opt->rank, direct ? "" : " not");
  double t0 = MPI_Wtime();
  /* Through the step buffers, ranks on this node read each other's gradients and the update pass
   * stores its shard into their parameters; with every rank on the node, in one pass. */
  opt->mirror = P > 1 && direct;
  /* One rank: its gradients are the mean (g / 1 == g exactly); nothing to reduce or gather. */
  if (P > 1 && direct && opt->shm_direct) adampi__direct_reduce(opt);
  else if (P > 1) st = reduce_scatter_mean(opt, grads);
  if (st != ADAMPI_OK) {
    opt->mirror = 0;
    return st;
  }
  double t1 = MPI_Wtime();
  int64_t before = opt->steps_taken;
  st = step_shard(opt, params + opt->lo, P > 1 ? opt->grad_shard : grads, has_grad, ADAMPI_OK);
  opt->profile.seconds[ADAMPI_PHASE_REDUCE_SCATTER] = t1 - t0;
  opt->profile.gradient_bytes = opt->numel * (int64_t)sizeof(float);
  if (st != ADAMPI_OK || opt->steps_taken == before) { /* failed or skipped: nothing to share */
    opt->mirror = 0;
    return st;
  }
  t1 = MPI_Wtime();
  if (P > 1 && !(direct && opt->shm_direct)) st = adampi__allgather_params(opt, params);
  if (P > 1 && direct && st == ADAMPI_OK) st = adampi__direct_finish(opt); /* the stores of this node's ranks */
  opt->profile.seconds[ADAMPI_PHASE_ALLGATHER] = MPI_Wtime() - t1;
done:
  opt->mirror = 0;
  return st;
}
