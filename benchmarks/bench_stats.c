/*
 * bench_stats - what limits the statistics pass on this machine. It times, over the same g and w
 * and interleaved round by round in one process (medians):
 *   - a read-only pass over g and w (16 float lanes; plain and prefetching 2 KiB ahead, the faster
 *     counts), the reference bench_step holds the statistics pass to (its own kernels: floor.h);
 *   - the library's row sums, adampi__row_sums_body (internal.h: the very loop of stats.c), built
 *     for each vector width the library is built for (x86-64-v4: AVX-512, x86-64-v3: AVX2, and the
 *     baseline), one call per row as the pass makes them; the library's dispatcher runs the first
 *     of these the CPU supports. Also each of the two vector forms of its lanes at the width that
 *     does not use it: 32-byte vectors with AVX-512 (what that form would cost there), 64-byte ones
 *     with AVX2 (what the AVX2 clone ran before it had its own form); and the AVX2 loop not
 *     prefetching, and prefetching 2 KiB ahead as the update kernels do, against the library's
 *     192 elements (ADAMPI__STATS_AHEAD); the AVX-512 loop, which does not prefetch, prefetching
 *     192 elements and 2 KiB ahead;
 *   - the same loop over the whole array as one row: the difference is what the rows themselves
 *     cost (their lane trees, calls and the restart of each row's chains), per row;
 *   - the float-block shape of the update's <w,u> (adampi__block_lanes: 16 float lanes over blocks
 *     of 256 elements, each block then added into double lanes), which converts no element to
 *     double. Its products are rounded to float, so its bits are not the library's: an experiment,
 *     with how far its sums fall from the exact ones.
 * Only the row sums: the pass's cosines, the 16-bit widening and the tensors' trees are not here
 * (bench_step --set sweep times the whole pass on rows of one length). It checks that the library's
 * loop gives the same bits at every width (exit status 1 if not).
 *
 *   bench_stats [--millions M] [--row-len L1,L2,...] [--rounds R]
 *
 * M x 2^20 elements (default 24) cut into rows of each L (default 147,256,768,2304,3072; the last
 * partial row dropped), R rounds (default 15). One process, one thread; no MPI.
 */
#define _GNU_SOURCE
#include "floor.h"
#include "internal.h"
#include "timing.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(ADAMPI_NO_CLONES)
#define WIDTHS 1 /* the library's ADAMPI_CLONES: one build per width below */
#define AT(arch) __attribute__((target(arch), optimize("fp-contract=fast"), noinline))
#else
#define WIDTHS 0
#define AT(arch) __attribute__((optimize("fp-contract=fast"), noinline))
#endif

typedef void (*row_fn)(const float *g, const float *w, int64_t n, adampi__sums *out);

/* The library's loop, with contraction allowed as stats.c allows it, at each width; with its
 * lanes in 64-byte vectors (wide, as the x86-64-v4 clone has them) or 32-byte ones (as the others
 * have them: internal.h, adampi__wide_vectors). */
#if WIDTHS
AT("arch=x86-64-v4") static void rows_v4(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  adampi__row_sums_body(g, w, n, out, 1, 0);
}
AT("arch=x86-64-v4") static void rows_v4_ahead(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  adampi__row_sums_body(g, w, n, out, 1, ADAMPI__STATS_AHEAD);
}
AT("arch=x86-64-v4") static void rows_v4_2k(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  adampi__row_sums_body(g, w, n, out, 1, 512);
}
AT("arch=x86-64-v4") static void rows_v4_narrow(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  adampi__row_sums_body(g, w, n, out, 0, ADAMPI__STATS_AHEAD);
}
AT("arch=x86-64-v3") static void rows_v3(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  adampi__row_sums_body(g, w, n, out, 0, ADAMPI__STATS_AHEAD);
}
AT("arch=x86-64-v3") static void rows_v3_no_prefetch(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  adampi__row_sums_body(g, w, n, out, 0, 0);
}
AT("arch=x86-64-v3") static void rows_v3_2k(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  adampi__row_sums_body(g, w, n, out, 0, 512);
}
AT("arch=x86-64-v3") static void rows_v3_wide(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  adampi__row_sums_body(g, w, n, out, 1, 0); /* as the library's wide loop */
}
#endif
AT("arch=x86-64") static void rows_base(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  adampi__row_sums_body(g, w, n, out, 0, ADAMPI__STATS_AHEAD);
}

