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

/* One packet of a reduce-scatter round into the shard: the first round adds the received packet to
 * this rank's own gradients, later ones to the running sum, and the last also divides by the rank
 * count. The same additions, in the same order, as copy, add round by round, divide; in one pass
 * over the packet instead of three. */
static void add_packet(float *restrict mine, const float *restrict own, const float *restrict tmp, int64_t len,
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

/* Round s: send my copy of rank r+s's shard, receive rank r-s's copy of mine and add it. A mapped
 * sender is read where its gradients lie; a mapped receiver reads mine itself. */
adampi_status adampi__pairwise_reduce_mean(adampi *opt, const float *grads, float *mean, const float *const *mapped)
{
  adampi_status st = ADAMPI_OK;
  int P = opt->size, r = opt->rank;
  int64_t n = opt->hi - opt->lo, len = opt->packet_len;
  float *tmp = opt->packet_buf;
  for (int s = 1; s < P; s++) {
    int to = (r + s) % P, from = (r - s + P) % P;
    const float *in = mapped ? mapped[from] : NULL;
    int dest = mapped && mapped[to] ? MPI_PROC_NULL : to, src = in ? MPI_PROC_NULL : from;
    int64_t to_lo = opt->shard_lo[to], to_n = opt->shard_lo[to + 1] - to_lo;
    for (int64_t k = 0; k < to_n || k < n; k += len) {
      int send = dest == MPI_PROC_NULL ? 0 : packet(to_n, k, len);
      int recv = packet(n, k, len);
      if (dest != MPI_PROC_NULL || src != MPI_PROC_NULL)
        ADAMPI_MPI(opt, MPI_Sendrecv(grads + to_lo + (send ? k : 0), send, MPI_FLOAT, dest, 17, tmp, in ? 0 : recv, MPI_FLOAT,
                                     src, 17, opt->comm, MPI_STATUS_IGNORE));
      if (recv > 0)
        add_packet(mean + k, grads + opt->lo + k, in ? in + opt->lo + k : tmp, recv, s == 1, s == P - 1, (float)P);
    }
  }
done:
  return st;
}

/* The same rounds, received in place; pairs that map each other have stored already (the store
 * hook) and skip the round. */
adampi_status adampi__pairwise_share(adampi *opt, float *params, float *const *mapped)
{
  adampi_status st = ADAMPI_OK;
  int P = opt->size, r = opt->rank;
  int64_t n = opt->hi - opt->lo, len = opt->packet_len;
  for (int s = 1; s < P; s++) {
    int to = (r + s) % P, from = (r - s + P) % P;
    int dest = mapped && mapped[to] ? MPI_PROC_NULL : to, src = mapped && mapped[from] ? MPI_PROC_NULL : from;
    if (dest == MPI_PROC_NULL && src == MPI_PROC_NULL) continue;
    int64_t from_lo = opt->shard_lo[from], from_n = opt->shard_lo[from + 1] - from_lo;
    for (int64_t k = 0; k < from_n || k < n; k += len) {
      int send = dest == MPI_PROC_NULL ? 0 : packet(n, k, len);
      int recv = src == MPI_PROC_NULL ? 0 : packet(from_n, k, len);
      ADAMPI_MPI(opt, MPI_Sendrecv(params + opt->lo + (send ? k : 0), send, MPI_FLOAT, dest, 18,
                                   params + from_lo + (recv ? k : 0), recv, MPI_FLOAT, src, 18, opt->comm,
                                   MPI_STATUS_IGNORE));
    }
  }
done:
  return st;
}

static adampi_status messages_reduce_mean(adampi *opt, const float *grads, float *mean)
{
  return adampi__pairwise_reduce_mean(opt, grads, mean, NULL);
}

adampi_status adampi__allgather_params(adampi *opt, float *params) { return adampi__pairwise_share(opt, params, NULL); }

const adampi__transport adampi__messages = {messages_reduce_mean, NULL, adampi__allgather_params};
