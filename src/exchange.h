/*
 * exchange.h - the two exchanges of the data-parallel step behind one interface, and its
 * transports. Not installed; included by internal.h.
 *
 * adampi_step (step.c) is written against adampi__transport only:
 *   reduce_mean   the mean over ranks of every rank's gradients, into this rank's shard;
 *   store         a hook the update pass calls for each finished task of the shard, while its
 *                 elements are in cache (NULL: the transport has nothing to do there);
 *   share_params  once every rank has updated its shard: every shard into every rank's params.
 * Two transports: messages (exchange.c: pairwise rounds of MPI_Sendrecv) and node-shared memory
 * (buffers.c: the step buffers of adampi_alloc_step_buffers, read and written in place by the
 * ranks of a node, with messages between ranks of different nodes). A new transport is one more
 * adampi__transport and one line in adampi_step's choice; both exchanges of every transport make
 * the same additions in the same order, so the transport never changes the bits. Parameters and
 * gradients travel in the caller's element type (opt->elem bytes: float32, or a 16-bit type, which
 * halves the bytes); the mean is float32, each term widened exactly before it is added
 * (adampi__add_round).
 */
#ifndef ADAMPI_EXCHANGE_H
#define ADAMPI_EXCHANGE_H

#include "adampi.h"

#include <stdint.h>

/* The store hook as the update pass receives it (NULL: none). Local, called from the update
 * pass's threads: the shard elements [e, e + n) of src (this rank's shard in the caller's element
 * type) are final. */
typedef void (*adampi__store_fn)(const adampi *opt, const void *src, int64_t e, int64_t n);

typedef struct adampi__transport {
  /* Collective: mean <- (sum over ranks of grads[lo, hi)) / P / scale, every rank's full gradients
   * (opt->elem bytes each) in. */
  adampi_status (*reduce_mean)(adampi *opt, const void *grads, float *mean, float scale);
  adampi__store_fn store;
  /* Collective: every rank's shard [shard_lo[r], shard_lo[r+1]) of params into every rank's. */
  adampi_status (*share_params)(adampi *opt, void *params);
} adampi__transport;

extern const adampi__transport adampi__messages; /* exchange.c */
extern const adampi__transport adampi__node_shm; /* buffers.c */

/* The pairwise rounds both transports use (exchange.c). P - 1 rounds; in round s rank r sends to
 * r + s and receives from r - s (mod P), in packets of at most opt->packet_len elements through a
 * fixed scratch buffer, so any buffer size works. mapped: NULL, or per rank of comm the step
 * buffers this rank maps (NULL for ranks on other nodes); a mapped peer is read or written in
 * place instead of by message, with the same additions in the same order. */
adampi_status adampi__pairwise_reduce_mean(adampi *opt, const void *grads, float *mean, float scale,
                                           const void *const *mapped);
/* elem: bytes per element of buf (the caller's type for parameters, 4 for fp32 arrays). */
adampi_status adampi__pairwise_share(adampi *opt, void *buf, size_t elem, void *const *mapped);

/* Round s of the gradient mean over len elements: mine <- own + in (s = 1) or mine + in, and in
 * the last round (P - 1) divided by P, then by scale unless it is 1. own and in are in the caller's
 * element type, each term widened exactly as it is added (float16 by precision.c's
 * adampi__f16_adding where the CPU has it). The one place the reduction's additions are made. */
void adampi__add_round(const adampi *opt, float *mine, const void *own, const void *in, int64_t len, int first,
                       int last, float scale);

/* Collective: every rank's shard of params (the caller's type) into every rank's params, by
 * messages (the messages transport's share_params; also adampi_load's full-parameter form). */
adampi_status adampi__allgather_params(adampi *opt, void *params);

#endif /* ADAMPI_EXCHANGE_H */
