/*
 * step.c - one optimizer step: the statistics pass (read only), one exchange in which the ranks also
 * agree on errors, decide_projection, then apply_update (the only writes). Maths: MATHS.md.
 *
 * Collectives per step: sharded step 1 (2 when a tensor cut across ranks is projected under the
 * layer view: its <w,u> exists only once the decision is known, and computing it speculatively
 * for every cut tensor would cost a second read of its state at every step); data-parallel step
 * adds an agreement on arguments, the gradient reduce-scatter and the parameter all-gather, both
 * through a transport of exchange.h (messages or node-shared memory) chosen once per step. The
 * update dispatches on the optimizer's kernel table (kernels_of) and, by view and row length, in
 * one function (update_task).
 */
#include "internal.h"

#include <math.h>
#include <string.h>

/* FNV-1a over what every rank must pass identically: the gradient mask, all hyper-parameters, the
 * clipping threshold and the gradient scale. 48 bits, so that it travels exactly as a double. */
static double step_hash(const adampi *opt, const unsigned char *has_grad, double grad_scale)
{
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < opt->num_tensors; i++) {
    h ^= has_grad ? (has_grad[i] != 0) : 1;
    h *= 1099511628211ull;
  }
  for (int g = 0; g <= opt->num_groups; g++) {
    unsigned char p[ADAMPI_HPARAMS_BYTES];
    size_t len = sizeof p;
    if (g < opt->num_groups) {
      adampi__hparams_bytes(&opt->groups[g], p);
    } else { /* the step's own settings */
      const double step[2] = {opt->cfg.max_grad_norm, grad_scale};
      memcpy(p, step, len = sizeof step);
    }
    for (size_t i = 0; i < len; i++) {
      h ^= p[i];
      h *= 1099511628211ull;
    }
  }
  return (double)(h >> 16);
}

/* The kernels of the optimizer's kind: the one place the update chooses them. (With 16-bit
 * element types, the element type becomes this table's second index.) */
static const adampi__kernels *kernels_of(const adampi *opt)
{
  static const adampi__kernels *const table[] = {[ADAMPI_ADAMP] = &adampi__adamp_kernels,
                                                 [ADAMPI_SGDP] = &adampi__sgdp_kernels};
  return table[opt->cfg.kind];
}

/* The coefficients of update number `update` of tensor t under a view. */
static adampi__coef coef_for(const adampi *opt, const adampi__tensor *t, int64_t update, int view)
{
  const adampi_hparams *hp = &opt->groups[t->group];
  double r = view != ADAMPI_VIEW_NONE ? hp->wd_ratio : 1.0; /* weight-decay factor */
  adampi__coef c = kernels_of(opt)->coef(hp, update, r);
  c.gmul = opt->gmul; /* this step's clipping factor (decide_projection) */
  return c;
}

/* The n elements of tensor t at shard position e of w, g and the state, and of the 16-bit
 * parameters the step rounds w into (opt->round_out), if any; t's gradients from the caller's
 * 16-bit ones instead of g where this step reads them in place (adampi__direct_grads). */
static adampi__span span_at(const adampi *opt, const adampi__tensor *t, float *w, const float *g, int64_t e,
                            int64_t n)
{
  adampi__span s = {g + e, w + e, {NULL}, n, NULL, ADAMPI_FLOAT32, NULL, ADAMPI_FLOAT32, 1.0f};
  for (int j = 0; j < kernels_of(opt)->num_state; j++) s.state[j] = opt->state[j] + e;
  if (opt->round_out) s.w16 = (uint16_t *)opt->round_out + e, s.dtype16 = opt->cfg.dtype;
  if (adampi__direct_grads(opt, t)) {
    s.g16 = (const uint16_t *)opt->intake + e, s.g16_type = opt->cfg.dtype;
    if (adampi__grad_scaling(opt->intake_scale, &s.gq)) s.g16_type |= ADAMPI__GRAD_MUL;
  }
  return s;
}

/* The CPU's float16 rounding where span s's parameters are float16 and the CPU converts
 * (adampi__f16_rounding), else NULL: the rows kernels round their last row by it. Where it is set,
 * the kernels run as the wide or the x86-64-v3 set (both need what adampi__f16_rounding needs),
 * which write w as float32 and round each 16 as they write them (adampi__round16); elsewhere they
 * round each element in software. */
static adampi__round_fn cpu_rounding(const adampi__span *s)
{
  return s->dtype16 == ADAMPI_FLOAT16 ? adampi__f16_rounding() : NULL;
}

