/*
 * stats.c - the statistics pass, the pairwise trees that make every sum independent of the
 * shards, and the projection decision (MATHS.md "The projection").
 *
 * Sums are accumulated in double. Products of two floats are exact in double, so the only
 * roundings are additions, and their order is fixed by position:
 *   - within a row: 16 lanes, lane j takes elements j, j+16, ... of the row, then a fixed lane tree;
 *   - across the leaves of a tensor: the pairwise tree over leaf indices [0, leaves). A rank
 *     computes the maximal tree nodes inside its piece; after the exchange every rank combines all
 *     pieces' nodes by the same tree, so a cut anywhere gives the bits of no cut at all.
 * The maximum over rows of the cosine needs no order: max is exact. (The update pass's <w,u> of a
 * row adds float blocks into these double lanes: adampi__block_lanes in internal.h.)
 */
#include "internal.h"

#include <math.h>
#include <string.h>

/* Contraction into fused multiply-adds is allowed here, and only here: every product is of two
 * floats, exact in double, so fma(g, w, acc) rounds once, exactly as g * w + acc does, and the bits
 * are those of every other clone. It saves the pass a third of its arithmetic (measured on AMD EPYC
 * with AVX-512: 0.85 -> 0.96 of a read-only pass over g and w, rows of 2304). The loop is
 * adampi__row_sums_body (internal.h), which benchmarks/bench_stats.c builds for each vector width. */
ADAMPI_CLONES __attribute__((optimize("fp-contract=fast")))
void adampi__row_sums_wide(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  adampi__row_sums_body(g, w, n, out, 1, 0); /* no prefetch: not measured on an AVX-512 CPU with one */
}

ADAMPI_CLONES __attribute__((optimize("fp-contract=fast")))
void adampi__row_sums_narrow(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  adampi__row_sums_body(g, w, n, out, 0, ADAMPI__STATS_AHEAD);
}

/* The 16-bit rows read in place (adampi__row_sums16): a loop for each of the two vector forms, each
 * built for its instruction set alone with a target attribute (not clones, so that it may use F16C's
 * instructions), and called only where the CPU has it. Contraction as above. */
#if defined(ADAMPI__HW_CONVERSIONS)
#include <immintrin.h>

#if defined(ADAMPI__WIDE_CLONES)
#define WIDE_ONLY __attribute__((target("arch=x86-64-v4"), optimize("fp-contract=fast")))

/* The 16 gradients from h (gt a constant) as floats, widened exactly: bfloat16 by the shift, after
 * one vpmovzxwd from memory (adampi__bf16x16, the same bits, took five instructions with GCC 12; the
 * pass on GPT-2 shapes took 0.92-1.03 of its time without them, 0.96 over four runs, ResNet-50's
 * 1.00, AMD EPYC); float16 by F16C's vcvtph2ps, one instruction, which keeps Inf and turns a
 * signalling NaN into the quiet NaN of the same payload, as the unscaling after it (or the widening
 * to double, where the scale is 1) does to adampi__from_f16's. The sums are those of the row buffer
 * for every input. (adampi__f16x16, the update's software form, is for finite values only.) */
WIDE_ONLY static inline __attribute__((always_inline)) adampi__v16f widen16(const uint16_t *h, int gt)
{
  adampi__v16f x;
  if (ADAMPI__GRAD_TYPE(gt) == ADAMPI_FLOAT16)
    x = (adampi__v16f)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
  else
    x = (adampi__v16f)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)h)), 16);
  return x;
}

/* The wide form (the AVX-512 clones'): the lanes of adampi__row_lanes, through adampi__row_acc_add. */
WIDE_ONLY static inline __attribute__((always_inline)) void wide_body(const uint16_t *g16, float gq, int gt,
                                                                       const float *w, int64_t n, adampi__sums *out)
{
  double gw[ADAMPI_LANES], gg[ADAMPI_LANES], ww[ADAMPI_LANES];
  adampi__row_acc a = {{{0}}, {{0}}, {{0}}};
  int64_t i = 0;
  for (; i + ADAMPI_LANES <= n; i += ADAMPI_LANES) {
    adampi__v16f x = ADAMPI__UNSCALE(widen16(g16 + i, gt), gq, gt);
    adampi__v8d g0 = {x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]};
    adampi__v8d g1 = {x[8], x[9], x[10], x[11], x[12], x[13], x[14], x[15]};
    adampi__row_acc_add(&a, g0, g1, w + i);
  }
  adampi__row_acc_lanes(&a, gw, gg, ww);
  adampi__row_finish(NULL, g16, gq, gt, w, i, n, gw, gg, ww, out);
}

