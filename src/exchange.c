/*
 * exchange.c - the message transport of the data-parallel step (exchange.h): the gradient mean
 * into the shard and the parameter all-gather, as pairwise rounds of MPI_Sendrecv. The rounds
 * also serve the node-shared transport (buffers.c) across nodes: a peer whose step buffers this
 * rank maps is read or written in place, the others get messages.
 *
 * Measured against the MPI collectives on one node here (benchmarks/bench_step --mode dp): the
 * pairwise reduce-scatter 2-3x faster than MPI_Reduce_scatter, and its order of additions is fixed
 * by us; the pairwise all-gather faster than MPI_Allgatherv, and its counts are packets, so no count
 * overflows past 2^31 elements.
 */
#include "internal.h"

/* Elements of the packet at k (packets of len elements) of a range of total elements: 0 past its end. */
static int packet(int64_t total, int64_t k, int64_t len)
{
  return (int)(total - k < len ? (total > k ? total - k : 0) : len);
}

/* The MPI type of elem-byte elements (the 16-bit types travel as their bits). */
static MPI_Datatype mpi_elem(size_t elem) { return elem == sizeof(float) ? MPI_FLOAT : MPI_UINT16_T; }

static const void *at(const void *p, int64_t k, size_t elem) { return (const char *)p + (size_t)k * elem; }

/* Term i of a round's operand: float32, or bfloat16 widened by its shift (exact for every value;
 * bf16 a constant wherever it is inlined). */