/* Layer-view tensors need <w,u> over all their rows before any row is updated. */
static adampi_status layer_coefficients(adampi *opt, float *w, const float *g)
{
  adampi_status st = ADAMPI_OK;
  const adampi__kernels *kn = kernels_of(opt);
  int any = 0, exchange = 0;
  for (int i = 0; i < opt->num_tensors; i++) {
    adampi__tensor *t = &opt->tensors[i];
    if (opt->view[i] != ADAMPI_VIEW_LAYER) continue;
    if (!any) memset(opt->wu_nodes, 0, (size_t)opt->num_nodes * sizeof(double));
    any = 1;
    exchange |= t->first_rank != t->last_rank;
    if (t->my_nodes == 0) continue;
    adampi__coef c = coef_for(opt, t, t->updates + 1, ADAMPI_VIEW_LAYER);
    for (int64_t r = t->my_leaf_lo; r < t->my_leaf_hi; r++) {
      adampi__span s = span_at(opt, t, w, g, t->offset + r * t->leaf_len - opt->lo, t->leaf_len);
      opt->row_wu[t->my_row_base + r - t->my_leaf_lo] = kn->wu(&s, &c);
    }
    adampi__wu_nodes(opt, t);
  }
  if (exchange) opt->profile.exchange_bytes += opt->num_nodes * (int64_t)sizeof(double);
  if (exchange)
    ADAMPI_MPI(opt, MPI_Allreduce(MPI_IN_PLACE, opt->wu_nodes, (int)opt->num_nodes, MPI_DOUBLE, MPI_SUM, opt->comm));
  for (int i = 0; i < opt->num_tensors && any; i++) {
    adampi__tensor *t = &opt->tensors[i];
    if (opt->view[i] != ADAMPI_VIEW_LAYER || t->my_nodes == 0) continue;
    opt->k_layer[i] = adampi__radial_coefficient(adampi__combine_wu(opt, t), t->sums.ww, opt->groups[t->group].eps);
  }
done:
  return st;
}

/* The update of one task of a tensor that has a gradient: the one place that chooses how
 * elements are updated, by view and row length. u_row: this thread's row scratch. */
static void update_task(const adampi *opt, const adampi__kernels *kn, const adampi__task *task, float *w,
                        const float *g, float *u_row)
{
  const adampi__tensor *t = &opt->tensors[task->tensor];
  const adampi__coef *c = &opt->coefs[task->tensor];
  int view = opt->view[task->tensor];
  int64_t first = t->offset + task->r0 * t->leaf_len - opt->lo;
  adampi__span s = span_at(opt, t, w, g, first, (task->r1 - task->r0) * t->leaf_len);
  if (view != ADAMPI_VIEW_CHANNEL) { /* one call over the task; the layer view with its k */
    kn->apply(&s, c, view == ADAMPI_VIEW_LAYER, view == ADAMPI_VIEW_LAYER ? opt->k_layer[task->tensor] : 0.0f);
    return;
  }
  /* Row by row, each with its own k from <w_r,u_r>: in one call where the rows fit the scratch
   * (the state stored and u computed once, then w from u), else <w_r,u_r> read first. */
  double eps = opt->groups[t->group].eps;
  const adampi__sums *ww = &opt->row_sums[t->my_row_base + task->r0 - t->my_leaf_lo];
  if (t->leaf_len <= opt->u_row_len) {
    kn->rows(&s, t->leaf_len, ww, eps, u_row, cpu_rounding(&s), c);
    return;
  }
  for (int64_t r = task->r0; r < task->r1; r++) {
    adampi__span row = span_at(opt, t, w, g, first + (r - task->r0) * t->leaf_len, t->leaf_len);
    kn->apply(&row, c, 1, adampi__radial_coefficient(kn->wu(&row, c), ww[r - task->r0].ww, eps));
  }
}

/* The writes of the step, once every rank knows every decision: in parallel over tasks. store:
 * the transport's hook, called for every task once its elements are final (NULL: none). */
