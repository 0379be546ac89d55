/*
 * buffers.c - parameters and gradients for adampi_step in memory the ranks of a node share, and
 * the data-parallel exchanges that use it: direct loads instead of messages.
 *
 * With messages, a rank's gradients travel to the shard owner through Open MPI's shared-memory
 * transport (a copy into a bounce buffer, or a single copy across address spaces), are added there
 * chunk by chunk, and the updated shards travel back the same way. With the buffers in one
 * MPI-3 shared window, the owner of a shard reads every rank's gradients for it where they lie and
 * adds them in one pass, and every rank copies the updated shards straight out of their owners'
 * parameters. The additions are those of the message path, in the same order (step.c,
 * reduce_scatter_mean), so the results are the same bits.
 *
 * Synchronisation follows MPI's unified memory model for shared windows: a passive epoch on all
 * ranks for the window's lifetime, and MPI_Win_sync on both sides of a synchronising collective
 * wherever one rank starts to read what another wrote.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

adampi_status adampi_alloc_step_buffers(adampi *opt, float **params, float **grads)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  /* Commit and earlier allocations are agreed collectively: these tests answer alike everywhere. */
  if (!opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "step buffers before adampi_commit");
  if (opt->step_win != MPI_WIN_NULL)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "the step buffers were already allocated (once per handle)");
  adampi_status st = ADAMPI_OK;
  if (params == NULL || grads == NULL)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: %s is NULL", opt->rank, params == NULL ? "params" : "grads");
  st = adampi__agree(opt, st);
  if (st != ADAMPI_OK) return st;
  *params = *grads = NULL;

  MPI_Comm node = MPI_COMM_NULL;
  MPI_Win win = MPI_WIN_NULL;
  MPI_Info info = MPI_INFO_NULL;
  float *base = NULL;
  int node_size = 0, locked = 0;
  MPI_Aint bytes = (MPI_Aint)(2 * opt->numel) * (MPI_Aint)sizeof(float);
  ADAMPI_MPI(opt, MPI_Comm_split_type(opt->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  ADAMPI_MPI(opt, MPI_Comm_size(node, &node_size));
  /* Each rank's segment on its own pages, first touched (zeroed) by its owner. */
  ADAMPI_MPI(opt, MPI_Info_create(&info));
  ADAMPI_MPI(opt, MPI_Info_set(info, "alloc_shared_noncontig", "true"));
  ADAMPI_MPI(opt, MPI_Win_allocate_shared(bytes, (int)sizeof(float), info, node, &base, &win));
  ADAMPI_MPI(opt, MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN));
  ADAMPI_MPI(opt, MPI_Win_lock_all(MPI_MODE_NOCHECK, win));
  locked = 1;
  memset(base, 0, (size_t)bytes);
  opt->peer_seg = calloc((size_t)opt->size, sizeof(float *));
  if (opt->peer_seg == NULL) {
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_NOMEM, "rank %d: no memory for %d pointers", opt->rank, opt->size);
    goto done;
  }
  /* Loads replace messages only when every rank of the handle is on this node, where the
   * window's ranks (the node communicator's) are ours. */
  int node_rank = -1;
  ADAMPI_MPI(opt, MPI_Comm_rank(node, &node_rank));
  if (node_size == opt->size && node_rank == opt->rank) {
    for (int q = 0; q < opt->size; q++) {
      MPI_Aint len = 0;
      int unit = 0;
      ADAMPI_MPI(opt, MPI_Win_shared_query(win, q, &len, &unit, &opt->peer_seg[q]));
    }
    opt->shm_direct = 1;
  }
  ADAMPI_MPI(opt, MPI_Allreduce(MPI_IN_PLACE, &opt->shm_direct, 1, MPI_INT, MPI_MIN, opt->comm));
