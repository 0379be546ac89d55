/*
 * bench_mixed - the data-parallel step of a bfloat16 (or float16) model against the float32 one,
 * and a clipped step against an unclipped one, in one process and one run.
 *
 *   mpirun -np N build/bin/bench_mixed [--set resnet50|gpt2] [--opt adamp|sgdp] [--mode dp-shm|dp]
 *                                      [--dtype bf16|fp16] [--steps K]
 *
 * Four handles on the same shapes and the same values: float32 and the 16-bit type, each without
 * and with global-norm clipping (max_grad_norm half the gradients' norm, so it acts at every step).
 * Each round times one step of each, then a bandwidth kernel over the shard with the update's
 * access pattern (28 bytes per element for AdamP, 20 for SGDP), so that the machine's drift hits
 * all alike; medians over K rounds after 2 warm-up rounds, max over ranks; the ratios are medians of
 * each round's own ratio, so that drift between rounds cancels. Gradients are
 * orthogonal to their rows' weights (what layers before a normalization see), so the projection
 * path is what is timed. Prints one CSV line per configuration ("csv,") and a readable summary
 * with the memory per rank from adampi_get_profile.
 */
#define _GNU_SOURCE
#include "adampi.h"
#include "shapes.h"
#include "timing.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rank_, size_;

static void die(const char *what, const adampi *opt)
{
  fprintf(stderr, "bench_mixed: %s: %s\n", what, opt ? adampi_last_error(opt) : "");
  MPI_Abort(MPI_COMM_WORLD, 1);
}



/* The update's access pattern over the shard: g read, the state and w read and written. */
CLONES static void bw_kernel(const float *g, float *a, float *b, float *w, int64_t n, int sgd)
{
  if (sgd)
    for (int64_t i = 0; i < n; i++) a[i] = a[i] + g[i], w[i] = w[i] - a[i];
  else
    for (int64_t i = 0; i < n; i++) a[i] = a[i] + g[i], b[i] = b[i] + g[i], w[i] = w[i] - a[i] * b[i];
}

typedef struct handle {
  adampi *opt;
  void *params, *grads;
  int shm;
} handle;

static handle make(const bench_tensor *ts, int nt, int sgd, adampi_dtype dt, double max_norm, int shm)
{
  handle h = {NULL, NULL, NULL, shm};
  adampi_config cfg = adampi_config_defaults(sgd ? ADAMPI_SGDP : ADAMPI_ADAMP);
  cfg.dtype = dt;
  cfg.max_grad_norm = max_norm;
  char err[256];
  if (adampi_create(MPI_COMM_WORLD, &cfg, &h.opt, err, sizeof err) != ADAMPI_OK) die(err, NULL);
  adampi_hparams hp = sgd ? adampi_sgdp_defaults(1e-3) : adampi_adamp_defaults();
  bench_hparams(&hp, sgd, 0, 1); /* orthogonal gradients */
  adampi_add_group(h.opt, &hp, NULL);
  for (int i = 0; i < nt; i++) adampi_add_tensor(h.opt, ts[i].name, ts[i].ndim, ts[i].shape, 0, NULL);
  if (adampi_commit(h.opt) != ADAMPI_OK) die("commit", h.opt);
  size_t bytes = (size_t)adampi_numel(h.opt) * adampi_dtype_size(dt);
  if (shm) {
    if (adampi_alloc_step_buffers_ex(h.opt, &h.params, &h.grads) != ADAMPI_OK) die("step buffers", h.opt);
  } else {
    h.params = malloc(bytes), h.grads = malloc(bytes);
    if (!h.params || !h.grads) die("out of memory", NULL);
  }
  return h;
}

/* Parameters and orthogonal gradients (fp32, the same on every rank and for every handle),
 * written into the handle's buffers in its type. Returns the gradients' global norm. */