static void apply_update(adampi *opt, float *w, const float *g, const unsigned char *has_grad, adampi__store_fn store)
{
  const adampi__kernels *kn = kernels_of(opt);
  for (int i = 0; i < opt->num_tensors; i++) {
    adampi__tensor *t = &opt->tensors[i];
    if (has_grad && !has_grad[i]) {
      t->diag.updated = 0; /* the rest stays that of its last update */
      continue;
    }
    t->updates++;
    t->diag = t->staged; /* the step commits: its diagnostics become the published ones */
    t->diag.updated = 1;
    t->diag.step = t->updates;
    t->diag.view = (adampi_view)opt->view[i];
    opt->coefs[i] = coef_for(opt, t, t->updates, opt->view[i]);
  }
  adampi__tasks_start(opt);
#pragma omp parallel num_threads(opt->threads) if (opt->threads > 1)
  for (int64_t q, me = adampi__thread_num(); (q = adampi__task_next(opt, (int)me)) >= 0;) {
    const adampi__task *task = &opt->tasks[q];
    float *u_row = opt->u_row + (size_t)me * ADAMPI__U_ROWS * (size_t)opt->u_row_len;
    /* The kernels that write w also round it into opt->round_out. Without a gradient the task is
     * unchanged, but rounded and stored all the same, as an all-gather would. */
    const adampi__tensor *t = &opt->tensors[task->tensor];
    int64_t e = t->offset + task->r0 * t->leaf_len - opt->lo, n = (task->r1 - task->r0) * t->leaf_len;
    if (!(has_grad && !has_grad[task->tensor])) update_task(opt, kn, task, w, g, u_row);
    else if (opt->round_out) adampi__round(opt->cfg.dtype, w + e, (char *)opt->round_out + (size_t)e * opt->elem, n);
    if (store) store(opt, opt->round_out ? opt->round_out : (const void *)w, e, n);
  }
}

/* The sharded step on w (the fp32 parameters of [lo, hi): the caller's, or the master) and g (the
 * averaged fp32 gradients of [lo, hi)). local_st: an error this rank found before the step, which
 * the exchange makes known to every rank. store: the transport's per-task hook for the update
 * pass, or NULL; opt->round_out: where the update pass rounds w to, or NULL. */
static adampi_status step_shard(adampi *opt, float *w, const float *g, const unsigned char *has_grad, double grad_scale,
                                adampi_status local_st, adampi__store_fn store)
{
  adampi_status st = ADAMPI_OK;
  int P = opt->size;
  double t0 = MPI_Wtime();
  memset(opt->stats, 0, (size_t)opt->stats_len * sizeof(double));
  opt->stats[opt->rank] = (double)local_st;
  opt->stats[P + opt->rank] = step_hash(opt, has_grad, grad_scale);
  if (local_st == ADAMPI_OK) adampi__statistics_pass(opt, w, g, has_grad);
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
                         "ranks 0 and %d passed different has_grad masks or grad_scale values, or hold different "
                         "hyper-parameters or max_grad_norm (every rank must make the same set_lr/set_hparams/"
                         "set_max_grad_norm calls)",
                         r);

  int is_param = 0;
  int bad = adampi__decide_projection(opt, has_grad, &is_param);
  if (bad >= 0) {
    opt->last.nonfinite_tensor = bad;
    if (opt->cfg.nonfinite == ADAMPI_NONFINITE_SKIP) {
      opt->steps_skipped++;
      opt->last.skipped = 1;
      return ADAMPI_OK;
    }
    return ADAMPI_FAIL(opt, ADAMPI_ERR_NONFINITE,
                       "NaN or Inf in the %s of tensor %d '%s' at step %lld; nothing was changed",
                       is_param ? "parameters" : grad_scale != 1.0 ? "gradient (after the division by grad_scale)" : "gradient",
                       bad, opt->tensors[bad].name, (long long)(opt->steps_taken + opt->steps_skipped));
  }
  st = layer_coefficients(opt, w, g);
  if (st != ADAMPI_OK) return st;
  double t2 = MPI_Wtime();
  opt->profile.seconds[ADAMPI_PHASE_EXCHANGE] = t2 - t1;
  apply_update(opt, w, g, has_grad, store);
  opt->profile.seconds[ADAMPI_PHASE_UPDATE] = MPI_Wtime() - t2;
  opt->steps_taken++;
  opt->last.applied = 1;
  if (opt->master) opt->master_valid = 1;
done:
  return st;
}

adampi_step_options adampi_step_defaults(void)
{
  adampi_step_options o = {NULL, 1.0};
  return o;
}

/* Start a step call: forget the last one's outcome and failure. */
static void begin_step(adampi *opt)
{
  adampi__clear_error(opt);
  adampi_step_info none = {0, 0, -1, NAN, 1.0};
  opt->last = none;
  opt->gmul = 1.0f;
  opt->round_out = NULL;
  opt->intake = NULL;
}

/* Local checks of the per-step options. */
static adampi_status check_options(adampi *opt, const adampi_step_options *o)
{
  if (!(isfinite(o->grad_scale) && o->grad_scale > 0.0))
    return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: grad_scale = %g must be finite and > 0; nothing was changed",
                       opt->rank, o->grad_scale);
  return ADAMPI_OK;
}

/* The fp32 parameters the step updates: the master of a 16-bit handle, made from the caller's
 * shard at its first step (it becomes valid only when a step commits), else the caller's own. */