/* Each loop is built for one gradients' type and scaling (gt a constant in it; ADAMPI_FLOAT32, the
 * last case of ADAMPI__GRAD_CASES, is not a type these rows have). */
WIDE_ONLY static void row_sums16_wide(const uint16_t *g16, float gq, int gt, const float *w, int64_t n,
                                      adampi__sums *out)
{
#define WIDE(GT) wide_body(g16, gq, GT, w, n, out)
  ADAMPI__GRAD_CASES(gt, WIDE);
#undef WIDE
}
#endif

#define NARROW_ONLY __attribute__((target("arch=x86-64-v3"), optimize("fp-contract=fast")))

/* 4 gradients from h (gt a constant), widened as widen16 does and unscaled, as doubles. */
NARROW_ONLY static inline __attribute__((always_inline)) __m256d grads4(const uint16_t *h, float gq, int gt)
{
  __m128i x = _mm_loadl_epi64((const __m128i *)h);
  __m128 f = ADAMPI__GRAD_TYPE(gt) == ADAMPI_FLOAT16 ? _mm_cvtph_ps(x)
                                                     : _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(x), 16));
  return _mm256_cvtps_pd(ADAMPI__UNSCALE(f, gq, gt));
}

/* The narrow form (the AVX2 clones'): the lanes of adampi__row_lanes's narrow form, lane j element
 * j % 4 of the (j / 4)th vector of each sum, the same additions in the same order. Twelve sums in
 * AVX2's sixteen registers leave four for the rest, so each block of 16 goes four elements at a
 * time, from their loads to their three multiply-adds (written with GCC's vector extensions, 16 at
 * a time, the loop kept two sums on the stack and took 1.17x the time of the row buffer's). */
NARROW_ONLY static inline __attribute__((always_inline)) void narrow_body(const uint16_t *g16, float gq, int gt,
                                                                           const float *w, int64_t n,
                                                                           adampi__sums *out)
{
  double gw[ADAMPI_LANES], gg[ADAMPI_LANES], ww[ADAMPI_LANES];
  __m256d a[12]; /* gw, gg, ww of lanes 0-3, then of 4-7, 8-11, 12-15 */
  for (int j = 0; j < 12; j++) a[j] = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + ADAMPI_LANES <= n; i += ADAMPI_LANES) {
    adampi__prefetch_read(g16 + i, 2 * ADAMPI__STATS_AHEAD), adampi__prefetch_read(w + i, 4 * ADAMPI__STATS_AHEAD);
    for (int q = 0; q < 4; q++) {
      __m256d g = grads4(g16 + i + 4 * q, gq, gt), x = _mm256_cvtps_pd(_mm_loadu_ps(w + i + 4 * q));
      a[3 * q] = _mm256_fmadd_pd(g, x, a[3 * q]);
      a[3 * q + 1] = _mm256_fmadd_pd(g, g, a[3 * q + 1]);
      a[3 * q + 2] = _mm256_fmadd_pd(x, x, a[3 * q + 2]);
    }
  }
  for (int q = 0; q < 4; q++) {
    _mm256_storeu_pd(gw + 4 * q, a[3 * q]);
    _mm256_storeu_pd(gg + 4 * q, a[3 * q + 1]);
    _mm256_storeu_pd(ww + 4 * q, a[3 * q + 2]);
  }
  adampi__row_finish(NULL, g16, gq, gt, w, i, n, gw, gg, ww, out);
}

/* A gradient scale of 1 (gq 1, multiplying) has a loop of its own, built with the constant: GCC
 * folds x * 1.0f to x, which is x for every float but a signalling NaN, and that one the widening
 * to double quiets the same way; so the sums keep their bits, and the loop does 4 multiplications
 * fewer per 16 elements (16-bit models without loss scaling, bfloat16's usual case). */
NARROW_ONLY static void row_sums16_narrow(const uint16_t *g16, float gq, int gt, const float *w, int64_t n,
                                          adampi__sums *out)
{
  if ((gt & ADAMPI__GRAD_MUL) && gq == 1.0f) {
    if (ADAMPI__GRAD_TYPE(gt) == ADAMPI_FLOAT16) narrow_body(g16, 1.0f, ADAMPI_FLOAT16 | ADAMPI__GRAD_MUL, w, n, out);
    else narrow_body(g16, 1.0f, ADAMPI_BFLOAT16 | ADAMPI__GRAD_MUL, w, n, out);
    return;
  }
#define NARROW(GT) narrow_body(g16, gq, GT, w, n, out)
  ADAMPI__GRAD_CASES(gt, NARROW);
#undef NARROW
}
#endif

