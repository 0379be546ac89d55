/*
 * bench_step - time of one optimizer step against the memory-bandwidth limit, in one process.
 *
 *   mpirun -np N build/bin/bench_step [--set resnet50|gpt2|sweep] [--millions M] [--row-len L] [--opt adamp|sgdp|adamw|sgd|all]
 *                                     [--grads random|orthogonal|all] [--mode sharded|dp|dp-shm] [--steps K]
 *                                     [--dtype fp32|bf16|fp16]
 *
 * For each configuration, in the same run and on the same shard buffers:
 *   - adampi's step (adamw / sgd are AdamP / SGDP with delta = 0), with its phases;
 *   - a fused Adam (or SGD with momentum) loop without projection, the plain C a user would write;
 *   - a bandwidth kernel with the same access pattern as the fused loop (gradient read, state and
 *     parameters read and written in place: 28 bytes per element for Adam, 20 for SGD), and a
 *     read-only kernel over g and w, each also in a version that prefetches ahead as the library's
 *     update does; the floor (the read-only kernel plus the bandwidth kernel) takes the faster
 *     version of each.
 * Reported: ms per step (max over ranks, median of K rounds after 2 warm-up steps; each round runs
 * adampi's step, the fused loop and the bandwidth kernel once, so drift hits all three), the ratio to the
 * fused loop, the effective bandwidth (bytes the design must move per element x elements / time)
 * and its ratio to the bandwidth kernel, the statistics exchange's bytes, and the memory the library
 * allocated per rank. One CSV line per configuration (prefix "csv,") and a readable table.
 * --dtype bf16|fp16: the model in 16 bits (parameters and gradients), the float32 master and state in
 * adampi; the floor then has the 16-bit traffic (bw_read16 and bw_adam16 / bw_sgd16, or bw_reduce16;
 * bw_store16), and the fused
 * loop and the bandwidth GB/s stay float32 references.
 */
#define _GNU_SOURCE /* madvise */
#include "adampi.h"
#include "floor.h"
#include "shapes.h"
#include "timing.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif


static int rank_, size_;



/* Fused Adam (no projection), one loop over the shard: 28 bytes per element. */
CLONES static void fused_adam(const float *g, float *m, float *v, float *w, int64_t n, float b1, float b2, float lr,
                              float bc1, float bc2, float eps, float decay)
{
#pragma omp parallel for num_threads(threads_) if (threads_ > 1)
  for (int64_t i = 0; i < n; i++) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    w[i] = w[i] * decay - lr * (m[i] / bc1) / (sqrtf(v[i] / bc2) + eps);
  }
}

/* Fused SGD with momentum: 20 bytes per element. */
CLONES static void fused_sgd(const float *g, float *b, float *w, int64_t n, float mom, float lr, float decay)
{
#pragma omp parallel for num_threads(threads_) if (threads_ > 1)
  for (int64_t i = 0; i < n; i++) {
    b[i] = mom * b[i] + g[i];
    w[i] = w[i] * decay - lr * b[i];
  }
}

/* The same access pattern with (almost) no arithmetic. It runs between adampi's steps on the same
 * buffers, so it keeps them plausible: v stays >= 0 and w moves as little as a real step. Each
 * kernel of the update's pattern has a version *_ahead (floor_kernels.h): the same operations 16
 * elements at a time (GCC vector extensions: written as loops, GCC left some of them scalar), after
 * prefetching the lines AHEAD bytes on. They are functions of their own, so that the plain kernels
 * compile as they did. */
CLONES static void bw_adam(const float *g, float *m, float *v, float *w, int64_t n)
{
#pragma omp parallel for num_threads(threads_) if (threads_ > 1)
  for (int64_t i = 0; i < n; i++) {
    m[i] = m[i] * 0.5f + g[i];
    v[i] = v[i] * 0.5f + g[i] * g[i];
    w[i] = w[i] * 0.99999f - 1e-6f * g[i];
  }
}

CLONES static void bw_sgd(const float *g, float *b, float *w, int64_t n)
{
#pragma omp parallel for num_threads(threads_) if (threads_ > 1)
  for (int64_t i = 0; i < n; i++) {
    b[i] = b[i] * 0.5f + g[i];
    w[i] = w[i] * 0.99999f - 1e-6f * g[i];
  }
}


/* The update's pattern with 16-bit gradients, as a sharded 16-bit step reads them (26 and 18 bytes
 * per element). */
