/*
 * buffers.c - parameters and gradients for adampi_step in memory the ranks of a node share, and
 * the data-parallel exchanges that use it: direct loads instead of messages.
 *
 * With messages, a rank's gradients travel to the shard owner through Open MPI's shared-memory
 * transport (a copy into a bounce buffer, or a single copy across address spaces), are added there
 * packet by packet, and the updated shards travel back the same way. With the buffers in shared
 * memory, the owner of a shard reads every rank's gradients for it where they lie and adds them in
 * one pass, and its update pass, as it finishes each task (in cache), also writes the task into
 * every other rank's parameters: the all-gather costs no pass of its own and no reads from memory.
 * (A separate copy of the shards out of their owners' parameters after the update was measured
 * first: 5-10% slower per step on 2 ranks, bench_step --mode dp-shm.) The additions are those of
 * the message path, in the same order (exchange.c), so the results are the same bits. When the
 * ranks span several nodes, the message path's pairwise rounds run as they are, except that a pair
 * of ranks on the same node uses the mappings instead of a message. All of it is the node-shared
 * transport of exchange.h, adampi__node_shm, at the end of this file.
 *
 * The memory is a POSIX shared-memory object per rank, reserved with posix_fallocate, rather than
 * an MPI-3 shared window: on a full /dev/shm, Open MPI 4.1's MPI_Win_allocate_shared returns an
 * error on one rank and leaves the others waiting inside the call (measured), and memory that is
 * mapped but not reserved faults with SIGBUS when first touched. Here every failure is a status
 * that all ranks agree on. Each object is unlinked as soon as every peer has mapped it, so nothing
 * is left in /dev/shm after the handle, or the process, is gone. Peers map each other's gradients
 * read-only and parameters writable; a rank writes only the part of a peer's parameters that is
 * its own shard, and only in the update pass of a step that every rank has agreed on. Ordering: a full fence on both sides of a synchronising collective wherever one rank
 * starts to read what another wrote.
 */
#define _GNU_SOURCE /* MAP_POPULATE */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_POPULATE
#define MAP_POPULATE 0
#endif

#define NAME_LEN 64

/* What the ranks of a node tell each other: who they are in the handle's communicator, and the
 * name of their shared-memory object. */
typedef struct entry {
  int rank;
  char name[NAME_LEN];
} entry;

/* Map part [offset, offset + bytes) of a shared-memory object, writable or read-only; pages
 * mapped now, so that no step pays their faults. NULL on failure (errno set). */
static void *map_object(const char *name, size_t offset, size_t bytes, int writable)
{
  int fd = shm_open(name, writable ? O_RDWR : O_RDONLY, 0600);
  if (fd < 0) return NULL;
  void *p = mmap(NULL, bytes, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED | MAP_POPULATE, fd, (off_t)offset);
  int saved = errno;
  close(fd);
  errno = saved;
  return p == MAP_FAILED ? NULL : p;
}

/* Unmap every segment this rank mapped and forget them. */
static void unmap_all(adampi *opt)
{
  size_t half = opt->step_bytes / 2;
  for (int q = 0; q < opt->size; q++) {
    if (opt->peer_params && opt->peer_params[q] && q != opt->rank) munmap(opt->peer_params[q], half);
    if (opt->peer_grads && opt->peer_grads[q] && q != opt->rank) munmap(opt->peer_grads[q], half);
  }
  if (opt->step_params) munmap(opt->step_params, opt->step_bytes);
  free(opt->peer_params);
  free(opt->peer_grads);
  opt->peer_params = opt->peer_grads = NULL;
  opt->step_params = opt->step_grads = NULL;
  opt->all_on_node = 0;
}

adampi_status adampi_alloc_step_buffers(adampi *opt, float **params, float **grads)
{
  void *p = NULL, *g = NULL;
  adampi_status st = adampi_alloc_step_buffers_ex(opt, params ? &p : NULL, grads ? &g : NULL);
  if (st == ADAMPI_OK) *params = p, *grads = g;
  return st;
}