void (*adampi__row_sums16)(const uint16_t *g16, float gq, int gt, const float *w, int64_t n, adampi__sums *out);
int adampi__wide_vectors;
int adampi__v3_kernels;

/* adampi__wide_vectors, when the library is loaded: 1 where the dispatcher runs the x86-64-v4
 * clones (the CPU has AVX-512 F, BW, CD, DQ and VL, and the build has those clones); else
 * adampi__v3_kernels, 1 where the CPU has x86-64-v3; and adampi__row_sums16, the loop of the width
 * the kernels run at. */
__attribute__((constructor)) static void find_wide_vectors(void)
{
#if defined(ADAMPI__HW_CONVERSIONS)
  __builtin_cpu_init();
#if defined(ADAMPI__WIDE_CLONES)
  adampi__wide_vectors = __builtin_cpu_supports("x86-64-v4") != 0;
  if (adampi__wide_vectors) adampi__row_sums16 = row_sums16_wide;
#endif
  adampi__v3_kernels = !adampi__wide_vectors && __builtin_cpu_supports("x86-64-v3");
  if (adampi__v3_kernels) adampi__row_sums16 = row_sums16_narrow;
#endif
}

/* |cos| with each norm clamped to eps separately (PyTorch >= 1.12). NaN in, NaN out. */
static double cosine(adampi__sums s, double eps)
{
  double gn = sqrt(s.gg), wn = sqrt(s.ww);
  if (gn < eps) gn = eps;
  if (wn < eps) wn = eps;
  return fabs(s.gw) / (gn * wn);
}

/* max that lets NaN win, as torch's max() does. */
static double max_nan(double a, double b) { return (b > a || b != b) ? b : a; }

static adampi__sums add(adampi__sums a, adampi__sums b)
{
  adampi__sums s = {a.gw + b.gw, a.gg + b.gg, a.ww + b.ww};
  return s;
}

/* Where a tensor's leaves come from on this rank: stored row sums, or elements. */
typedef struct leaf_src {
  const adampi__sums *rows; /* projectable tensors: sums of the local rows */
  const float *g, *w;       /* others: the elements themselves */
  int64_t leaf0;            /* leaf index of rows[0] / g[0] */
  int64_t leaves;
} leaf_src;

static adampi__sums leaf(const leaf_src *s, int64_t i)
{
  if (s->rows) return s->rows[i - s->leaf0];
  double g = s->g[i - s->leaf0], w = s->w[i - s->leaf0];
  adampi__sums r = {g * w, g * g, w * w};
  return r;
}

/* The value of a full node of size 2..64 leaves from lo, level by level: the pairs of leaves,
 * then the pairs of pairs, ..., the same additions as the tree's, each of the three sums in an
 * array of its own, so that the loops vectorize (AMD EPYC: the trees of the tensors with
 * ndim <= 1 took 0.18-0.19 ms of ResNet-50's pass against 0.28-0.29 ms when the leaves were
 * copied first and added as structures, 0.37-0.40 ms of GPT-2's against 0.57-0.60 ms; with the
 * AVX-512 clone 0.11-0.12 and 0.20 ms, against 0.14-0.15 and 0.29-0.31 without clones). */
ADAMPI_CLONES
static adampi__sums block_value(const leaf_src *s, int64_t lo, int64_t size)
{
  double a[3][32], b[3][32];
  int64_t n = size / 2, at = lo - s->leaf0;
  if (s->rows) {
    const adampi__sums *r = s->rows + at;
    for (int64_t i = 0; i < n; i++) {
      a[0][i] = r[2 * i].gw + r[2 * i + 1].gw;
      a[1][i] = r[2 * i].gg + r[2 * i + 1].gg;
      a[2][i] = r[2 * i].ww + r[2 * i + 1].ww;
    }
  } else {
    const float *g = s->g + at, *w = s->w + at;
    for (int64_t i = 0; i < n; i++) { /* products of floats, exact in double: leaf() */
      double g0 = g[2 * i], g1 = g[2 * i + 1], w0 = w[2 * i], w1 = w[2 * i + 1];
      a[0][i] = g0 * w0 + g1 * w1;
      a[1][i] = g0 * g0 + g1 * g1;
      a[2][i] = w0 * w0 + w1 * w1;
    }
  }
  double(*x)[32] = a, (*y)[32] = b;
  for (; n > 1; n /= 2) {
    for (int j = 0; j < 3; j++)
      for (int64_t i = 0; i < n / 2; i++) y[j][i] = x[j][2 * i] + x[j][2 * i + 1];
    double(*t)[32] = x;
    x = y, y = t;
  }
  adampi__sums v = {x[0][0], x[1][0], x[2][0]};
  return v;
}