/* The float-block shape: per block of 256, <g,w>, <g,g> and <w,w> in 16 float lanes each (a float
 * multiply and add per element, no contraction), then into double lanes and the lane tree, as the
 * update's <w,u> goes (internal.h, adampi__block_lanes). */
static inline __attribute__((always_inline)) void float_blocks_body(const float *g, const float *w, int64_t n,
                                                                    adampi__sums *out)
{
  adampi__v8d gw[2] = {{0}, {0}}, gg[2] = {{0}, {0}}, ww[2] = {{0}, {0}};
  for (int64_t i = 0; i < n; i += 256) {
    int64_t end = n - i < 256 ? n : i + 256, k = i;
    adampi__block_lanes bgw = {{0}}, bgg = {{0}}, bww = {{0}};
    for (; k + 16 <= end; k += 16) {
      adampi__lanes_add16(&bgw, g + k, w + k);
      adampi__lanes_add16(&bgg, g + k, g + k);
      adampi__lanes_add16(&bww, w + k, w + k);
    }
    for (int j = 0; k + j < end; j++) {
      adampi__lanes_add1(&bgw, j, g[k + j] * w[k + j]);
      adampi__lanes_add1(&bgg, j, g[k + j] * g[k + j]);
      adampi__lanes_add1(&bww, j, w[k + j] * w[k + j]);
    }
    adampi__lanes_fold(gw, &bgw), adampi__lanes_fold(gg, &bgg), adampi__lanes_fold(ww, &bww);
  }
  out->gw = adampi__lanes_total(gw);
  out->gg = adampi__lanes_total(gg);
  out->ww = adampi__lanes_total(ww);
}

#if WIDTHS
/* Without contraction: the products are rounded to float, as in <w,u>. */
#define AT_FLOAT(arch) __attribute__((target(arch), noinline))
AT_FLOAT("arch=x86-64-v4") static void blocks_v4(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  float_blocks_body(g, w, n, out);
}
AT_FLOAT("arch=x86-64-v3") static void blocks_v3(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  float_blocks_body(g, w, n, out);
}
#endif
__attribute__((noinline)) static void blocks_base(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  float_blocks_body(g, w, n, out);
}

/* The read-only references are bench_step's own, read2 and read2_ahead of floor.h, on one thread,
 * in the form of the clones this CPU runs (floor_select). */
static const struct floor_kernels *floor_;

enum { READ_PLAIN, READ_AHEAD, FIRST_ROWS }; /* the variants' first indices */
enum kind { READ, READ_PREFETCHING, ROWS, ONE_ROW };
typedef struct variant {
  const char *name, *key; /* key: the CSV's name for it */
  enum kind kind;
  row_fn fn;
  int exact; /* the library's loop at one width (its bits are compared across widths) */
} variant;

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static volatile float sink_;

/* One timing of variant v over rows of len (rows of them; out: their sums). */
static double run(const variant *v, const float *g, const float *w, int64_t len, int64_t rows, adampi__sums *out)
{
  double t0 = now();
  if (v->kind == READ) sink_ += floor_->read2(g, w, len * rows);
  else if (v->kind == READ_PREFETCHING) sink_ += floor_->read2_ahead(g, w, len * rows);
  else if (v->kind == ONE_ROW) v->fn(g, w, len * rows, out);
  else
    for (int64_t r = 0; r < rows; r++) v->fn(g + r * len, w + r * len, len, out + r);
  return now() - t0;
}

/* Parses a positive integer option, or exits with status 2 naming it. */
static int64_t positive(const char *opt, const char *s)
{
  char *end;
  errno = 0;
  long long x = strtoll(s, &end, 10);
  if (errno || end == s || *end || x <= 0 || x > ((int64_t)1 << 40)) {
    fprintf(stderr, "bench_stats: %s must be a positive integer, not '%s'\n", opt, s);
    exit(2);
  }
  return (int64_t)x;
}

