/*
 * handle.c - the handle's lifecycle, registration of groups and tensors, and the getters.
 * Registration is local; adampi_commit (layout.c) checks that all ranks agree.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

adampi_status adampi_create(MPI_Comm comm, const adampi_config *cfg, adampi **out, char *errbuf,
                            size_t errbuf_len)
{
  adampi_status st = ADAMPI_OK;
  adampi *opt = NULL;
  const char *why = NULL;

  if (out) *out = NULL;
  if (comm == MPI_COMM_NULL) st = ADAMPI_ERR_ARG, why = "comm is MPI_COMM_NULL";
  else if (out == NULL) st = ADAMPI_ERR_ARG, why = "out is NULL";
  else if (cfg == NULL) st = ADAMPI_ERR_ARG, why = "cfg is NULL";
  else if (cfg->kind != ADAMPI_ADAMP && cfg->kind != ADAMPI_SGDP)
    st = ADAMPI_ERR_ARG, why = "cfg->kind is not ADAMPI_ADAMP or ADAMPI_SGDP";
  else if (cfg->nonfinite != ADAMPI_NONFINITE_ERROR && cfg->nonfinite != ADAMPI_NONFINITE_SKIP)
    st = ADAMPI_ERR_ARG, why = "cfg->nonfinite is not a known policy";
  else if (cfg->threads < 0 || cfg->threads > 1024)
    st = ADAMPI_ERR_ARG, why = "cfg->threads is outside 0..1024";
  else if (adampi_dtype_size(cfg->dtype) == 0)
    st = ADAMPI_ERR_ARG, why = "cfg->dtype is not ADAMPI_FLOAT32, ADAMPI_BFLOAT16 or ADAMPI_FLOAT16";
  else if (!(isfinite(cfg->max_grad_norm) && cfg->max_grad_norm >= 0.0))
    st = ADAMPI_ERR_ARG, why = "cfg->max_grad_norm must be finite and >= 0 (0: no clipping)";
  else if ((opt = calloc(1, sizeof *opt)) == NULL)
    st = ADAMPI_ERR_NOMEM, why = "out of memory";

  /* Agree before the duplicate so that no rank waits in MPI_Comm_dup alone. */
  if (comm != MPI_COMM_NULL) {
    int worst = (int)st, agreed = 0;
    if (MPI_Allreduce(&worst, &agreed, 1, MPI_INT, MPI_MAX, comm) != MPI_SUCCESS)
      agreed = ADAMPI_ERR_MPI, why = why ? why : "MPI_Allreduce failed";
    if (st == ADAMPI_OK && agreed != ADAMPI_OK)
      st = agreed == ADAMPI_ERR_MPI ? ADAMPI_ERR_MPI : ADAMPI_ERR_PEER,
      why = why ? why : "another rank failed to create its handle";
  }
  if (st == ADAMPI_OK && MPI_Comm_dup(comm, &opt->comm) != MPI_SUCCESS)
    st = ADAMPI_ERR_MPI, why = "MPI_Comm_dup failed";
  if (st != ADAMPI_OK) {
    if (errbuf && errbuf_len) snprintf(errbuf, errbuf_len, "%s: %s", adampi_strerror(st), why);
    free(opt);
    return st;
  }
  opt->cfg = *cfg;
  opt->threads = adampi__thread_count(cfg->threads);
  opt->elem = adampi_dtype_size(cfg->dtype);
  opt->gmul = 1.0f;
  opt->last.nonfinite_tensor = -1;
  opt->last.grad_norm = NAN;
  opt->last.clip_coef = 1.0;
  MPI_Comm_set_errhandler(opt->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(opt->comm, &opt->rank);
  MPI_Comm_size(opt->comm, &opt->size);
  *out = opt;
  return ADAMPI_OK;
}

void adampi_free(adampi **opt)
{
  if (opt == NULL || *opt == NULL) return;
  adampi *o = *opt;
  adampi__free_step_buffers(o);
  adampi__free_layout(o);
  for (int i = 0; i < o->num_tensors; i++) free(o->tensors[i].name);
  free(o->tensors);
  free(o->groups);
  if (o->comm != MPI_COMM_NULL) MPI_Comm_free(&o->comm);
  free(o);
  *opt = NULL;
}