CLONES static void bw_adam16(const uint16_t *g, float *m, float *v, float *w, int64_t n)
{
#pragma omp parallel for num_threads(threads_) if (threads_ > 1)
  for (int64_t i = 0; i < n; i++) {
    float gi = bench_bf16(g[i]);
    m[i] = m[i] * 0.5f + gi;
    v[i] = v[i] * 0.5f + gi * gi;
    w[i] = w[i] * 0.99999f - 1e-6f * gi;
  }
}

CLONES static void bw_sgd16(const uint16_t *g, float *b, float *w, int64_t n)
{
#pragma omp parallel for num_threads(threads_) if (threads_ > 1)
  for (int64_t i = 0; i < n; i++) {
    float gi = bench_bf16(g[i]);
    b[i] = b[i] * 0.5f + gi;
    w[i] = w[i] * 0.99999f - 1e-6f * gi;
  }
}

/* The data-parallel step's own traffic, for its floor: the mean of P gradient arrays of the shard
 * (P reads, one write) and the updated shard written into P - 1 other ranks' parameters. The
 * arrays are this rank's own (all ranks run the kernels at once, as they run the step), so the
 * kernels have the step's pattern; that the step reads and writes other processes' pages is part
 * of what the ratio measures. */
CLONES static void bw_reduce(float *out, float *const *in, int P, int64_t n)
{
  const float inv = 1.0f / (float)P;
  /* Block by block, one array at a time, so that each loop vectorizes (a loop over the P arrays
   * inside the loop over elements did not: the floor's reduction ran scalar until this round). */
#pragma omp parallel for num_threads(threads_) if (threads_ > 1)
  for (int64_t k = 0; k < n; k += 4096) {
    const int64_t end = n - k < 4096 ? n : k + 4096;
    for (int64_t i = k; i < end; i++) out[i] = in[0][i];
    for (int r = 1; r < P; r++) {
      const float *x = in[r];
      for (int64_t i = k; i < end; i++) out[i] += x[i];
    }
    for (int64_t i = k; i < end; i++) out[i] *= inv;
  }
}

/* The stores come from cache in the step (each task right after its update), so the floor's
 * stores copy one L1-sized block over and over: writes only. */
static void bw_store(const float *w, float *const *out, int P, int64_t n)
{
  const int64_t block = n < 4096 ? n : 4096;
  for (int r = 1; r < P; r++)
    for (int64_t k = 0; k < n; k += block)
      memcpy(out[r] + k, w, (size_t)(n - k < block ? n - k : block) * sizeof *w);
}


/* The 16-bit steps' own traffic, for their floor (--dtype): a sharded step's statistics pass
 * reads the caller's 16-bit gradients with w (2 + 4 bytes per element: bw_read16, in place of
 * bw_read2; it makes them float32 a row at a time, in cache) and so does the update (bw_adam16 or
 * bw_sgd16, in place of bw_adam or bw_sgd), as the library does for projectable tensors (nearly
 * all of these models' elements); a data-parallel one makes the float32 mean of P 16-bit arrays
 * (bw_reduce16), which both passes then read as float32 steps do; all round the updated master
 * into 16-bit parameters in the update, once per copy (the caller's own, and in data-parallel
 * steps the P - 1 others'), which the floor counts as 2-byte writes of one L1-sized block. The
 * bf16 widening (a shift) stands for both types: the traffic is measured. */
CLONES static void bw_reduce16(float *out, uint16_t *const *in, int P, int64_t n)
{
  const float inv = 1.0f / (float)P;
  /* Block by block, one array at a time (each loop vectorizes; the block stays in L1). */
#pragma omp parallel for num_threads(threads_) if (threads_ > 1)
  for (int64_t k = 0; k < n; k += 4096) {
    const int64_t end = n - k < 4096 ? n : k + 4096;
    for (int r = 0; r < P; r++) {
      const uint16_t *x = in[r];
      for (int64_t i = k; i < end; i++) {
        uint32_t b = (uint32_t)x[i] << 16;
        float f;
        memcpy(&f, &b, sizeof f);
        out[i] = r == 0 ? f : out[i] + f;
      }
    }
    for (int64_t i = k; i < end; i++) out[i] *= inv;
  }
}