static inline __attribute__((always_inline)) float term(const void *p, int64_t i, int bf16)
{
  return bf16 ? adampi__from_bf16(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* The additions of one round over a block: the first round adds in to this rank's own gradients,
 * later ones to the running sum, and the last also divides by the rank count. The same additions,
 * in the same order, as copy, add round by round, divide; in one pass instead of three. */
static inline __attribute__((always_inline)) void add_terms(float *restrict mine, const void *restrict own,
                                                            const void *restrict in, int64_t len, int first,
                                                            int last, float ranks, int bf16)
{
  if (first && last)
    for (int64_t i = 0; i < len; i++) mine[i] = (term(own, i, bf16) + term(in, i, bf16)) / ranks;
  else if (first)
    for (int64_t i = 0; i < len; i++) mine[i] = term(own, i, bf16) + term(in, i, bf16);
  else if (last)
    for (int64_t i = 0; i < len; i++) mine[i] = (mine[i] + term(in, i, bf16)) / ranks;
  else
    for (int64_t i = 0; i < len; i++) mine[i] += term(in, i, bf16);
}

static void add_block(float *restrict mine, const float *restrict own, const float *restrict in, int64_t len, int first,
                      int last, float ranks)
{
  add_terms(mine, own, in, len, first, last, ranks, 0);
}

/* add_block on bfloat16 terms, each widened as it is read. */
ADAMPI_CLONES
static void add_block_bf16(float *restrict mine, const uint16_t *restrict own, const uint16_t *restrict in, int64_t len,
                           int first, int last, float ranks)
{
  add_terms(mine, own, in, len, first, last, ranks, 1);
}

/* Elements per block: a gradient scale unscales the block while it is in L1
 * (adampi__unscale_array). 16-bit terms are widened as they are added, bfloat16 by
 * add_block_bf16 and float16 by the CPU's conversion (adampi__f16_adding); without it, into two
 * blocks of scratch that stay in L1. */
#define BLOCK 2048

void adampi__add_round(const adampi *opt, float *mine, const void *own, const void *in, int64_t len, int first,
                       int last, float scale)
{
  const adampi_dtype dt = opt->cfg.dtype;
  const size_t elem = opt->elem;
  const float ranks = (float)opt->size;
  const adampi__add16_fn add_f16 = dt == ADAMPI_FLOAT16 ? adampi__f16_adding() : NULL;
  float a[BLOCK], b[BLOCK];
  for (int64_t k = 0; k < len; k += BLOCK) {
    int64_t m = len - k < BLOCK ? len - k : BLOCK;
    if (dt == ADAMPI_BFLOAT16) {
      add_block_bf16(mine + k, at(own, k, elem), at(in, k, elem), m, first, last, ranks);
    } else if (add_f16) {
      add_f16(mine + k, at(own, k, elem), at(in, k, elem), m, first, last, ranks);
    } else {
      const float *o = at(own, k, elem), *x = at(in, k, elem);
      if (dt != ADAMPI_FLOAT32) {
        if (first) adampi__widen(dt, o, a, m);
        adampi__widen(dt, x, b, m);
        o = a, x = b;
      }
      add_block(mine + k, o, x, m, first, last, ranks);
    }
    if (last) adampi__unscale_array(mine + k, m, scale);
  }
}

/* Round s: send my copy of rank r+s's shard, receive rank r-s's copy of mine and add it. A mapped
 * sender is read where its gradients lie; a mapped receiver reads mine itself. */
adampi_status adampi__pairwise_reduce_mean(adampi *opt, const void *grads, float *mean, float scale,
                                           const void *const *mapped)
{
  adampi_status st = ADAMPI_OK;
  int P = opt->size, r = opt->rank;
  int64_t n = opt->hi - opt->lo, len = opt->packet_len;
  const size_t elem = opt->elem;
  MPI_Datatype type = mpi_elem(elem);
  void *tmp = opt->packet_buf;
  for (int s = 1; s < P; s++) {
    int to = (r + s) % P, from = (r - s + P) % P;
    const void *in = mapped ? mapped[from] : NULL;
    int dest = mapped && mapped[to] ? MPI_PROC_NULL : to, src = in ? MPI_PROC_NULL : from;
    int64_t to_lo = opt->shard_lo[to], to_n = opt->shard_lo[to + 1] - to_lo;
    for (int64_t k = 0; k < to_n || k < n; k += len) {
      int send = dest == MPI_PROC_NULL ? 0 : packet(to_n, k, len);
      int recv = packet(n, k, len);
      if (dest != MPI_PROC_NULL || src != MPI_PROC_NULL)
        ADAMPI_MPI(opt, MPI_Sendrecv(at(grads, to_lo + (send ? k : 0), elem), send, type, dest, 17, tmp,
                                     in ? 0 : recv, type, src, 17, opt->comm, MPI_STATUS_IGNORE));
      if (recv > 0)
        adampi__add_round(opt, mean + k, at(grads, opt->lo + k, elem), in ? at(in, opt->lo + k, elem) : tmp, recv,
                          s == 1, s == P - 1, scale);
    }
  }
done:
  return st;
}

/* The same rounds, received in place; pairs that map each other have stored already (the store
 * hook) and skip the round. */
adampi_status adampi__pairwise_share(adampi *opt, void *buf, size_t elem, void *const *mapped)
{
  adampi_status st = ADAMPI_OK;
  int P = opt->size, r = opt->rank;
  int64_t n = opt->hi - opt->lo, len = opt->packet_len;
  MPI_Datatype type = mpi_elem(elem);
  char *b = buf;
  for (int s = 1; s < P; s++) {
    int to = (r + s) % P, from = (r - s + P) % P;
    int dest = mapped && mapped[to] ? MPI_PROC_NULL : to, src = mapped && mapped[from] ? MPI_PROC_NULL : from;
    if (dest == MPI_PROC_NULL && src == MPI_PROC_NULL) continue;
    int64_t from_lo = opt->shard_lo[from], from_n = opt->shard_lo[from + 1] - from_lo;
    for (int64_t k = 0; k < from_n || k < n; k += len) {
      int send = dest == MPI_PROC_NULL ? 0 : packet(n, k, len);
      int recv = src == MPI_PROC_NULL ? 0 : packet(from_n, k, len);
      ADAMPI_MPI(opt, MPI_Sendrecv(b + (size_t)(opt->lo + (send ? k : 0)) * elem, send, type, dest, 18,
                                   b + (size_t)(from_lo + (recv ? k : 0)) * elem, recv, type, src, 18, opt->comm,
                                   MPI_STATUS_IGNORE));
    }
  }
done:
  return st;
}

static adampi_status messages_reduce_mean(adampi *opt, const void *grads, float *mean, float scale)
{
  return adampi__pairwise_reduce_mean(opt, grads, mean, scale, NULL);
}

adampi_status adampi__allgather_params(adampi *opt, void *params)
{
  return adampi__pairwise_share(opt, params, opt->elem, NULL);
}

const adampi__transport adampi__messages = {messages_reduce_mean, NULL, adampi__allgather_params};