adampi_status adampi_add_group(adampi *opt, const adampi_hparams *hp, int *group_id)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  if (opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "groups cannot be added after commit");
  char msg[512];
  adampi_status st = adampi__hparams_check(opt->cfg.kind, hp, msg, sizeof msg);
  if (st != ADAMPI_OK) return ADAMPI_FAIL(opt, st, "group %d: %s", opt->num_groups, msg);
  if (opt->num_groups == opt->cap_groups) {
    int cap = opt->cap_groups ? 2 * opt->cap_groups : 4;
    adampi_hparams *g = realloc(opt->groups, (size_t)cap * sizeof *g);
    if (g == NULL) return ADAMPI_FAIL(opt, ADAMPI_ERR_NOMEM, "no memory for group %d", opt->num_groups);
    opt->groups = g;
    opt->cap_groups = cap;
  }
  opt->groups[opt->num_groups] = *hp;
  if (group_id) *group_id = opt->num_groups;
  opt->num_groups++;
  return ADAMPI_OK;
}

adampi_status adampi_add_tensor(adampi *opt, const char *name, int ndim, const int64_t *shape,
                                int group, int *index)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  if (opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "tensors cannot be added after commit");
  if (name == NULL || name[0] == '\0') return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "tensor name is NULL or empty");
  size_t name_len = 0;
  while (name_len <= ADAMPI_MAX_NAME && name[name_len] != '\0') name_len++;
  if (name_len > ADAMPI_MAX_NAME)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "tensor name '%.40s...' is longer than %d bytes", name, ADAMPI_MAX_NAME);
  if (strchr(name, '/') != NULL || strcmp(name, ".") == 0)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "tensor name '%s' contains '/' or is '.' (checkpoints store tensors under their names)", name);
  if (ndim < 0 || ndim > ADAMPI_MAX_NDIM)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "tensor '%s': ndim = %d is outside 0..%d", name, ndim, ADAMPI_MAX_NDIM);
  if (ndim > 0 && shape == NULL) return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "tensor '%s': shape is NULL", name);
  int64_t numel = 1;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 1)
      return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "tensor '%s': dimension %d is %lld (must be >= 1)", name, d,
                         (long long)shape[d]);
    if (numel > INT64_MAX / 4 / shape[d])
      return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "tensor '%s': too many elements", name);
    numel *= shape[d];
  }
  if (group < 0 || group >= opt->num_groups)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "tensor '%s': group %d does not exist (%d groups added)", name, group,
                       opt->num_groups);
  for (int i = 0; i < opt->num_tensors; i++)
    if (strcmp(opt->tensors[i].name, name) == 0)
      return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "tensor name '%s' is already registered (tensor %d)", name, i);
  if (opt->num_tensors == opt->cap_tensors) {
    int cap = opt->cap_tensors ? 2 * opt->cap_tensors : 16;
    adampi__tensor *t = realloc(opt->tensors, (size_t)cap * sizeof *t);
    if (t == NULL) return ADAMPI_FAIL(opt, ADAMPI_ERR_NOMEM, "no memory for tensor '%s'", name);
    opt->tensors = t;
    opt->cap_tensors = cap;
  }
  adampi__tensor *t = &opt->tensors[opt->num_tensors];
  memset(t, 0, sizeof *t);
  t->name = malloc(name_len + 1);
  if (t->name == NULL) return ADAMPI_FAIL(opt, ADAMPI_ERR_NOMEM, "no memory for tensor '%s'", name);
  memcpy(t->name, name, name_len + 1);
  t->ndim = ndim;
  for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
  t->group = group;
  t->numel = numel;
  t->projectable = ndim > 1;
  t->leaves = t->projectable ? shape[0] : numel;
  t->leaf_len = t->projectable ? numel / shape[0] : 1;
  if (index) *index = opt->num_tensors;
  opt->num_tensors++;
  return ADAMPI_OK;
}

int adampi_num_tensors(const adampi *opt) { return opt ? opt->num_tensors : 0; }
int64_t adampi_numel(const adampi *opt) { return opt ? opt->numel : 0; }
int adampi_num_groups(const adampi *opt) { return opt ? opt->num_groups : 0; }
int adampi_rank(const adampi *opt) { return opt ? opt->rank : -1; }
int adampi_size(const adampi *opt) { return opt ? opt->size : 0; }
int64_t adampi_steps_taken(const adampi *opt) { return opt ? opt->steps_taken : 0; }
int64_t adampi_steps_skipped(const adampi *opt) { return opt ? opt->steps_skipped : 0; }

