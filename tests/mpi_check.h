/*
 * mpi_check.h - what every test program shares: an MPI-aware Check main (no fork under MPI),
 * failures combined across ranks so that every rank exits alike, rank-prefixed messages, a
 * deterministic random source and small helpers to gather shards.
 */
#ifndef ADAMPI_MPI_CHECK_H
#define ADAMPI_MPI_CHECK_H

#include "adampi.h"
#include "../src/hparams_table.h"

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline int test_rank(void)
{
  int r;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

static inline int test_size(void)
{
  int s;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

/* Two hyper-parameter sets equal bit for bit, field by field (the struct has padding, which memcmp
 * would compare uninitialised). */
static inline int test_hparams_same(const adampi_hparams *a, const adampi_hparams *b)
{
#define TEST_AS_DOUBLE_A(field, kind) (double)a->field,
#define TEST_AS_DOUBLE_B(field, kind) (double)b->field,
  const double x[] = {ADAMPI_HPARAMS_TABLE(TEST_AS_DOUBLE_A)};
  const double y[] = {ADAMPI_HPARAMS_TABLE(TEST_AS_DOUBLE_B)};
#undef TEST_AS_DOUBLE_A
#undef TEST_AS_DOUBLE_B
  return memcmp(x, y, sizeof x) == 0;
}

/* Run one suite on every rank; exit status 0 only if no rank saw a failure. */
static inline int run_mpi_suite(int argc, char **argv, Suite *(*make)(void))
{
  MPI_Init(&argc, &argv);
  SRunner *sr = srunner_create(make());
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, test_rank() == 0 ? CK_NORMAL : CK_SILENT);
  int failed = srunner_ntests_failed(sr), total = 0;
  if (failed && test_rank() != 0) {
    /* Rank 0 prints its own report; other ranks print only their failures. */
    TestResult **res = srunner_failures(sr);
    for (int i = 0; i < failed; i++)
      fprintf(stderr, "[rank %d] %s:%d: %s: %s\n", test_rank(), tr_lfile(res[i]), tr_lno(res[i]),
              tr_tcname(res[i]), tr_msg(res[i]));
    free(res);
  }
  srunner_free(sr);
  MPI_Allreduce(&failed, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (test_rank() == 0 && total) fprintf(stderr, "%d failure(s) summed over %d ranks\n", total, test_size());
  MPI_Finalize();
  return total ? 1 : 0;
}

/* splitmix64: the same numbers on every rank for the same seed. */
static inline uint64_t test_rng(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static inline float test_uniform(uint64_t *s)
{
  return (float)((double)(test_rng(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

/* Gather a shard-distributed array into full (numel floats) on every rank of the handle. */
static inline void gather_full(const adampi *opt, MPI_Comm comm, const float *shard, float *full)
{
  int P = adampi_size(opt);
  int *counts = malloc(sizeof(int) * (size_t)P), *displs = malloc(sizeof(int) * (size_t)P);
  for (int r = 0; r < P; r++) {
    int64_t lo, hi;
    adampi_shard(opt, r, &lo, &hi);
    counts[r] = (int)(hi - lo);
    displs[r] = (int)lo;
  }
  int me = adampi_rank(opt);
  static float dummy;
  MPI_Allgatherv(counts[me] ? shard : &dummy, counts[me], MPI_FLOAT, full, counts, displs, MPI_FLOAT, comm);
  free(counts);
  free(displs);
}

#define ck_assert_ok(opt, call)                                                                        \
  do {                                                                                                 \
    adampi_status st_ = (call);                                                                        \
    ck_assert_msg(st_ == ADAMPI_OK, "[rank %d] %s returned %s: %s", test_rank(), #call, adampi_strerror(st_), \
                  adampi_last_error(opt));                                                             \
  } while (0)

#endif