static float *fp32_params(adampi *opt, void *param_shard)
{
  if (opt->master == NULL) return param_shard;
  if (!opt->master_valid) adampi__master_from(opt, param_shard);
  opt->round_out = param_shard;
  return opt->master;
}

adampi_status adampi_step_sharded_ex(adampi *opt, void *param_shard, const void *grad_shard,
                                     const adampi_step_options *o)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  begin_step(opt);
  opt->profile.seconds[ADAMPI_PHASE_REDUCE_SCATTER] = opt->profile.seconds[ADAMPI_PHASE_ALLGATHER] = 0.0;
  opt->profile.gradient_bytes = 0;
  /* Commit is collective and agreed, so this test gives the same answer on every rank. */
  if (!opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "step before adampi_commit");
  adampi_step_options defaults = adampi_step_defaults();
  if (o == NULL) o = &defaults;
  int64_t n = opt->hi - opt->lo;
  adampi_status local = check_options(opt, o);
  if (local == ADAMPI_OK && n > 0 && (param_shard == NULL || grad_shard == NULL))
    local = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: %s is NULL but its shard holds %lld elements", opt->rank,
                        param_shard == NULL ? "param_shard" : "grad_shard", (long long)n);
  float *w = NULL;
  const float *g = grad_shard;
  if (local == ADAMPI_OK) {
    w = fp32_params(opt, param_shard);
    /* 16-bit or scaled gradients are made fp32 and unscaled once, into the handle's shard buffer,
     * by the statistics pass (opt->intake). */
    if (opt->master || o->grad_scale != 1.0) {
      opt->intake = grad_shard;
      opt->intake_scale = (float)o->grad_scale;
      g = opt->grad_shard;
    }
  }
  return step_shard(opt, w, g, o->has_grad, o->grad_scale, local, NULL);
}

adampi_status adampi_step_sharded(adampi *opt, float *param_shard, const float *grad_shard,
                                  const unsigned char *has_grad)
{
  adampi_step_options o = adampi_step_defaults();
  o.has_grad = has_grad;
  return adampi_step_sharded_ex(opt, param_shard, grad_shard, &o);
}

adampi_status adampi_step_ex(adampi *opt, void *params, const void *grads, const adampi_step_options *o)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  begin_step(opt);
  if (!opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "step before adampi_commit");
  adampi_status st = ADAMPI_OK;
  adampi_step_options defaults = adampi_step_defaults();
  if (o == NULL) o = &defaults;
  const int P = opt->size;
  int status = check_options(opt, o), direct = adampi__direct_step(opt, params, grads);
  if (status == ADAMPI_OK && (params == NULL || grads == NULL))
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
  /* Through the step buffers, the ranks of a node read each other's gradients and the update pass
   * stores its shard into their parameters (node-shared memory); otherwise messages. One rank:
   * its gradients are the mean (g / 1 == g exactly); nothing to reduce or share, and fp32
   * gradients without a scale are read where they are. */
  const adampi__transport *x = P == 1 ? NULL : direct ? &adampi__node_shm : &adampi__messages;
  const float scale = (float)o->grad_scale;
  const float *g = opt->grad_shard;
  double t0 = MPI_Wtime();
  if (x) st = x->reduce_mean(opt, grads, opt->grad_shard, scale);
  else if (opt->master || scale != 1.0f) opt->intake = grads, opt->intake_scale = scale; /* by the statistics pass */
  else g = grads;
  if (st != ADAMPI_OK) return st;
  double t1 = MPI_Wtime();
  int64_t before = opt->steps_taken;
  void *shard = (char *)params + (size_t)opt->lo * opt->elem;
  st = step_shard(opt, fp32_params(opt, shard), g, o->has_grad, o->grad_scale, ADAMPI_OK, x ? x->store : NULL);
  opt->profile.seconds[ADAMPI_PHASE_REDUCE_SCATTER] = t1 - t0;
  opt->profile.gradient_bytes = opt->numel * (int64_t)opt->elem;
  if (st != ADAMPI_OK || opt->steps_taken == before) return st; /* failed or skipped: nothing to share */
  t1 = MPI_Wtime();
  if (x) st = x->share_params(opt, params);
  opt->profile.seconds[ADAMPI_PHASE_ALLGATHER] = MPI_Wtime() - t1;
done:
  return st;
}

adampi_status adampi_step(adampi *opt, float *params, const float *grads, const unsigned char *has_grad)
{
  adampi_step_options o = adampi_step_defaults();
  o.has_grad = has_grad;
  return adampi_step_ex(opt, params, grads, &o);
}

adampi_status adampi_last_step(const adampi *opt, adampi_step_info *info)
{
  if (opt == NULL || info == NULL) return ADAMPI_ERR_ARG;
  *info = opt->last;
  return ADAMPI_OK;
}