adampi_status adampi_tensor(const adampi *opt, int index, adampi_tensor_info *info)
{
  if (opt == NULL || info == NULL || index < 0 || index >= opt->num_tensors) return ADAMPI_ERR_ARG;
  const adampi__tensor *t = &opt->tensors[index];
  memset(info, 0, sizeof *info);
  info->name = t->name;
  info->ndim = t->ndim;
  for (int d = 0; d < t->ndim; d++) info->shape[d] = t->shape[d];
  info->group = t->group;
  info->offset = t->offset;
  info->numel = t->numel;
  return ADAMPI_OK;
}

adampi_status adampi_shard(const adampi *opt, int rank, int64_t *lo, int64_t *hi)
{
  if (opt == NULL || lo == NULL || hi == NULL) return ADAMPI_ERR_ARG;
  if (!opt->committed) return ADAMPI_ERR_STATE;
  if (rank < 0 || rank >= opt->size) return ADAMPI_ERR_ARG;
  *lo = opt->shard_lo[rank];
  *hi = opt->shard_lo[rank + 1];
  return ADAMPI_OK;
}

adampi_status adampi_get_hparams(const adampi *opt, int group, adampi_hparams *hp)
{
  if (opt == NULL || hp == NULL || group < 0 || group >= opt->num_groups) return ADAMPI_ERR_ARG;
  *hp = opt->groups[group];
  return ADAMPI_OK;
}

adampi_status adampi_set_hparams(adampi *opt, int group, const adampi_hparams *hp)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  if (group < 0 || group >= opt->num_groups)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "group %d does not exist (%d groups)", group, opt->num_groups);
  char msg[512];
  adampi_status st = adampi__hparams_check(opt->cfg.kind, hp, msg, sizeof msg);
  if (st != ADAMPI_OK) return ADAMPI_FAIL(opt, st, "group %d: %s", group, msg);
  opt->groups[group] = *hp;
  return ADAMPI_OK;
}

adampi_status adampi_set_lr(adampi *opt, int group, double lr)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  if (group < 0 || group >= opt->num_groups) {
    adampi__clear_error(opt);
    return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "group %d does not exist (%d groups)", group, opt->num_groups);
  }
  adampi_hparams hp = opt->groups[group];
  hp.lr = lr;
  return adampi_set_hparams(opt, group, &hp);
}

adampi_status adampi_set_max_grad_norm(adampi *opt, double max_norm)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  if (!(isfinite(max_norm) && max_norm >= 0.0))
    return ADAMPI_FAIL(opt, ADAMPI_ERR_HPARAM, "max_grad_norm = %g must be finite and >= 0 (0: no clipping)", max_norm);
  opt->cfg.max_grad_norm = max_norm;
  return ADAMPI_OK;
}

adampi_status adampi_diag_get(const adampi *opt, int index, adampi_diag *diag)
{
  if (opt == NULL || diag == NULL || index < 0 || index >= opt->num_tensors) return ADAMPI_ERR_ARG;
  *diag = opt->tensors[index].diag;
  return ADAMPI_OK;
}

int64_t adampi_tensor_step(const adampi *opt, int index)
{
  if (opt == NULL || index < 0 || index >= opt->num_tensors) return -1;
  return opt->tensors[index].updates;
}

const float *adampi_state_shard(const adampi *opt, adampi_state_kind kind)
{
  if (opt == NULL || !opt->committed || opt->hi == opt->lo) return NULL;
  if (opt->cfg.kind == ADAMPI_ADAMP) {
    if (kind == ADAMPI_STATE_EXP_AVG) return opt->state[ADAMPI__EXP_AVG];
    if (kind == ADAMPI_STATE_EXP_AVG_SQ) return opt->state[ADAMPI__EXP_AVG_SQ];
    return NULL;
  }
  return kind == ADAMPI_STATE_MOMENTUM ? opt->state[ADAMPI__MOMENTUM] : NULL;
}

adampi_status adampi_get_profile(const adampi *opt, adampi_profile *profile)
{
  if (opt == NULL || profile == NULL) return ADAMPI_ERR_ARG;
  if (!opt->committed) return ADAMPI_ERR_STATE;
  *profile = opt->profile;
  return ADAMPI_OK;
}