/* Value of the tree node [lo, lo + size) clipped to the leaves: left + right, or left alone when
 * the right child lies past the end. Small full nodes are summed level by level (same tree). */
static adampi__sums node_value(const leaf_src *s, int64_t lo, int64_t size)
{
  if (size == 1) return leaf(s, lo);
  int64_t half = size / 2;
  if (lo + half >= s->leaves) return node_value(s, lo, half);
  if (size <= 64 && lo + size <= s->leaves) return block_value(s, lo, size);
  return add(node_value(s, lo, half), node_value(s, lo + half, half));
}

typedef struct node_writer {
  const leaf_src *src;
  double *out; /* 3 doubles per node, this rank's first node */
  int64_t count;
} node_writer;

static void write_node(void *ctx, int64_t lo, int64_t size)
{
  node_writer *nw = ctx;
  adampi__sums v = node_value(nw->src, lo, size);
  double *o = nw->out + 3 * nw->count++;
  /* + 0.0 turns -0 into +0: the exchange sums zeros into every slot, and the bits of a sum
   * must not depend on whether it went through the exchange. */
  o[0] = v.gw + 0.0;
  o[1] = v.gg + 0.0;
  o[2] = v.ww + 0.0;
}

void adampi__statistics_pass(adampi *opt, const float *w, const float *g, const unsigned char *has_grad)
{
  /* Both parts in parallel, the second after the first (the barrier): each task's and each
   * tensor's results are computed by the same code whichever thread takes them, so the bits do not
   * depend on the thread count. */
  adampi__tasks_start(opt);
  /* The 16-bit gradients' type and scaling, for adampi__row_sums16. */
  float gq;
  const int gt = (int)opt->cfg.dtype | (adampi__grad_scaling(opt->intake_scale, &gq) ? ADAMPI__GRAD_MUL : 0);
#pragma omp parallel num_threads(opt->threads) if (opt->threads > 1)
  {
    const int me = adampi__thread_num();
    /* The row sums: the bulk of the pass, over tasks (whole rows). Where the gradients arrive
     * 16-bit or scaled, they are made float32 and unscaled first: row by row into this thread's
     * g_row (adampi__direct_grads), else the task's into g (which is then opt->grad_shard), and
     * read back from cache; where the CPU has AVX2 or AVX-512, 16-bit rows read in place are
     * widened and unscaled inside the row sums instead (adampi__row_sums16; AMD EPYC, run_ab.sh:
     * the AVX-512 pass took 0.88-0.94 of the time it took through g_row with bfloat16 models and
     * 0.54-0.92 with float16 ones, ResNet-50 and GPT-2 shapes; the AVX2 pass 0.85-0.98). A tensor
     * without a gradient is not read by the step at all. */
    for (int64_t k; (k = adampi__task_next(opt, me)) >= 0;) {
      const adampi__task *task = &opt->tasks[k];
      const adampi__tensor *t = &opt->tensors[task->tensor];
      if (has_grad && !has_grad[task->tensor]) continue;
      const int direct = adampi__direct_grads(opt, t);
      if (opt->intake && !direct) {
        int64_t e = t->offset + task->r0 * t->leaf_len - opt->lo, n = (task->r1 - task->r0) * t->leaf_len;
        adampi__intake(opt->cfg.dtype, (const char *)opt->intake + (size_t)e * opt->elem, (float *)g + e, n,
                       opt->intake_scale);
      }
      if (!t->projectable) continue;
      float *g_row = opt->g_row + (size_t)me * (size_t)opt->u_row_len;
      /* Each row's cosine once its sums are known, while the next rows' loads are on their way;
       * the task keeps the largest. (AMD EPYC, alternating every other step in one process: the
       * pass took 0.7-1.1 ms less on GPT-2 shapes than with the cosines computed after it, one
       * row after the other, and 0.01-0.12 ms less on ResNet-50 shapes.) */
      double eps = opt->groups[t->group].eps, maxcos = 0.0;
      for (int64_t r = task->r0; r < task->r1; r++) {
        int64_t e = t->offset + r * t->leaf_len - opt->lo; /* in the shard */
        const float *gr = g + e;
        adampi__sums *rs = &opt->row_sums[t->my_row_base + r - t->my_leaf_lo];
        if (direct && adampi__row_sums16) {
          adampi__row_sums16((const uint16_t *)opt->intake + e, gq, gt, w + e, t->leaf_len, rs);
        } else {
          if (direct) {
            adampi__intake(opt->cfg.dtype, (const char *)opt->intake + (size_t)e * opt->elem, g_row, t->leaf_len,
                           opt->intake_scale);
            gr = g_row;
          }
          adampi__row_sums(gr, w + e, t->leaf_len, rs);
        }
        maxcos = max_nan(maxcos, cosine(*rs, eps));
      }
      opt->task_cos[k] = maxcos;
    }
#pragma omp barrier
    /* Per tensor: the largest row cosine (max is exact: any order gives the same bits) and the
     * tree nodes of this rank's piece (the trees of tensors with ndim <= 1 read their elements
     * here); each tensor writes its own slots. */
#pragma omp for schedule(dynamic, 1)
    for (int i = 0; i < opt->num_tensors; i++) {
      adampi__tensor *t = &opt->tensors[i];
      if (t->my_nodes == 0 || (has_grad && !has_grad[i])) continue;
      int64_t first = t->offset + t->my_leaf_lo * t->leaf_len - opt->lo;
      leaf_src src = {NULL, g + first, w + first, t->my_leaf_lo, t->leaves};
      if (t->projectable) {
        double maxcos = 0.0;
        for (int64_t q = t->task_lo; q < t->task_hi; q++) maxcos = max_nan(maxcos, opt->task_cos[q]);
        opt->stats[t->cos_slot + opt->rank - t->first_rank] = maxcos;
        src.rows = opt->row_sums + t->my_row_base;
      }
      node_writer nw = {&src, opt->stats + opt->node_area + 3 * (t->node_base + t->my_node0), 0};
      adampi__visit_nodes(opt, t, opt->rank, write_node, &nw);
    }
  }
}