int main(int argc, char **argv)
{
  int64_t millions = 24, rounds = 15, lens[16], nlens = 0;
  floor_ = floor_select();
  const char *len_list = "147,256,768,2304,3072";
  for (int i = 1; i < argc; i++) {
    if (i + 1 >= argc) {
      fprintf(stderr, "bench_stats: %s needs a value (options: --millions M --row-len L1,L2,... --rounds R)\n", argv[i]);
      return 2;
    }
    if (!strcmp(argv[i], "--millions")) millions = positive("--millions", argv[++i]);
    else if (!strcmp(argv[i], "--rounds")) rounds = positive("--rounds", argv[++i]);
    else if (!strcmp(argv[i], "--row-len")) len_list = argv[++i];
    else {
      fprintf(stderr, "bench_stats: unknown option %s (options: --millions M --row-len L1,L2,... --rounds R)\n", argv[i]);
      return 2;
    }
  }
  char buf[256];
  if (strlen(len_list) >= sizeof buf) {
    fprintf(stderr, "bench_stats: --row-len: a list of at most %zu characters\n", sizeof buf - 1);
    return 2;
  }
  snprintf(buf, sizeof buf, "%s", len_list);
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    if (nlens == 16) {
      fprintf(stderr, "bench_stats: at most 16 row lengths\n");
      return 2;
    }
    lens[nlens++] = positive("--row-len", tok);
  }
  if (nlens == 0) {
    fprintf(stderr, "bench_stats: --row-len needs at least one length\n");
    return 2;
  }
  if (rounds > 1000) {
    fprintf(stderr, "bench_stats: --rounds must be at most 1000, not %lld\n", (long long)rounds);
    return 2;
  }
  const int64_t n = millions << 20;
  for (int k = 0; k < nlens; k++)
    if (lens[k] > n) {
      fprintf(stderr, "bench_stats: rows of %lld are longer than the %lld elements\n", (long long)lens[k], (long long)n);
      return 2;
    }

  variant vs[10];
  int nv = 0, pick = -1; /* pick: the width the library's dispatcher runs */
  vs[nv++] = (variant){"read-only, plain", "read", READ, NULL, 0};
  vs[nv++] = (variant){"read-only, prefetching", "read-prefetching", READ_PREFETCHING, NULL, 0};
#if WIDTHS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4"))
    vs[nv++] = (variant){"library's loop, x86-64-v4 (AVX-512)", "double-v4", ROWS, rows_v4, 1};
  if (__builtin_cpu_supports("x86-64-v3"))
    vs[nv++] = (variant){"library's loop, x86-64-v3 (AVX2)", "double-v3", ROWS, rows_v3, 1};
#endif
  vs[nv++] = (variant){"library's loop, baseline x86-64", "double-baseline", ROWS, rows_base, 1};
  pick = FIRST_ROWS; /* the first the CPU runs, as the library's dispatcher chooses */
#if WIDTHS
  if (__builtin_cpu_supports("x86-64-v4")) {
    vs[nv++] = (variant){"  the same, x86-64-v4 with 32-byte lanes", "double-v4-narrow", ROWS, rows_v4_narrow, 1};
    vs[nv++] = (variant){"  the same, x86-64-v4 prefetching 192 elements", "double-v4-ahead", ROWS, rows_v4_ahead, 1};
    vs[nv++] = (variant){"  the same, x86-64-v4 prefetching 2 KiB", "double-v4-ahead-2k", ROWS, rows_v4_2k, 1};
  }
  if (__builtin_cpu_supports("x86-64-v3")) {
    vs[nv++] = (variant){"  the same, x86-64-v3 with 64-byte lanes", "double-v3-wide", ROWS, rows_v3_wide, 1};
    vs[nv++] = (variant){"  the same, x86-64-v3 not prefetching", "double-v3-no-prefetch", ROWS, rows_v3_no_prefetch, 1};
    vs[nv++] = (variant){"  the same, x86-64-v3 prefetching 2 KiB", "double-v3-ahead-2k", ROWS, rows_v3_2k, 1};
  }
#endif
  const char *first_name = vs[pick].name;
  vs[nv++] = (variant){"library's loop, one row of all", "double-one-row", ONE_ROW, vs[pick].fn, 0};
  row_fn blocks = blocks_base;
#if WIDTHS
  if (vs[pick].fn == rows_v4) blocks = blocks_v4;
  else if (vs[pick].fn == rows_v3) blocks = blocks_v3;
