/*
 * memory.c - allocation of the large buffers (state, gradient shard, load staging).
 *
 * A fresh 4 KiB page costs 12-15 us to fault in on the machines we measured (PERFORMANCE.md), so
 * large buffers are 2 MiB-aligned, marked for transparent huge pages where the kernel offers them,
 * and touched here, once: a step or a load never faults on them.
 */
#define _GNU_SOURCE /* madvise */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)

void *adampi__alloc_zeroed(size_t bytes)
{
  if (bytes < HUGE_PAGE) return calloc(bytes ? bytes : 1, 1);
  size_t rounded = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
  void *p = NULL;
  if (posix_memalign(&p, HUGE_PAGE, rounded) != 0) return NULL;
#ifdef MADV_HUGEPAGE
  madvise(p, rounded, MADV_HUGEPAGE); /* advice only: failure changes nothing */
#endif
  memset(p, 0, rounded);
  return p;
}