/* Leaf bounds of t's pieces on ranks first..last, into opt->bounds. Returns the piece count. */
static int piece_bounds(adampi *opt, const adampi__tensor *t)
{
  int np = t->last_rank - t->first_rank + 1;
  for (int p = 0; p < np; p++) {
    int64_t a, b;
    adampi__piece_of(opt, t, t->first_rank + p, &a, &b);
    opt->bounds[p] = a;
    opt->bounds[p + 1] = b;
  }
  return np;
}

/* Is the clipped node [lo, hi) inside one piece? */
static int in_one_piece(const int64_t *bounds, int np, int64_t lo, int64_t hi)
{
  for (int p = 0; p < np; p++)
    if (bounds[p] <= lo && lo < bounds[p + 1]) return hi <= bounds[p + 1];
  return 0;
}

/* The tree's root from the pieces' nodes, consumed in tree order: nodes[k*stride + j]. */
typedef struct combiner {
  const int64_t *bounds;
  int np;
  int64_t leaves;
  const double *nodes;
  int stride, width;
  int64_t next;
} combiner;

static void combine(combiner *c, int64_t lo, int64_t size, double *out)
{
  int64_t hi = lo + size < c->leaves ? lo + size : c->leaves;
  if (in_one_piece(c->bounds, c->np, lo, hi)) {
    for (int j = 0; j < c->width; j++) out[j] = c->nodes[c->next * c->stride + j];
    c->next++;
    return;
  }
  double right[3];
  combine(c, lo, size / 2, out);
  if (lo + size / 2 >= c->leaves) return;
  combine(c, lo + size / 2, size / 2, right);
  for (int j = 0; j < c->width; j++) out[j] += right[j];
}

static int64_t root_size(int64_t leaves)
{
  int64_t s = 1;
  while (s < leaves) s *= 2;
  return s;
}

/* The global gradient norm over every tensor with a gradient, from the tensors' exact sums in
 * tensor order (the same on every rank count), and torch.nn.utils.clip_grad_norm_'s factor:
 * max_norm / (total + 1e-6) where that is below 1 (MATHS.md "Clipping"). */