adampi_status adampi_alloc_step_buffers_ex(adampi *opt, void **params, void **grads)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  /* Commit and earlier allocations are agreed collectively: these tests answer alike everywhere. */
  if (!opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "step buffers before adampi_commit");
  if (opt->step_params != NULL)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "the step buffers were already allocated (once per handle)");
  adampi_status st = ADAMPI_OK;
  if (params == NULL || grads == NULL)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: %s is NULL", opt->rank, params == NULL ? "params" : "grads");
  st = adampi__agree(opt, st);
  if (st != ADAMPI_OK) return st;

  static unsigned serial; /* several handles in one process */
  char name[NAME_LEN];
  entry *names = NULL;
  snprintf(name, sizeof name, "/adampi-%ld-%u-%d", (long)getpid(), serial++, opt->rank);
  long page = sysconf(_SC_PAGESIZE);
  size_t want = (size_t)opt->numel * opt->elem, psz = page > 0 ? (size_t)page : 4096;
  opt->step_bytes = 2 * ((want + psz - 1) / psz * psz); /* params, then grads, each on whole pages */
  int created = 0, fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600), err = fd < 0 ? errno : 0;
  if (fd >= 0) {
    created = 1;
    err = posix_fallocate(fd, 0, (off_t)opt->step_bytes); /* reserve now: ENOSPC here, not SIGBUS later */
    close(fd);
    if (err == 0 && (opt->step_params = map_object(name, 0, opt->step_bytes, 1)) == NULL) err = errno;
  }
  if (err != 0)
    st = ADAMPI_FAIL(opt, err == ENOSPC || err == ENOMEM ? ADAMPI_ERR_NOMEM : ADAMPI_ERR_IO,
                     "rank %d: cannot reserve %zu bytes of shared memory for the step buffers (%s in /dev/shm): %s",
                     opt->rank, opt->step_bytes, name + 1, strerror(err));
  st = adampi__agree(opt, st);

  /* Each rank maps the step buffers of the ranks on its node: their parameters writable (the
   * owner of a shard stores its update into them) and their gradients read-only. With every rank
   * on one node the step needs no messages at all (all_on_node); across nodes, pairs of ranks on
   * the same node use the mappings and the other pairs exchange messages (exchange.c). */
  MPI_Comm node = MPI_COMM_NULL;
  int node_size = 0, direct = 0;
  entry me = {opt->rank, {0}};
  memcpy(me.name, name, NAME_LEN);
  if (st == ADAMPI_OK) {
    opt->peer_params = calloc((size_t)opt->size, sizeof(void *));
    opt->peer_grads = calloc((size_t)opt->size, sizeof(void *));
    ADAMPI_MPI(opt, MPI_Comm_split_type(opt->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    ADAMPI_MPI(opt, MPI_Comm_size(node, &node_size));
    names = calloc((size_t)node_size, sizeof(entry));
    if (opt->peer_params == NULL || opt->peer_grads == NULL || names == NULL)
      st = ADAMPI_FAIL(opt, ADAMPI_ERR_NOMEM, "rank %d: no memory for the names of the node's %d ranks", opt->rank, node_size);
    st = adampi__agree(opt, st); /* before the node's collective, which needs every buffer */
  }
  if (st == ADAMPI_OK) {
    ADAMPI_MPI(opt, MPI_Allgather(&me, (int)sizeof me, MPI_BYTE, names, (int)sizeof me, MPI_BYTE, node));
    size_t half = opt->step_bytes / 2;
    for (int i = 0; i < node_size && st == ADAMPI_OK; i++) {
      const entry *e = &names[i];
      int q = e->rank;
      if (q < 0 || q >= opt->size || opt->peer_params[q] != NULL) {
        st = ADAMPI_FAIL(opt, ADAMPI_ERR_MPI, "rank %d: the node's ranks came back garbled (%d)", opt->rank, q);
      } else if (q == opt->rank) {
        opt->peer_params[q] = opt->step_params;
        opt->peer_grads[q] = (char *)opt->step_params + half;
      } else {
        opt->peer_params[q] = map_object(e->name, 0, half, 1);
        if (opt->peer_params[q] != NULL) opt->peer_grads[q] = map_object(e->name, half, half, 0);
        if (opt->peer_params[q] == NULL || opt->peer_grads[q] == NULL)
          st = ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "rank %d: cannot map rank %d's step buffers (%s in /dev/shm): %s", opt->rank,
                           q, e->name + 1, strerror(errno));
      }
    }
    direct = node_size == opt->size;
    ADAMPI_MPI(opt, MPI_Allreduce(MPI_IN_PLACE, &direct, 1, MPI_INT, MPI_MIN, opt->comm));
  }
done:
  if (node != MPI_COMM_NULL) MPI_Comm_free(&node);
  free(names);
  /* After this agreement every rank has mapped what it will map: the names can go. */
  st = adampi__agree(opt, st);
  if (created) shm_unlink(name);
  if (st != ADAMPI_OK) {
    unmap_all(opt);
    return st;
  }
  opt->all_on_node = direct;
  opt->step_grads = (char *)opt->step_params + opt->step_bytes / 2;
  opt->profile.buffer_bytes = (int64_t)opt->step_bytes;
  *params = opt->step_params;
  *grads = opt->step_grads;
  return ADAMPI_OK;
}

