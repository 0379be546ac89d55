/*
 * floor.h - the reference kernels of the floor that hold 16 float lanes (floor_kernels.h): the
 * prefetching kernels of the update's pattern and the read-only kernels of the statistics reads,
 * with what they share. bench_step holds a step to them; bench_stats holds the statistics pass's
 * loop to the same read-only kernels.
 *
 * Each kernel comes in two forms: 64-byte vectors (the wide form, the one these kernels always had,
 * which the AVX-512 clones keep in registers) and 32-byte ones (the narrow form). floor_select()
 * gives the form of the clones this CPU runs. Threads: the kernels run threads_ OpenMP threads
 * (1 unless the program sets it), each over its part of the elements (thread_range).
 */
#ifndef ADAMPI_BENCH_FLOOR_H
#define ADAMPI_BENCH_FLOOR_H

#include "timing.h" /* CLONES */

#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int threads_ = 1;

/* Software prefetch as the library's kernels do it (src/internal.h, adampi__prefetch_read): the
 * line d bytes ahead, AHEAD (2 KiB) as most of the library's kernels; its unprojected SGDP update
 * and its statistics loops in the narrow form prefetch nearer (floor_kernels.h, FLOOR_SGD_AHEAD and
 * FLOOR_READ_AHEAD). The floor's kernels of the update's pattern and of the statistics reads run
 * both plain and prefetching in every round, and the floor takes the faster of the two medians:
 * what this machine reaches for the pattern, either way (on AMD EPYC the prefetching update kernels
 * of the library ran faster than the plain reference ones, which made the floor no floor). */
#define AHEAD 2048
static inline void ahead_r(const void *p, int d) { __builtin_prefetch((const void *)((uintptr_t)p + (uintptr_t)d), 0); }
static inline void ahead_w(const void *p, int d) { __builtin_prefetch((const void *)((uintptr_t)p + (uintptr_t)d), 1); }

/* A bfloat16 value as float (a shift): the 16-bit floor's kernels widen the gradients with it. */
static inline float bench_bf16(uint16_t h)
{
  uint32_t b = (uint32_t)h << 16;
  float f;
  memcpy(&f, &b, sizeof f);
  return f;
}

/* This thread's part of [0, n) in a parallel region: cut at multiples of 16 elements. */
static void thread_range(int64_t n, int64_t *lo, int64_t *hi)
{
  *lo = 0, *hi = n;
#ifdef _OPENMP
  int t = omp_get_thread_num(), nt = omp_get_num_threads();
  *lo = n * t / nt / 16 * 16, *hi = t == nt - 1 ? n : n * (t + 1) / nt / 16 * 16;
#endif
}

typedef float bench_v16f __attribute__((vector_size(64), aligned(4)));
typedef uint16_t bench_v16h __attribute__((vector_size(32), aligned(2)));
typedef uint32_t bench_v16u __attribute__((vector_size(64)));
typedef float bench_v8f __attribute__((vector_size(32), aligned(4)));
typedef uint16_t bench_v8h __attribute__((vector_size(16), aligned(2)));
typedef uint32_t bench_v8u __attribute__((vector_size(32)));

/* The kernels of one form. The read kernels return a sum of what they read, for a sink. */
struct floor_kernels {
  void (*adam_ahead)(const float *g, float *m, float *v, float *w, int64_t n);
  void (*sgd_ahead)(const float *g, float *b, float *w, int64_t n);
  void (*adam16_ahead)(const uint16_t *g, float *m, float *v, float *w, int64_t n);
  void (*sgd16_ahead)(const uint16_t *g, float *b, float *w, int64_t n);
  float (*read2)(const float *g, const float *w, int64_t n);
  float (*read2_ahead)(const float *g, const float *w, int64_t n);
  float (*read16)(const uint16_t *g, const float *w, int64_t n);
  float (*read16_ahead)(const uint16_t *g, const float *w, int64_t n);
};

#define FLOOR_WIDE 1
#include "floor_kernels.h"
#undef FLOOR_WIDE
#define FLOOR_WIDE 0
#include "floor_kernels.h"
#undef FLOOR_WIDE

/* The wide form where CLONES runs its avx512f clones, the narrow one elsewhere. */
static inline const struct floor_kernels *floor_select(void)
{
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) return &floor_kernels_wide;
#endif
  return &floor_kernels_narrow;
}

#endif