static double fill(handle *h, adampi_dtype dt, float *w, float *g, int64_t N, int first, const bench_tensor *ts, int nt)
{
  double norm2 = 0.0;
  if (first) bench_fill(w, g, N, 0, ts, nt, 1);
  for (int64_t k = 0; k < N; k++) norm2 += (double)g[k] * g[k];
  adampi_round_to(dt, w, h->params, N);
  adampi_round_to(dt, g, h->grads, N);
  return sqrt(norm2);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  const char *set = "resnet50", *optname = "adamp", *mode = "dp-shm", *dtname = "bf16";
  int steps = 9;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--set")) set = argv[i + 1];
    else if (!strcmp(argv[i], "--opt")) optname = argv[i + 1];
    else if (!strcmp(argv[i], "--mode")) mode = argv[i + 1];
    else if (!strcmp(argv[i], "--dtype")) dtname = argv[i + 1];
    else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
    else {
      if (rank_ == 0) fprintf(stderr, "bench_mixed: unknown option %s\n", argv[i]);
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
  }
  static bench_tensor ts[512];
  int nt = !strcmp(set, "gpt2") ? shapes_gpt2(ts) : shapes_resnet50(ts);
  int sgd = !strcmp(optname, "sgdp"), shm = !strcmp(mode, "dp-shm");
  adampi_dtype half = !strcmp(dtname, "fp16") ? ADAMPI_FLOAT16 : ADAMPI_BFLOAT16;
  if (steps < 3) steps = 3;

  /* 0: fp32, 1: fp32 clipped, 2: 16-bit, 3: 16-bit clipped. */
  const adampi_dtype types[4] = {ADAMPI_FLOAT32, ADAMPI_FLOAT32, half, half};
  handle h[4];
  for (int k = 0; k < 4; k++) h[k] = make(ts, nt, sgd, types[k], 0.0, shm);
  int64_t N = adampi_numel(h[0].opt), lo, hi;
  adampi_shard(h[0].opt, rank_, &lo, &hi);
  float *w = malloc((size_t)N * sizeof(float)), *g = malloc((size_t)N * sizeof(float));
  double norm = 0.0;
  for (int k = 0; k < 4; k++) norm = fill(&h[k], types[k], w, g, N, k == 0, ts, nt);
  for (int k = 1; k < 4; k += 2) adampi_set_max_grad_norm(h[k].opt, 0.5 * norm);
  int64_t n = hi - lo;
  float *a = calloc((size_t)n + 1, sizeof(float)), *b = calloc((size_t)n + 1, sizeof(float));
  float *ws = malloc(((size_t)n + 1) * sizeof(float));
  memcpy(ws, w + lo, (size_t)n * sizeof(float));

  double *t[5], *ph[2][ADAMPI_NUM_PHASES];
  for (int k = 0; k < 5; k++) t[k] = calloc((size_t)steps, sizeof(double));
  for (int k = 0; k < 2; k++)
    for (int q = 0; q < ADAMPI_NUM_PHASES; q++) ph[k][q] = calloc((size_t)steps, sizeof(double));
  for (int round = -2; round < steps; round++) {
    for (int k = 0; k < 4; k++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      if (adampi_step_ex(h[k].opt, h[k].params, h[k].grads, NULL) != ADAMPI_OK) die("step", h[k].opt);
      double dt = max_over_ranks(MPI_Wtime() - t0);
      if (round >= 0) t[k][round] = dt;
      adampi_profile pk;
      adampi_get_profile(h[k].opt, &pk);
      for (int q = 0; q < ADAMPI_NUM_PHASES && round >= 0 && k % 2 == 0; q++) ph[k / 2][q][round] = max_over_ranks(pk.seconds[q]);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    bw_kernel(g + lo, a, b, ws, n, sgd);
    double dt = max_over_ranks(MPI_Wtime() - t0);
    if (round >= 0) t[4][round] = dt;
  }
  /* Ratios of the same round (paired: the machine's drift between rounds cancels), medians. */
  double *ratio = calloc((size_t)steps, sizeof(double)), r_half, r_clip32, r_clip16;
  for (int q = 0; q < steps; q++) ratio[q] = t[2][q] / t[0][q];
  r_half = median(ratio, steps);
  for (int q = 0; q < steps; q++) ratio[q] = t[1][q] / t[0][q];
  r_clip32 = median(ratio, steps);
  for (int q = 0; q < steps; q++) ratio[q] = t[3][q] / t[2][q];
  r_clip16 = median(ratio, steps);
  free(ratio);
  double m[5];
  for (int k = 0; k < 5; k++) m[k] = median(t[k], steps);
  adampi_step_info info;
  adampi_last_step(h[3].opt, &info);
  adampi_profile p32, p16;
  adampi_get_profile(h[0].opt, &p32);
  adampi_get_profile(h[2].opt, &p16);
  for (int q = 0; q < ADAMPI_NUM_PHASES; q++) /* medians over the rounds, max over ranks */
    p32.seconds[q] = median(ph[0][q], steps), p16.seconds[q] = median(ph[1][q], steps);
  int64_t nmax = 0;
  MPI_Allreduce(&n, &nmax, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  /* Memory per rank that scales with the model: the caller's parameters and gradients (step buffers
   * or its own), and what the library allocated for the shard. */
  double per32 = ((double)p32.allocated_bytes + 2.0 * 4.0 * (double)N) / (double)N;
  double per16 = ((double)p16.allocated_bytes + 2.0 * 2.0 * (double)N) / (double)N;
  if (rank_ == 0) {
    printf("csv,set,opt,mode,dtype,ranks,numel,fp32_ms,fp32_clip_ms,half_ms,half_clip_ms,kernel_ms,half_over_fp32,"
           "clip_over_plain_fp32,clip_over_plain_half,clip_coef,bytes_per_param_fp32,bytes_per_param_half,master_bytes\n");
    printf("csv,%s,%s,%s,%s,%d,%lld,%.3f,%.3f,%.3f,%.3f,%.3f,%.4f,%.4f,%.4f,%.6f,%.3f,%.3f,%lld\n", set, optname, mode,
           adampi_dtype_name(half), size_, (long long)N, 1e3 * m[0], 1e3 * m[1], 1e3 * m[2], 1e3 * m[3], 1e3 * m[4],
           r_half, r_clip32, r_clip16, info.clip_coef, per32, per16, (long long)p16.master_bytes);
    printf("  %s %s %s %d ranks, %.1fM parameters (shard %.1fM): fp32 %.2f ms, %s %.2f ms = %.3f x fp32; "
           "clipped (factor %.3f) %.2f / %.2f ms = %.3f / %.3f x unclipped; bandwidth kernel %.2f ms over the shard "
           "(fp32 step %.2f x it); ratios are medians of the rounds' own ratios\n",
           set, optname, mode, size_, (double)N / 1e6, (double)nmax / 1e6, 1e3 * m[0], adampi_dtype_name(half), 1e3 * m[2],
           r_half, info.clip_coef, 1e3 * m[1], 1e3 * m[3], r_clip32, r_clip16, 1e3 * m[4], m[0] / m[4]);
    printf("      phases (rs, stats, exchange, update, ag; medians), ms: fp32 %.2f %.2f %.2f %.2f %.2f; %s %.2f %.2f "
           "%.2f %.2f %.2f\n",
           1e3 * p32.seconds[0], 1e3 * p32.seconds[1], 1e3 * p32.seconds[2], 1e3 * p32.seconds[3], 1e3 * p32.seconds[4],
           adampi_dtype_name(half), 1e3 * p16.seconds[0], 1e3 * p16.seconds[1], 1e3 * p16.seconds[2], 1e3 * p16.seconds[3],
           1e3 * p16.seconds[4]);
    printf("      memory per rank, bytes per parameter: fp32 %.2f, %s %.2f (the master: %lld bytes)\n", per32,
           adampi_dtype_name(half), per16, (long long)p16.master_bytes);
    fflush(stdout);
  }
  for (int k = 0; k < 4; k++) {
    if (!h[k].shm) free(h[k].params), free(h[k].grads);
    adampi_free(&h[k].opt);
  }
  for (int k = 0; k < 5; k++) free(t[k]);
  for (int k = 0; k < 2; k++)
    for (int q = 0; q < ADAMPI_NUM_PHASES; q++) free(ph[k][q]);
  free(w), free(g), free(a), free(b), free(ws);
  MPI_Finalize();
  return 0;
}