void adampi__free_step_buffers(adampi *opt) { unmap_all(opt); }

int adampi__direct_step(const adampi *opt, const void *params, const void *grads)
{
  return opt->step_params != NULL && params == opt->step_params && grads == opt->step_grads;
}

void adampi__step_buffers_sync(adampi *opt)
{
  if (opt->step_params != NULL) __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Elements per block of the direct reduction: the running sum stays in L1 while every rank's
 * gradients for the block are added to it. */
#define REDUCE_BLOCK 4096

/* The shard's gradient mean from every rank's gradients, read in place: for rank r the sum
 * g_r + g_(r-1) + ... + g_(r-P+1) (ranks mod P) divided by P (and by scale), exactly the additions
 * of the message path, in its order (adampi__add_round). Call after a synchronising collective
 * that every rank entered after writing its gradients (adampi_step's agreement). Every rank on
 * this node. */
static void reduce_whole_node(adampi *opt, float *mine, float scale)
{
  const int P = opt->size, r = opt->rank;
  const int64_t n = opt->hi - opt->lo;
  const size_t base = (size_t)opt->lo * opt->elem;
  void *const *seg = opt->peer_grads;
#pragma omp parallel for schedule(static) num_threads(opt->threads) if (opt->threads > 1)
  for (int64_t k0 = 0; k0 < n; k0 += REDUCE_BLOCK) {
    int64_t len = n - k0 < REDUCE_BLOCK ? n - k0 : REDUCE_BLOCK;
    size_t off = base + (size_t)k0 * opt->elem;
    for (int s = 1; s < P; s++)
      adampi__add_round(opt, mine + k0, (const char *)seg[r] + off, (const char *)seg[(r - s + P) % P] + off, len,
                        s == 1, s == P - 1, scale);
  }
}

/* The store hook: the shard elements [e, e + n) of src, just updated, into every mapped peer's
 * parameters, from cache. */
static void store_to_peers(const adampi *opt, const void *src, int64_t e, int64_t n)
{
  const size_t elem = opt->elem;
  for (int s = 1; s < opt->size; s++) {
    int q = (opt->rank + s) % opt->size; /* every rank starts with a different peer */
    if (opt->peer_params[q] != NULL) /* on this node; the others get it by message */
      memcpy((char *)opt->peer_params[q] + (size_t)(opt->lo + e) * elem, (const char *)src + (size_t)e * elem,
             (size_t)n * elem);
  }
}

/* Collective: gradients from the peers on this node in place (all at once when every rank is
 * here), by message from the others. */
static adampi_status shm_reduce_mean(adampi *opt, const void *grads, float *mean, float scale)
{
  if (!opt->all_on_node)
    return adampi__pairwise_reduce_mean(opt, grads, mean, scale, (const void *const *)opt->peer_grads);
  reduce_whole_node(opt, mean, scale);
  return ADAMPI_OK;
}

/* Collective: the peers on other nodes by message; then, once every rank's stores are in
 * everyone's parameters (a barrier between fences), the step is over. */
static adampi_status shm_share_params(adampi *opt, void *params)
{
  adampi_status st = ADAMPI_OK;
  if (!opt->all_on_node) st = adampi__pairwise_share(opt, params, opt->elem, opt->peer_params);
  if (st != ADAMPI_OK) return st;
  adampi__step_buffers_sync(opt);
  ADAMPI_MPI(opt, MPI_Barrier(opt->comm));
  adampi__step_buffers_sync(opt);
done:
  return st;
}

const adampi__transport adampi__node_shm = {shm_reduce_mean, store_to_peers, shm_share_params};