static void bw_store16(uint16_t *const *out, int copies, int64_t n)
{
  static uint16_t block[4096];
  for (int r = 0; r < copies; r++)
    for (int64_t k = 0; k < n; k += 4096)
      memcpy(out[r] + k, block, (size_t)(n - k < 4096 ? n - k : 4096) * sizeof *block);
}

/* A read-only pass over g and w (what the statistics pass must read: 8 bytes per element), with
 * 16 float lanes so that it is not held back by the order of a scalar sum. */

static const struct floor_kernels *floor_; /* the form of this CPU's clones (floor.h) */
static volatile float sink_;


typedef struct config {
  const char *set, *opt, *grads, *mode, *dtype;
  int64_t millions, row_len; /* sweep: M x 2^20 elements in rows of row_len */
  int steps, threads;
} config;

static void run(const config *c, const bench_tensor *ts, int nt, int header)
{
  int sgd = !strcmp(c->opt, "sgdp") || !strcmp(c->opt, "sgd");
  int plain = !strcmp(c->opt, "adamw") || !strcmp(c->opt, "sgd");
  int dp = !strcmp(c->mode, "dp") || !strcmp(c->mode, "dp-shm");
  int shm = !strcmp(c->mode, "dp-shm"); /* the buffers of adampi_alloc_step_buffers */
  adampi_config cfg = adampi_config_defaults(sgd ? ADAMPI_SGDP : ADAMPI_ADAMP);
  cfg.threads = c->threads;
  const adampi_dtype dt = !strcmp(c->dtype, "bf16") ? ADAMPI_BFLOAT16 : !strcmp(c->dtype, "fp16") ? ADAMPI_FLOAT16 : ADAMPI_FLOAT32;
  const int half = dt != ADAMPI_FLOAT32; /* the model in 16 bits: the caller's w and g are 16-bit copies of w, g */
  cfg.dtype = dt;
  adampi *opt = NULL;
  char err[256];
  if (adampi_create(MPI_COMM_WORLD, &cfg, &opt, err, sizeof err) != ADAMPI_OK) MPI_Abort(MPI_COMM_WORLD, 1);
  adampi_hparams hp = sgd ? adampi_sgdp_defaults(1e-3) : adampi_adamp_defaults();
  bench_hparams(&hp, sgd, plain, !strcmp(c->grads, "orthogonal"));
  adampi_add_group(opt, &hp, NULL);
  for (int i = 0; i < nt; i++) adampi_add_tensor(opt, ts[i].name, ts[i].ndim, ts[i].shape, 0, NULL);
  if (adampi_commit(opt) != ADAMPI_OK) {
    if (rank_ == 0) fprintf(stderr, "%s\n", adampi_last_error(opt));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  int64_t N = adampi_numel(opt), lo, hi;
  adampi_shard(opt, rank_, &lo, &hi);
  int64_t n = hi - lo;
  size_t full = (size_t)(dp ? N : n) + 1;
  float *w = NULL, *g = NULL;
  void *w16 = NULL, *g16 = NULL; /* half: the step's buffers */
  if (shm && (half ? adampi_alloc_step_buffers_ex(opt, &w16, &g16) : adampi_alloc_step_buffers(opt, &w, &g)) != ADAMPI_OK) {
    if (rank_ == 0) fprintf(stderr, "%s\n", adampi_last_error(opt));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if (!shm || half) w = huge_alloc(full * sizeof *w), g = huge_alloc(full * sizeof *g);
  if (half && !shm) w16 = huge_alloc(full * 2), g16 = huge_alloc(full * 2);
  bench_fill(w, g, (int64_t)full - 1, dp ? 0 : lo, ts, nt, !strcmp(c->grads, "orthogonal"));
  if (half) { /* the 16-bit model: w and g rounded (the master starts from the rounded w) */
    adampi_round_to(dt, w, w16, (int64_t)full - 1);
    adampi_round_to(dt, g, g16, (int64_t)full - 1);
  }
  void *step_w = half ? w16 : (void *)w, *step_g = half ? g16 : (void *)g;
#define STEP() (dp ? adampi_step_ex(opt, step_w, step_g, NULL) : adampi_step_sharded_ex(opt, step_w, step_g, NULL))
  adampi_status st = ADAMPI_OK;
  double phase[ADAMPI_NUM_PHASES] = {0};
  int views[3] = {0};
  for (int k = 0; k < 2 && st == ADAMPI_OK; k++) /* warm-up; also checks that the step works */
    st = STEP();
  if (st != ADAMPI_OK) {
    if (rank_ == 0) fprintf(stderr, "step: %s\n", adampi_last_error(opt));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  /* adampi, the fused loop and the bandwidth kernel, one of each per round, so that the machine's
   * drift hits all three alike; medians over K rounds. The fused loop and the kernel read the same
   * gradient shard and work on copies of the shard's parameters and state (same sizes, touched
   * alike): were they to move adampi's weights, the gradients would stop being orthogonal to them
   * and the projected path would no longer be what is timed. */
  const float *st0 = adampi_state_shard(opt, sgd ? ADAMPI_STATE_MOMENTUM : ADAMPI_STATE_EXP_AVG);
  const float *st1 = adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG_SQ);
  float *gs = g + (dp ? lo : 0);
  size_t nb = sizeof(float) * (size_t)(n > 0 ? n : 1);
  float *ws = huge_alloc(nb), *s0 = huge_alloc(nb), *s1 = huge_alloc(nb);
  if (!ws || !s0 || !s1) {
    fprintf(stderr, "bench_step: out of memory for the fused loop's copies\n");
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  for (int64_t i = 0; i < n; i++) {
    ws[i] = w[(dp ? lo : 0) + i];
    s0[i] = st0 ? st0[i] : 0.0f;
    s1[i] = st1 ? st1[i] : 0.0f;
  }
  /* The read-only kernels (bw_read2 and bw_read2_ahead) only read, so they read the very arrays the
   * statistics pass reads: the step's gradient shard and the step's own parameters. Over the copy
   * ws (allocated later, elsewhere in memory) the same kernel ran 2-5% faster in 6 of 8 runs
   * (ResNet-50 and GPT-2 shapes, both timed in every round; within 2% in the other two), which
   * held the statistics pass to memory it does not read. A 16-bit model's statistics pass reads
   * adampi's float32 master, not w: its kernels keep the copy. */
  const float *wr = half ? ws : w + (dp ? lo : 0);
  /* The float32 data-parallel floor's arrays: P gradient sources, the mean, P - 1 store targets. */
  float *src[64] = {NULL}, *dst[64] = {NULL}, *mean = NULL;
  int P = dp && size_ <= 64 ? size_ : 1;
  for (int r = 0; r < P && dp && !half; r++) {
    src[r] = huge_alloc(nb), dst[r] = huge_alloc(nb);
    if (!src[r] || !dst[r]) {
      fprintf(stderr, "bench_step: out of memory for the data-parallel floor's arrays\n");
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    memcpy(src[r], gs, nb), memset(dst[r], 0, nb);
  }
  if (dp && !half && (mean = huge_alloc(nb)) == NULL) MPI_Abort(MPI_COMM_WORLD, 1);
  if (mean) memset(mean, 0, nb);
  /* The 16-bit floor's arrays: P 16-bit gradient sources (1 when sharded), P 16-bit store targets. */
  uint16_t *src16[64] = {NULL}, *dst16[64] = {NULL};
  float *wide = NULL;
  for (int r = 0; r < P && half; r++) {
    src16[r] = (uint16_t *)huge_alloc(nb / 2 + 2), dst16[r] = (uint16_t *)huge_alloc(nb / 2 + 2);
    if (!src16[r] || !dst16[r]) MPI_Abort(MPI_COMM_WORLD, 1);
    /* The gradients rounded to bfloat16 whatever the model's type: the reference kernels widen by
     * the shift, and float16 bits read that way are values of about 2^-70, whose squares would
     * make the Adam pattern's second moments subnormal (slow on x86) and inflate the floor. */
    adampi_round_to(ADAMPI_BFLOAT16, g + (dp ? lo : 0), src16[r], (int64_t)(nb / 4)), memset(dst16[r], 0, nb / 2);
  }
  if (half && dp && (wide = huge_alloc(nb)) == NULL) MPI_Abort(MPI_COMM_WORLD, 1);
  if (wide) memset(wide, 0, nb);
  double *t_steps = calloc((size_t)c->steps, sizeof *t_steps), *tf = calloc((size_t)c->steps, sizeof *tf);
  double *trd = calloc((size_t)c->steps, sizeof *trd), *tst = calloc((size_t)c->steps, sizeof *tst);
  double *tr = calloc((size_t)c->steps, sizeof *tr), *t16 = calloc((size_t)c->steps, sizeof *t16);
  double *t16in = calloc((size_t)c->steps, sizeof *t16in); /* the 16-bit gradients in */
  double *tb16 = calloc((size_t)c->steps, sizeof *tb16);   /* sharded: the update's pattern on them */
  const int in16 = half && !dp;                             /* both passes read the 16-bit gradients */
  double *tb = calloc((size_t)c->steps, sizeof *tb), *tp = calloc((size_t)c->steps * ADAMPI_NUM_PHASES, sizeof *tp);
  /* the same reference kernels prefetching ahead (AHEAD): the update's pattern, the statistics reads */
  double *tbp = calloc((size_t)c->steps, sizeof *tbp), *trp = calloc((size_t)c->steps, sizeof *trp);
  /* With threads: the update's prefetching pattern on one thread too, to show what the second and
   * later threads add (the development VM at times runs two threads no faster than one). */
  double *tb1 = calloc((size_t)c->steps, sizeof *tb1);
  for (int k = 0; k < c->steps; k++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    st = STEP();
    t_steps[k] = max_over_ranks(MPI_Wtime() - t0);
    if (st != ADAMPI_OK) {
      if (rank_ == 0) fprintf(stderr, "step %d: %s\n", k, adampi_last_error(opt));
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    adampi_profile pk;
    adampi_get_profile(opt, &pk);
    for (int q = 0; q < ADAMPI_NUM_PHASES; q++) tp[q * c->steps + k] = max_over_ranks(pk.seconds[q]);
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    if (n > 0 && sgd) fused_sgd(gs, s0, ws, n, 0.9f, 1e-3f, 0.99999f);
    else if (n > 0) fused_adam(gs, s0, s1, ws, n, 0.9f, 0.999f, 1e-3f, 0.5f, 0.5f, 1e-8f, 0.99999f);
    tf[k] = max_over_ranks(MPI_Wtime() - t0);
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    if (n > 0 && sgd) bw_sgd(gs, s0, ws, n);
    else if (n > 0) bw_adam(gs, s0, s1, ws, n);
    tb[k] = max_over_ranks(MPI_Wtime() - t0);
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    if (n > 0) sink_ += floor_->read2(gs, wr, n);
    tr[k] = max_over_ranks(MPI_Wtime() - t0);
    if (!in16) { /* the float32 pattern and reads are the floor's: their prefetching versions too */
      MPI_Barrier(MPI_COMM_WORLD);
      t0 = MPI_Wtime();
      if (n > 0 && sgd) floor_->sgd_ahead(gs, s0, ws, n);
      else if (n > 0) floor_->adam_ahead(gs, s0, s1, ws, n);
      tbp[k] = max_over_ranks(MPI_Wtime() - t0);
      MPI_Barrier(MPI_COMM_WORLD);
      t0 = MPI_Wtime();
      if (n > 0) sink_ += floor_->read2_ahead(gs, wr, n);
      trp[k] = max_over_ranks(MPI_Wtime() - t0);
      if (c->threads > 1) {
        threads_ = 1;
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = MPI_Wtime();
        if (n > 0 && sgd) floor_->sgd_ahead(gs, s0, ws, n);
        else if (n > 0) floor_->adam_ahead(gs, s0, s1, ws, n);
        tb1[k] = max_over_ranks(MPI_Wtime() - t0);
        threads_ = c->threads;
      }
    }
    if (half) { /* the 16-bit gradients in (the mean; or, sharded, both passes' reads), the copies out */
      MPI_Barrier(MPI_COMM_WORLD);
      t0 = MPI_Wtime();
      if (n > 0 && dp) bw_reduce16(wide, src16, P, n);
      else if (n > 0) sink_ += floor_->read16(src16[0], ws, n);
      t16in[k] = max_over_ranks(MPI_Wtime() - t0);
      if (in16) {
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = MPI_Wtime();
        if (n > 0 && sgd) bw_sgd16(src16[0], s0, ws, n);
        else if (n > 0) bw_adam16(src16[0], s0, s1, ws, n);
        tb16[k] = max_over_ranks(MPI_Wtime() - t0);
        MPI_Barrier(MPI_COMM_WORLD); /* and prefetching: trp, tbp hold the 16-bit kernels' times */
        t0 = MPI_Wtime();
        if (n > 0) sink_ += floor_->read16_ahead(src16[0], ws, n);
        trp[k] = max_over_ranks(MPI_Wtime() - t0);
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = MPI_Wtime();
        if (n > 0 && sgd) floor_->sgd16_ahead(src16[0], s0, ws, n);
        else if (n > 0) floor_->adam16_ahead(src16[0], s0, s1, ws, n);
        tbp[k] = max_over_ranks(MPI_Wtime() - t0);
      }
      t0 = MPI_Wtime();
      if (n > 0) bw_store16(dst16, P, n);
      t16[k] = max_over_ranks(MPI_Wtime() - t0);
    }
    if (!dp || half) continue;
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    if (n > 0) bw_reduce(mean, src, P, n);
    trd[k] = max_over_ranks(MPI_Wtime() - t0);
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    if (n > 0) bw_store(ws, dst, P, n);
    tst[k] = max_over_ranks(MPI_Wtime() - t0);
  }
  double t_step = median(t_steps, c->steps), t_fused = median(tf, c->steps);
  /* Each floor part at the faster of its kernel's two versions, plain and prefetching (printed). */
  double t_bw_plain = median(in16 ? tb16 : tb, c->steps), t_bw_pf = median(tbp, c->steps);
  double t_rd_plain = median(in16 ? t16in : tr, c->steps), t_rd_pf = median(trp, c->steps);
  double t_bw = median(tb, c->steps), t_one = c->threads > 1 && !in16 ? median(tb1, c->steps) : 0.0;
  if (!in16) t_bw = t_bw_pf < t_bw ? t_bw_pf : t_bw;
  /* The floor of the design on this machine: a read-only pass over g and w, then the update's
   * access pattern, each at the speed the bandwidth kernels reach in this run. */
  double t_read = median(tr, c->steps);
  if (!in16) t_read = t_rd_pf < t_read ? t_rd_pf : t_read;
  double t_floor = t_read + t_bw;
  /* The data-parallel floor: the reduction's reads and write, the statistics pass's reads, the
   * update's pattern and the stores into the peers, each at this machine's speed in this run. */
  double t_reduce = dp ? median(trd, c->steps) : 0.0, t_store = dp ? median(tst, c->steps) : 0.0;
  double t_dp_floor = dp ? t_reduce + t_floor + t_store : 0.0;
  double t_upd16 = 0.0, t_out16 = 0.0; /* a sharded 16-bit floor's parts, printed with it */
  /* A 16-bit step's floor (the only floor printed): its 16-bit copies out (t16) and, data-parallel,
   * the mean made from the 16-bit gradients, then the float32 floor (the mean, the master and the
   * state are float32). Sharded, both passes read the 16-bit gradients: the statistics pass's
   * reference is t16in (bw_read16), the update's pattern tb16 (bw_adam16 or bw_sgd16). */
  if (half) {
    double t_in = median(t16in, c->steps);
    t_out16 = median(t16, c->steps);
    if (in16) {
      t_in = t_rd_pf < t_rd_plain ? t_rd_pf : t_rd_plain;
      t_upd16 = t_bw_pf < t_bw_plain ? t_bw_pf : t_bw_plain;
      t_floor = t_out16 + t_in + t_upd16, t_read = t_in;
    }
    else t_floor = t_out16 + t_in + t_read + t_bw;
    t_dp_floor = 0.0;
  }
  free(trd), free(tst);
  for (int r = 0; r < P && dp && !half; r++) free(src[r]), free(dst[r]);
  free(mean);
  free(tr), free(t16), free(t16in), free(tb16);
  for (int r = 0; r < P && half; r++) free(src16[r]), free(dst16[r]);
  free(wide);
  for (int q = 0; q < ADAMPI_NUM_PHASES; q++) phase[q] = median(tp + q * c->steps, c->steps);
  free(t_steps), free(tf), free(tb), free(tp), free(tbp), free(trp), free(tb1);
  free(ws), free(s0), free(s1);
  for (int i = 0; i < nt; i++) { /* the decisions of the last timed step */
    adampi_diag d;
    adampi_diag_get(opt, i, &d);
    views[d.view]++;
  }

  adampi_profile p;
  adampi_get_profile(opt, &p);
  /* The statistics collective alone (same bytes, ranks already in step): the exchange phase above
   * also holds the wait for the slowest rank, which on an oversubscribed machine dominates. */
  int nd = (int)(p.exchange_bytes / 8) > 0 ? (int)(p.exchange_bytes / 8) : 1;
  double *xbuf = calloc((size_t)nd, sizeof *xbuf), tx[15];
  for (int k = 0; k < 15; k++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    MPI_Allreduce(MPI_IN_PLACE, xbuf, nd, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    tx[k] = max_over_ranks(MPI_Wtime() - t0);
  }
  double t_xchg = median(tx, 15);
  free(xbuf);
  int64_t nmax = 0;
  MPI_Allreduce(&n, &nmax, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  double fused_bytes = sgd ? 20.0 : 28.0;
  /* design bytes per element: the statistics pass reads g and w; the update as the fused loop */
  double design_bytes = fused_bytes + 8.0;
  double eff = design_bytes * (double)nmax / t_step / 1e9, kern = fused_bytes * (double)nmax / t_bw / 1e9;
  /* Data-parallel exchanges: each rank receives every other rank's gradients for its shard and
   * every other rank's updated shard, (N - n) floats each (the least a rank must receive). */
  int64_t moved = dp ? (N - n) * (int64_t)sizeof(float) : 0, moved_max = 0;
  MPI_Allreduce(&moved, &moved_max, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  int64_t alloc_max = 0;
  MPI_Allreduce(&p.allocated_bytes, &alloc_max, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  if (rank_ == 0) {
    if (header)
      printf("csv,set,opt,grads,mode,ranks,threads,numel,step_ms,reduce_scatter_ms,stats_ms,exchange_ms,update_ms,allgather_ms,"
             "fused_ms,bandwidth_kernel_ms,step_over_fused,design_bytes_per_elem,effective_GBps,kernel_GBps,"
             "effective_over_kernel,floor_ms,step_over_floor,exchange_alone_ms,exchange_bytes,exchange_over_grad_bytes,alloc_bytes_per_rank,"
             "projected_tensors,rs_bytes_per_rank,ag_bytes_per_rank,readonly_ms,readonly_over_stats,dp_floor_ms,step_over_dp_floor,"
             "kernel_one_thread_ms,dtype\n");
    printf("csv,%s,%s,%s,%s,%d,%d,%lld,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.0f,%.2f,%.2f,%.3f,%.3f,%.3f,%.4f,%lld,%.6f,%lld,%d,%lld,%lld,%.3f,%.3f,%.3f,%.3f,%.3f,%s\n",
           c->set, c->opt, c->grads, c->mode, size_, c->threads, (long long)N, 1e3 * t_step, 1e3 * phase[0], 1e3 * phase[1],
           1e3 * phase[2], 1e3 * phase[3], 1e3 * phase[4], 1e3 * t_fused, 1e3 * t_bw, t_step / t_fused, design_bytes, eff,
           kern, eff / kern, 1e3 * t_floor, t_step / t_floor, 1e3 * t_xchg, (long long)p.exchange_bytes, (double)p.exchange_bytes / (4.0 * (double)N),
           (long long)alloc_max, views[1] + views[2], (long long)moved_max, (long long)moved_max, 1e3 * t_read,
           t_read / phase[1], 1e3 * t_dp_floor, dp && !half ? t_step / t_dp_floor : 0.0, 1e3 * t_one, c->dtype);
    printf("  %-8s %-5s %-4s %-10s %-7s %d rank(s) x %d thr %6.1fM: step %8.2f ms = %.2f x fused (%7.2f ms); "
           "phases stats %.2f exch %.3f update %.2f rs %.2f ag %.2f ms; %.1f GB/s = %.2f of kernel (%.1f GB/s); "
           "%.2f x floor (%.2f ms); statistics pass at %.2f of the read-only kernel; "
           "exchange %lld B (%.4f%% of grads), alone %.3f ms (%.2f%% of the step); %lld MB/rank; %d projected\n",
           c->set, c->opt, c->dtype, c->grads, c->mode, size_, c->threads, (double)N / 1e6, 1e3 * t_step, t_step / t_fused, 1e3 * t_fused,
           1e3 * phase[1], 1e3 * phase[2], 1e3 * phase[3], 1e3 * phase[0], 1e3 * phase[4], eff, eff / kern, kern,
           t_step / t_floor, 1e3 * t_floor, t_read / phase[1], (long long)p.exchange_bytes, 100.0 * (double)p.exchange_bytes / (4.0 * (double)N),
           1e3 * t_xchg, 100.0 * t_xchg / t_step,
           (long long)(alloc_max >> 20), views[1] + views[2]);
    if (dp && size_ > 1 && !shm)
      printf("      reduce-scatter and all-gather each receive %.1f MB per rank: %.1f and %.1f GB/s\n", (double)moved_max / 1e6,
             (double)moved_max / 1e9 / phase[0], (double)moved_max / 1e9 / phase[4]);
    if (dp && !half)
      printf("      data-parallel floor (mean of %d gradient arrays %.2f, statistics reads %.2f, the update's pattern %.2f, "
             "%d stores of the shard %.2f) %.2f ms: the step is %.2f x it\n",
             P, 1e3 * t_reduce, 1e3 * t_read, 1e3 * t_bw, P - 1, 1e3 * t_store, 1e3 * t_dp_floor, t_step / t_dp_floor);
    printf("      floor's kernels, plain / prefetching: statistics reads %.2f / %.2f ms, the update's pattern %.2f / %.2f ms\n",
           1e3 * t_rd_plain, 1e3 * t_rd_pf, 1e3 * t_bw_plain, 1e3 * t_bw_pf);
    if (t_one > 0)
      printf("      the update's prefetching pattern on one thread %.2f ms: %d threads run it %.2fx as fast%s\n", 1e3 * t_one,
             c->threads, t_one / t_bw_pf, t_one / t_bw_pf < 1.15 ? " (the extra threads added little bandwidth in this run)" : "");
    if (in16)
      printf("      16-bit floor (statistics reads %.2f, the update's pattern %.2f, the 16-bit parameters out %.2f) "
             "%.2f ms; the step's phases: statistics %.2f, update %.2f\n",
             1e3 * t_read, 1e3 * t_upd16, 1e3 * t_out16, 1e3 * t_floor, 1e3 * phase[1], 1e3 * phase[3]);
    if (dp && size_ > 1 && shm)
      printf("      reduce-scatter loads and all-gather stores %.1f MB per rank: %.1f GB/s, and the all-gather's stores are "
             "part of the update phase (\"ag\" is the closing barrier)\n",
             (double)moved_max / 1e6, (double)moved_max / 1e9 / phase[0]);
    fflush(stdout);
  }
  if (!shm || half) free(w), free(g); /* the step buffers go with the handle */
  if (half && !shm) free(w16), free(g16);
  adampi_free(&opt);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  config c = {"resnet50", "all", "all", "sharded", "fp32", 64, 1024, 0, 1};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--set")) c.set = argv[i + 1];
    else if (!strcmp(argv[i], "--opt")) c.opt = argv[i + 1];
    else if (!strcmp(argv[i], "--grads")) c.grads = argv[i + 1];
    else if (!strcmp(argv[i], "--mode")) c.mode = argv[i + 1];
    else if (!strcmp(argv[i], "--dtype")) c.dtype = argv[i + 1];
    else if (!strcmp(argv[i], "--millions")) c.millions = atoll(argv[i + 1]);
    else if (!strcmp(argv[i], "--row-len")) c.row_len = atoll(argv[i + 1]);
    else if (!strcmp(argv[i], "--steps")) c.steps = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--threads")) c.threads = atoi(argv[i + 1]);
  }
  threads_ = c.threads;
  floor_ = floor_select();
  if (c.row_len < 1) c.row_len = 1024;
  static bench_tensor ts[512];
  int nt = !strcmp(c.set, "gpt2") ? shapes_gpt2(ts) : !strcmp(c.set, "sweep") ? shapes_sweep(ts, c.millions << 20, c.row_len) : shapes_resnet50(ts);
  if (c.steps <= 0) c.steps = !strcmp(c.set, "resnet50") ? 21 : 5;
  const char *opts[] = {"adamp", "adamw", "sgdp", "sgd"}, *grads[] = {"random", "orthogonal"};
  int header = 1;
  for (int o = 0; o < 4; o++)
    for (int gk = 0; gk < 2; gk++) {
      config x = c;
      x.opt = opts[o];
      x.grads = grads[gk];
      if (strcmp(c.opt, "all") && strcmp(c.opt, x.opt)) continue;
      if (strcmp(c.grads, "all") && strcmp(c.grads, x.grads)) continue;
      run(&x, ts, nt, header);
      header = 0;
    }
  MPI_Finalize();
  return 0;
}