done:
  if (info != MPI_INFO_NULL) MPI_Info_free(&info);
  /* Every rank allocated, or every rank gives up (the window is freed collectively). */
  st = adampi__agree(opt, st);
  if (st != ADAMPI_OK) {
    if (locked) MPI_Win_unlock_all(win);
    if (win != MPI_WIN_NULL) MPI_Win_free(&win);
    if (node != MPI_COMM_NULL) MPI_Comm_free(&node);
    free(opt->peer_seg);
    opt->peer_seg = NULL;
    opt->shm_direct = 0;
    return st;
  }
  opt->step_win = win;
  opt->node_comm = node;
  opt->step_params = base;
  opt->step_grads = base + opt->numel;
  opt->profile.buffer_bytes = (int64_t)bytes;
  *params = opt->step_params;
  *grads = opt->step_grads;
  return ADAMPI_OK;
}

void adampi__free_step_buffers(adampi *opt)
{
  if (opt->step_win == MPI_WIN_NULL) return;
  MPI_Win_unlock_all(opt->step_win);
  MPI_Win_free(&opt->step_win);
  MPI_Comm_free(&opt->node_comm);
  free(opt->peer_seg);
  opt->peer_seg = NULL;
  opt->step_params = opt->step_grads = NULL;
  opt->shm_direct = 0;
}

int adampi__direct_step(const adampi *opt, const float *params, const float *grads)
{
  return opt->shm_direct && params == opt->step_params && grads == opt->step_grads;
}

void adampi__step_buffers_sync(adampi *opt)
{
  if (opt->step_win != MPI_WIN_NULL) MPI_Win_sync(opt->step_win);
}

/* Elements per block of the direct reduction: the running sum stays in L1 while every rank's
 * gradients for the block are added to it. */
#define REDUCE_BLOCK 4096

/* The shard's gradient mean from every rank's gradients, read in place: for rank r the sum
 * g_r + g_(r-1) + ... + g_(r-P+1) (ranks mod P) divided by P, exactly the additions of the
 * message path, in its order. Call after a synchronising collective that every rank entered
 * after writing its gradients (adampi_step's agreement). */
void adampi__direct_reduce(adampi *opt)
{
  const int P = opt->size, r = opt->rank;
  const int64_t n = opt->hi - opt->lo, lo = opt->lo, N = opt->numel;
  const float ranks = (float)P;
  float *mine = opt->grad_shard;
  float *const *seg = opt->peer_seg;
#pragma omp parallel for schedule(static) num_threads(opt->threads) if (opt->threads > 1)
  for (int64_t k0 = 0; k0 < n; k0 += REDUCE_BLOCK) {
    int64_t len = n - k0 < REDUCE_BLOCK ? n - k0 : REDUCE_BLOCK;
    float *restrict out = mine + k0;
    const float *restrict own = seg[r] + N + lo + k0;
    const float *restrict prev = seg[(r - 1 + P) % P] + N + lo + k0;
    if (P == 2) {
      for (int64_t k = 0; k < len; k++) out[k] = (own[k] + prev[k]) / ranks;
      continue;
    }
    for (int64_t k = 0; k < len; k++) out[k] = own[k] + prev[k];
    for (int s = 2; s < P - 1; s++) {
      const float *restrict in = seg[(r - s + P) % P] + N + lo + k0;
      for (int64_t k = 0; k < len; k++) out[k] += in[k];
    }
    const float *restrict last = seg[(r + 1) % P] + N + lo + k0;
    for (int64_t k = 0; k < len; k++) out[k] = (out[k] + last[k]) / ranks;
  }
}

/* Every other rank's updated shard copied from its parameters into ours. Collective: the
 * barriers make the owners' updates visible first and keep every owner from changing its
 * parameters again before all copies are done. */
adampi_status adampi__direct_allgather(adampi *opt)
{
  adampi_status st = ADAMPI_OK;
  const int P = opt->size, r = opt->rank;
  MPI_Win_sync(opt->step_win);
  ADAMPI_MPI(opt, MPI_Barrier(opt->comm));
  MPI_Win_sync(opt->step_win);
  for (int s = 1; s < P; s++) {
    int q = (r + s) % P; /* every rank starts with a different owner */
    int64_t qlo = opt->shard_lo[q], qn = opt->shard_lo[q + 1] - qlo;
    if (qn > 0) memcpy(opt->step_params + qlo, opt->peer_seg[q] + qlo, (size_t)qn * sizeof(float));
  }
  ADAMPI_MPI(opt, MPI_Barrier(opt->comm));
done:
  return st;
}