#endif
  vs[nv++] = (variant){"float blocks of 256 (other bits)", "float-blocks", ROWS, blocks, 0};

  float *g = huge_alloc((size_t)n * sizeof *g), *w = huge_alloc((size_t)n * sizeof *w);
  adampi__sums *sums[10] = {NULL};
  int64_t most_rows = n / lens[0];
  for (int k = 1; k < nlens; k++)
    if (n / lens[k] > most_rows) most_rows = n / lens[k];
  for (int v = 0; v < nv; v++) sums[v] = calloc((size_t)most_rows + 1, sizeof **sums);
  double *times = malloc((size_t)nv * (size_t)rounds * sizeof *times);
  int bad = g == NULL || w == NULL || times == NULL;
  for (int v = 0; v < nv; v++) bad |= sums[v] == NULL;
  if (bad) {
    fprintf(stderr, "bench_stats: out of memory for %lld elements\n", (long long)n);
    return 1;
  }
  /* Gradients of about 1e-3 and weights of about 0.1, from a fixed generator. */
  uint64_t x = 0x9E3779B97F4A7C15u;
  for (int64_t i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    g[i] = (float)((double)(x >> 40) / (double)(1 << 24) - 0.5) * 2e-3f;
    w[i] = (float)((double)(x & 0xFFFFFF) / (double)(1 << 24) - 0.5) * 0.2f;
  }

  printf("# bench_stats: %lld elements (%.1fM), %lld rounds; the library's dispatcher runs: %s\n", (long long)n,
         (double)n / 1e6, (long long)rounds, first_name);
  int same_bits = 1;
  for (int k = 0; k < nlens; k++) {
    const int64_t len = lens[k], rows = n / len;
    for (int64_t r = 0; r < rounds; r++)
      for (int j = 0; j < nv; j++) { /* a rotating order: no variant always runs first */
        int v = (int)((j + r) % nv);
        times[v * rounds + r] = run(&vs[v], g, w, len, rows, sums[v]);
      }
    double med[10];
    for (int v = 0; v < nv; v++) med[v] = median(times + v * rounds, (int)rounds);
    double ro = med[READ_PLAIN] < med[READ_AHEAD] ? med[READ_PLAIN] : med[READ_AHEAD];
    double gbs = 8.0 * (double)(len * rows) / ro / 1e9;
    printf("rows of %lld (%lld rows): read-only pass %.2f ms (plain %.2f, prefetching %.2f; %.1f GB/s)\n",
           (long long)len, (long long)rows, 1e3 * ro, 1e3 * med[READ_PLAIN], 1e3 * med[READ_AHEAD], gbs);
    for (int v = FIRST_ROWS; v < nv; v++) {
      printf("  %-40s %8.2f ms, %.2f of the read-only speed", vs[v].name, 1e3 * med[v], ro / med[v]);
      if (v == pick) printf(" (the dispatcher's)");
      if (vs[v].kind == ONE_ROW) printf("; the rows cost %.1f ns each", 1e9 * (med[pick] - med[v]) / (double)rows);
      if (vs[v].fn == blocks) {
        /* How far from the exact sums: <g,w> in units of |g||w| (the cosine's error), the squares
         * relative to themselves; the largest over the rows. */
        double dc = 0, dn = 0;
        for (int64_t r = 0; r < rows; r++) {
          const adampi__sums *e = &sums[pick][r], *f = &sums[v][r];
          if (!(e->gg > 0.0 && e->ww > 0.0)) continue;
          double c = fabs(f->gw - e->gw) / sqrt(e->gg * e->ww);
          double q = fmax(fabs(f->gg - e->gg) / e->gg, fabs(f->ww - e->ww) / e->ww);
          dc = c > dc ? c : dc;
          dn = q > dn ? q : dn;
        }
        printf("; its sums off the exact ones by up to %.1e (cosine) and %.1e (squares)", dc, dn);
      }
      printf("\n");
      printf("csv,%lld,%s,%.4f,%.4f\n", (long long)len, vs[v].key, 1e3 * med[v], ro / med[v]);
    }
    for (int v = FIRST_ROWS; v < nv; v++)
      if (vs[v].exact && memcmp(sums[v], sums[pick], (size_t)rows * sizeof **sums) != 0) {
        printf("  NOT THE SAME BITS: %s against %s\n", vs[v].name, first_name);
        same_bits = 0;
      }
  }
  printf("the library's loop gives the same bits at every width: %s\n", same_bits ? "yes" : "no");
  for (int v = 0; v < nv; v++) free(sums[v]);
  free(times), free(g), free(w);
  return same_bits ? 0 : 1;
}