static void clip_factor(adampi *opt, const unsigned char *has_grad)
{
  double total = 0.0;
  for (int i = 0; i < opt->num_tensors; i++)
    if (!(has_grad && !has_grad[i])) total += opt->tensors[i].sums.gg;
  total = sqrt(total);
  opt->last.grad_norm = total;
  opt->gmul = 1.0f;
  double max_norm = opt->cfg.max_grad_norm;
  if (max_norm > 0.0 && isfinite(total)) {
    float coef = (float)(max_norm / (total + 1e-6));
    if (coef < 1.0f) opt->gmul = coef;
  }
  opt->last.clip_coef = opt->gmul;
}

int adampi__decide_projection(adampi *opt, const unsigned char *has_grad, int *is_param)
{
  int bad = -1;
  /* Every tensor's sums first: the clipping factor needs all of them. */
  for (int i = 0; i < opt->num_tensors; i++) {
    adampi__tensor *t = &opt->tensors[i];
    opt->view[i] = ADAMPI_VIEW_NONE;
    if (has_grad && !has_grad[i]) continue;
    combiner c = {opt->bounds, piece_bounds(opt, t), t->leaves,
                  opt->stats + opt->node_area + 3 * t->node_base, 3, 3, 0};
    double root[3];
    combine(&c, 0, root_size(t->leaves), root);
    adampi__sums s = {root[0], root[1], root[2]};
    t->sums = s;
    if (bad < 0 && (!isfinite(s.gg) || !isfinite(s.ww))) {
      bad = i;
      *is_param = isfinite(s.gg);
    }
  }
  clip_factor(opt, has_grad);
  if (bad >= 0) return bad;
  /* The decisions see the clipped gradient, as in PyTorch: its sums are the gradient's scaled by
   * the factor (exactly so when it is 1). The largest row cosine was taken before the factor was
   * known, from the unclipped rows; it differs only for rows whose clipped norm falls below eps. */
  const double k = opt->gmul;
  for (int i = 0; i < opt->num_tensors; i++) {
    adampi__tensor *t = &opt->tensors[i];
    if (has_grad && !has_grad[i]) continue;
    const adampi_hparams *hp = &opt->groups[t->group];
    adampi__sums s = t->sums;
    if (k != 1.0) s.gw *= k, s.gg *= k * k, t->sums = s;
    double maxcos = 0.0;
    for (int r = t->first_rank; r <= t->last_rank; r++)
      maxcos = max_nan(maxcos, opt->stats[t->cos_slot + r - t->first_rank]);
    adampi_diag *d = &t->staged;
    d->cos_channel = t->projectable ? maxcos : 0.0;
    d->cos_layer = cosine(s, hp->eps);
    d->weight_norm = sqrt(s.ww);
    d->grad_norm = sqrt(s.gg);
    if (!t->projectable) continue;
    /* MATHS.md "The projection": channel view first, then layer view; the first that passes projects. */
    if (maxcos < hp->delta / sqrt((double)t->leaf_len)) opt->view[i] = ADAMPI_VIEW_CHANNEL;
    else if (d->cos_layer < hp->delta / sqrt((double)t->numel)) opt->view[i] = ADAMPI_VIEW_LAYER;
  }
  return -1;
}

/* Tree over the local rows' <w,u>: a single-value twin of node_value. */
static double wu_value(const double *rows, int64_t leaf0, int64_t leaves, int64_t lo, int64_t size)
{
  if (size == 1) return rows[lo - leaf0];
  int64_t half = size / 2;
  if (lo + half >= leaves) return wu_value(rows, leaf0, leaves, lo, half);
  return wu_value(rows, leaf0, leaves, lo, half) + wu_value(rows, leaf0, leaves, lo + half, half);
}

typedef struct wu_writer {
  const adampi__tensor *t;
  const double *rows;
  double *out;
  int64_t count;
} wu_writer;

static void write_wu(void *ctx, int64_t lo, int64_t size)
{
  wu_writer *ww = ctx;
  ww->out[ww->count++] = wu_value(ww->rows, ww->t->my_leaf_lo, ww->t->leaves, lo, size) + 0.0;
}

void adampi__wu_nodes(adampi *opt, const adampi__tensor *t)
{
  wu_writer ww = {t, opt->row_wu + t->my_row_base, opt->wu_nodes + t->node_base + t->my_node0, 0};
  adampi__visit_nodes(opt, t, opt->rank, write_wu, &ww);
}

double adampi__combine_wu(adampi *opt, const adampi__tensor *t)
{
  combiner c = {opt->bounds, piece_bounds(opt, t), t->leaves, opt->wu_nodes + t->node_base, 1, 1, 0};
  double root;
  combine(&c, 0, root_size(t->leaves), &root);
  return root;
}
