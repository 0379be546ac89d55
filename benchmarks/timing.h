/*
 * timing.h - what the benchmark programs share to time a step: the median of the rounds, the
 * slowest rank's time, buffers on huge pages (madvise: define _GNU_SOURCE before any include), and
 * CLONES, which builds a reference kernel for every vector width as the library builds its own.
 */
#ifndef ADAMPI_BENCH_TIMING_H
#define ADAMPI_BENCH_TIMING_H

#include <mpi.h>
#include <stdlib.h>
#include <sys/mman.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median of n values (sorts them). */
static double median(double *x, int n)
{
  qsort(x, (size_t)n, sizeof *x, cmp_double);
  return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* A buffer of at least `bytes` on transparent huge pages, as adampi allocates its own (a fair
 * comparison); NULL if there is no memory. free() it. */
#define BENCH_HUGE_PAGE ((size_t)2 << 20)
static inline void *huge_alloc(size_t bytes)
{
  size_t len = bytes ? (bytes + BENCH_HUGE_PAGE - 1) / BENCH_HUGE_PAGE * BENCH_HUGE_PAGE : BENCH_HUGE_PAGE;
  void *p = NULL;
  if (posix_memalign(&p, BENCH_HUGE_PAGE, len) != 0) return NULL;
#ifdef MADV_HUGEPAGE
  madvise(p, len, MADV_HUGEPAGE);
#endif
  return p;
}

/* The slowest rank's value. Collective over MPI_COMM_WORLD. */
static inline double max_over_ranks(double x)
{
  double m;
  MPI_Allreduce(&x, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return m;
}

#endif
