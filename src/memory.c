/*
 * memory.c - allocation of the large buffers (state, gradient shard, load staging).
 *
 * A fresh 4 KiB page costs microseconds to fault in (2-5 us on the development VM, touching 1 GiB
 * of new pages five times: 50-130 ms for a first step over 100 MB), so large buffers are mapped
 * directly (the kernel hands them out zeroed, so nothing is cleared twice), marked for transparent
 * huge pages where the kernel offers them, and touched here, once per page:
 * a step never faults on them. Small buffers come from calloc.
 */
#define _GNU_SOURCE /* madvise, MAP_ANONYMOUS */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define BIG ((size_t)2 << 20) /* from here on: mmap, huge pages */

static size_t mapped_length(size_t bytes) { return (bytes + BIG - 1) / BIG * BIG; }

void *adampi__alloc_zeroed(size_t bytes)
{
  if (bytes < BIG) return calloc(bytes ? bytes : 1, 1);
  size_t len = mapped_length(bytes);
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
  madvise(p, len, MADV_HUGEPAGE); /* advice only: failure changes nothing */
#endif
  long page = sysconf(_SC_PAGESIZE);
  for (size_t off = 0; off < len; off += (size_t)(page > 0 ? page : 4096)) ((volatile char *)p)[off] = 0;
  return p;
}

void adampi__free_zeroed(void *p, size_t bytes)
{
  if (p == NULL) return;
  if (bytes < BIG) free(p);
  else munmap(p, mapped_length(bytes));
}

int adampi__thread_count(int requested)
{
#ifdef _OPENMP
  return requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}
