/*
 * bench_ab - two builds of the library in one process, step by step: which one is faster, and
 * whether they compute the same bits.
 *
 *   mpirun -np N build/bin/bench_ab --a OLD/lib/libadampi.so --b NEW/lib/libadampi.so
 *       [--set resnet50|gpt2|sweep] [--millions M] [--row-len L] [--opt adamp|sgdp|adamw|sgd]
 *       [--grads random|orthogonal] [--mode sharded|dp|dp-shm] [--dtype fp32|bf16|fp16]
 *       [--threads T] [--rounds K] [--start-step T] [--check-bits] [--perturb-b]
 *   (--threads T > 1 with mpirun's --bind-to none; benchmarks/run_ab.sh REV builds REV and runs this
 *   against build/ in both orders.)
 *
 * On this project's VMs whole runs of bench_step differ by 10-50% and the machine drifts by 5-10%
 * within one, so a change of a few percent cannot be seen by comparing runs. Here both builds are
 * loaded (dlopen, each with its own symbols), each steps its own copy of the same model (same
 * parameters, gradients and hyperparameters as bench_step's), and the rounds alternate which one
 * goes first (A B, B A, A B, ...: the sequence A B B A A B B A), so that drift and the position in
 * a pair hit both alike. Reported, per build: the medians over K rounds of the step and of its
 * phases (slowest rank); and the median, quartiles and range of the per-round ratio B / A, with the
 * number of rounds in which B was faster. After the rounds, the two copies are compared bit for
 * bit (parameters the step wrote, every state shard, the float32 master of a 16-bit model): a
 * change meant to keep the bits must show "same bits: yes"; with --check-bits a difference makes
 * the exit status 3.
 *
 * Both libraries must have this header's ABI (same soname version); the program itself does not
 * link libadampi. Giving one file twice is an A/A run: one library, two handles. --perturb-b gives
 * B's group a learning rate 1 + 2^-20 times A's, so that a test can see the comparison say "no".
 * --start-step T times steps late in a run: both handles start with every step counter at T
 * (adampi_set_state, the moments or momentum buffer zero), so that the bias corrections are
 * those of update T + 1 on (AdamP: from about T = 16,626, with beta2 = 0.999, sqrt(1 - beta2^t)
 * is 1 in float and the kernels skip the division by it, src/adamp.c).
 */
#define _GNU_SOURCE /* madvise */
#include "adampi.h"
#include "shapes.h"
#include "timing.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* The library's entry points this program calls, resolved in each build. */
#define BENCH_AB_FUNCS(X)                                                                                        \
  X(adampi_config_defaults) X(adampi_adamp_defaults) X(adampi_sgdp_defaults) X(adampi_create) X(adampi_free)     \
  X(adampi_last_error) X(adampi_add_group) X(adampi_add_tensor) X(adampi_commit) X(adampi_numel) X(adampi_shard) \
  X(adampi_round_to) X(adampi_alloc_step_buffers) X(adampi_alloc_step_buffers_ex) X(adampi_step_ex)              \
  X(adampi_step_sharded_ex) X(adampi_get_profile) X(adampi_state_shard) X(adampi_master_shard)                 \
  X(adampi_num_tensors) X(adampi_set_state)

typedef struct lib {
  void *dl;
#define DECL(f) __typeof__(f) *f;
  BENCH_AB_FUNCS(DECL)
#undef DECL
} lib;

/* One build's handle and its copy of the model. */
typedef struct side {
  lib L;
  adampi *opt;
  void *step_w, *step_g; /* what the step is given: float32 or 16-bit */
  size_t w_bytes;        /* of step_w this rank's step writes and compares (the shard, or all when dp) */
  size_t w_off;          /* where those bytes start in step_w */
  double *t_step, *t_phase; /* per round: the step, the phases (rounds x ADAMPI_NUM_PHASES) */
} side;

static int rank_, size_;


/* Loads path and resolves every entry point; 0, or -1 with the reason in msg. */
static int lib_open(lib *L, const char *path, char *msg, size_t len)
{
  memset(L, 0, sizeof *L);
  L->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!L->dl) {
    snprintf(msg, len, "cannot load %s: %s", path, dlerror());
    return -1;
  }
#define RESOLVE(f)                                                            \
  if ((*(void **)&L->f = dlsym(L->dl, #f)) == NULL) {                         \
    snprintf(msg, len, "%s has no %s (a build older than this program's API?)", path, #f); \
    return -1;                                                                \
  }
  BENCH_AB_FUNCS(RESOLVE)
#undef RESOLVE
  return 0;
}

/* Every rank agrees whether any failed (collective). */
static int any_failed(int failed)
{
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return any;
}

typedef struct config {
  const char *a, *b, *set, *opt, *grads, *mode, *dtype;
  int64_t millions, row_len;
  int rounds, threads, check_bits, perturb_b;
  int64_t start_step; /* --start-step: every counter's value before the first step (0: none) */
} config;

/* Makes s's handle and model (collective). 0, or -1 with msg set on this rank. */
static int side_setup(side *s, const config *c, const bench_tensor *ts, int nt, int perturb, char *msg, size_t len)
{
  const lib *L = &s->L;
  const int sgd = !strcmp(c->opt, "sgdp") || !strcmp(c->opt, "sgd");
  const int plain = !strcmp(c->opt, "adamw") || !strcmp(c->opt, "sgd");
  const int dp = strcmp(c->mode, "sharded") != 0, shm = !strcmp(c->mode, "dp-shm");
  const adampi_dtype dt = !strcmp(c->dtype, "bf16") ? ADAMPI_BFLOAT16 : !strcmp(c->dtype, "fp16") ? ADAMPI_FLOAT16 : ADAMPI_FLOAT32;
  const int half = dt != ADAMPI_FLOAT32;
  adampi_config cfg = L->adampi_config_defaults(sgd ? ADAMPI_SGDP : ADAMPI_ADAMP);
  cfg.threads = c->threads;
  cfg.dtype = dt;
  char err[256] = "";
  if (L->adampi_create(MPI_COMM_WORLD, &cfg, &s->opt, err, sizeof err) != ADAMPI_OK) {
    snprintf(msg, len, "adampi_create: %s", err);
    return -1;
  }
  adampi_hparams hp = sgd ? L->adampi_sgdp_defaults(1e-3) : L->adampi_adamp_defaults();
  bench_hparams(&hp, sgd, plain, !strcmp(c->grads, "orthogonal")); /* bench_step's */
  if (perturb) hp.lr *= 1.0 + 0x1p-20;
  L->adampi_add_group(s->opt, &hp, NULL);
  for (int i = 0; i < nt; i++) L->adampi_add_tensor(s->opt, ts[i].name, ts[i].ndim, ts[i].shape, 0, NULL);
  if (L->adampi_commit(s->opt) != ADAMPI_OK) {
    snprintf(msg, len, "adampi_commit: %s", L->adampi_last_error(s->opt));
    return -1;
  }
  int64_t N = L->adampi_numel(s->opt), lo, hi;
  L->adampi_shard(s->opt, rank_, &lo, &hi);
  const int64_t count = dp ? N : hi - lo; /* elements of the caller's arrays */
  const size_t es = half ? 2 : 4;
  float *w = huge_alloc((size_t)count * 4 + 4), *g = huge_alloc((size_t)count * 4 + 4);
  if (!w || !g) {
    snprintf(msg, len, "out of memory for the model (%lld elements)", (long long)count);
    return -1;
  }
  bench_fill(w, g, count, dp ? 0 : lo, ts, nt, !strcmp(c->grads, "orthogonal"));
  if (shm) {
    adampi_status st = half ? L->adampi_alloc_step_buffers_ex(s->opt, &s->step_w, &s->step_g)
                            : L->adampi_alloc_step_buffers(s->opt, (float **)&s->step_w, (float **)&s->step_g);
    if (st != ADAMPI_OK) {
      snprintf(msg, len, "adampi_alloc_step_buffers: %s", L->adampi_last_error(s->opt));
      return -1;
    }
  } else if (half) {
    s->step_w = huge_alloc((size_t)count * 2 + 2), s->step_g = huge_alloc((size_t)count * 2 + 2);
    if (!s->step_w || !s->step_g) {
      snprintf(msg, len, "out of memory for the 16-bit model");
      return -1;
    }
  }
  if (half) {
    L->adampi_round_to(dt, w, s->step_w, count), L->adampi_round_to(dt, g, s->step_g, count);
    free(w), free(g);
  } else if (shm) {
    memcpy(s->step_w, w, (size_t)count * 4), memcpy(s->step_g, g, (size_t)count * 4);
    free(w), free(g);
  } else {
    s->step_w = w, s->step_g = g;
  }
  /* The step buffers are shared within the node: each rank compares the shard it writes. */
  s->w_off = (size_t)(shm ? lo : 0) * es;
  s->w_bytes = (size_t)(shm ? hi - lo : count) * es;
  s->t_step = calloc((size_t)c->rounds, sizeof(double));
  s->t_phase = calloc((size_t)c->rounds * ADAMPI_NUM_PHASES, sizeof(double));
  if (!s->t_step || !s->t_phase) {
    snprintf(msg, len, "out of memory");
    return -1;
  }
  if (c->start_step > 0) { /* late in a run: the counters at start_step, the state zero */
    const int nts = L->adampi_num_tensors(s->opt);
    float *zero = calloc((size_t)(hi - lo) + 1, sizeof(float));
    int64_t *steps = malloc((size_t)nts * sizeof(int64_t));
    if (!zero || !steps) {
      free(zero), free(steps);
      snprintf(msg, len, "out of memory");
      return -1;
    }
    for (int i = 0; i < nts; i++) steps[i] = c->start_step;
    adampi_state_in in = {sgd ? NULL : zero, sgd ? NULL : zero, sgd ? zero : NULL, steps, c->start_step, 0};
    adampi_status st = L->adampi_set_state(s->opt, &in);
    free(zero), free(steps);
    if (st != ADAMPI_OK) {
      snprintf(msg, len, "adampi_set_state: %s", L->adampi_last_error(s->opt));
      return -1;
    }
  }
  return 0;
}

/* One timed step of s (collective); round < 0: a warm-up, not recorded. 0, or -1 with msg. */
static int side_step(side *s, const config *c, int round, char *msg, size_t len)
{
  const lib *L = &s->L;
  const int dp = strcmp(c->mode, "sharded") != 0;
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  adampi_status st = dp ? L->adampi_step_ex(s->opt, s->step_w, s->step_g, NULL)
                        : L->adampi_step_sharded_ex(s->opt, s->step_w, s->step_g, NULL);
  double t = max_over_ranks(MPI_Wtime() - t0);
  if (st != ADAMPI_OK) { /* a step's failure is collective: every rank has it */
    snprintf(msg, len, "step: %s", L->adampi_last_error(s->opt));
    return -1;
  }
  adampi_profile p;
  L->adampi_get_profile(s->opt, &p);
  for (int q = 0; q < ADAMPI_NUM_PHASES; q++) {
    double x = max_over_ranks(p.seconds[q]);
    if (round >= 0) s->t_phase[(size_t)q * (size_t)c->rounds + (size_t)round] = x;
  }
  if (round >= 0) s->t_step[round] = t;
  return 0;
}

/* Whether a's and b's copies hold the same bits on every rank (collective); where not, *what says
 * which array first differs on the lowest such rank. */
static int same_bits(const side *a, const side *b, const char **what)
{
  const char *here = NULL;
  if (a->w_bytes != b->w_bytes || memcmp((char *)a->step_w + a->w_off, (char *)b->step_w + b->w_off, a->w_bytes))
    here = "parameters";
  const adampi_state_kind kinds[] = {ADAMPI_STATE_EXP_AVG, ADAMPI_STATE_EXP_AVG_SQ, ADAMPI_STATE_MOMENTUM};
  const char *names[] = {"exp_avg", "exp_avg_sq", "momentum_buffer"};
  int64_t lo, hi;
  a->L.adampi_shard(a->opt, rank_, &lo, &hi);
  const size_t nb = (size_t)(hi - lo) * sizeof(float);
  for (int k = 0; k < 3 && !here; k++) {
    const float *x = a->L.adampi_state_shard(a->opt, kinds[k]), *y = b->L.adampi_state_shard(b->opt, kinds[k]);
    if ((x == NULL) != (y == NULL) || (x && memcmp(x, y, nb))) here = names[k];
  }
  const float *ma = a->L.adampi_master_shard(a->opt), *mb = b->L.adampi_master_shard(b->opt);
  if (!here && ((ma == NULL) != (mb == NULL) || (ma && memcmp(ma, mb, nb)))) here = "master";
  int me = here ? rank_ : size_, first;
  MPI_Allreduce(&me, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (first == size_) return 1;
  static char buf[64];
  if (rank_ == first) snprintf(buf, sizeof buf, "%s, rank %d", here, first);
  MPI_Bcast(buf, sizeof buf, MPI_CHAR, first, MPI_COMM_WORLD);
  *what = buf;
  return 0;
}

/* q-th quantile (0..1) of sorted x[0..n-1], nearest rank. */
static double quantile(const double *x, int n, double q)
{
  int i = (int)(q * (n - 1) + 0.5);
  return x[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static int one_of(const char *x, const char *const *list, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (!strcmp(x, list[i])) return 1;
  return 0;
}

static void usage(void)
{
  fprintf(stderr, "usage: bench_ab --a LIB --b LIB [--set resnet50|gpt2|sweep] [--millions M] [--row-len L]\n"
                  "                [--opt adamp|sgdp|adamw|sgd] [--grads random|orthogonal] [--mode sharded|dp|dp-shm]\n"
                  "                [--dtype fp32|bf16|fp16] [--threads T] [--rounds K] [--start-step T] [--check-bits]\n"
                  "                [--perturb-b]\n");
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  config c = {NULL, NULL, "resnet50", "adamp", "orthogonal", "sharded", "fp32", 16, 1024, 41, 1, 0, 0, 0};
  int bad = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--check-bits")) c.check_bits = 1;
    else if (!strcmp(a, "--perturb-b")) c.perturb_b = 1;
    else if (!v) bad = 1;
    else if (!strcmp(a, "--a")) c.a = v, i++;
    else if (!strcmp(a, "--b")) c.b = v, i++;
    else if (!strcmp(a, "--set")) c.set = v, i++;
    else if (!strcmp(a, "--opt")) c.opt = v, i++;
    else if (!strcmp(a, "--grads")) c.grads = v, i++;
    else if (!strcmp(a, "--mode")) c.mode = v, i++;
    else if (!strcmp(a, "--dtype")) c.dtype = v, i++;
    else if (!strcmp(a, "--millions")) c.millions = atoll(v), i++;
    else if (!strcmp(a, "--row-len")) c.row_len = atoll(v), i++;
    else if (!strcmp(a, "--threads")) c.threads = atoi(v), i++;
    else if (!strcmp(a, "--rounds")) c.rounds = atoi(v), i++;
    else if (!strcmp(a, "--start-step")) c.start_step = atoll(v), i++;
    else bad = 1;
  }
  static const char *sets[] = {"resnet50", "gpt2", "sweep"}, *opts[] = {"adamp", "sgdp", "adamw", "sgd"};
  static const char *grads[] = {"random", "orthogonal"}, *modes[] = {"sharded", "dp", "dp-shm"};
  static const char *dtypes[] = {"fp32", "bf16", "fp16"};
#define ONE_OF(x, list) one_of(x, list, sizeof list / sizeof list[0])
  if (!c.a || !c.b || !ONE_OF(c.set, sets) || !ONE_OF(c.opt, opts) || !ONE_OF(c.grads, grads) ||
      !ONE_OF(c.mode, modes) || !ONE_OF(c.dtype, dtypes) || c.rounds < 2 || c.threads < 0 || c.millions < 1 ||
      c.row_len < 1 || c.start_step < 0 || c.start_step > (1ll << 40))
    bad = 1;
  if (bad) {
    if (rank_ == 0) usage();
    MPI_Finalize();
    return 2;
  }
  bench_tensor ts[512];
  int nt = !strcmp(c.set, "gpt2") ? shapes_gpt2(ts) : !strcmp(c.set, "sweep") ? shapes_sweep(ts, c.millions << 20, c.row_len)
                                                                             : shapes_resnet50(ts);
  side sd[2];
  memset(sd, 0, sizeof sd);
  char msg[512] = "";
  int failed = lib_open(&sd[0].L, c.a, msg, sizeof msg) || lib_open(&sd[1].L, c.b, msg, sizeof msg);
  for (int s = 0; s < 2 && !any_failed(failed); s++) failed = side_setup(&sd[s], &c, ts, nt, s == 1 && c.perturb_b, msg, sizeof msg) != 0;
  if (!any_failed(failed)) {
    MPI_Barrier(MPI_COMM_WORLD); /* every rank's copy of the model written (the step buffers are shared) */
    /* two warm-up steps each, then the rounds: A B, B A, A B, ... */
    for (int k = -2; k < c.rounds && !failed; k++) {
      int first = (k & 1) != 0;
      failed = side_step(&sd[first], &c, k, msg, sizeof msg) || side_step(&sd[!first], &c, k, msg, sizeof msg);
    }
  }
  if (any_failed(failed)) {
    if (failed) fprintf(stderr, "bench_ab (rank %d): %s\n", rank_, msg);
    MPI_Finalize();
    return 1;
  }
  const char *where = NULL;
  int same = same_bits(&sd[0], &sd[1], &where);
  if (rank_ == 0) {
    const int K = c.rounds;
    double *ratio = malloc((size_t)K * sizeof *ratio), med[2][1 + ADAMPI_NUM_PHASES];
    int b_faster = 0;
    for (int k = 0; k < K; k++) ratio[k] = sd[1].t_step[k] / sd[0].t_step[k], b_faster += ratio[k] < 1.0;
    for (int s = 0; s < 2; s++) {
      double *tmp = malloc((size_t)K * sizeof *tmp);
      memcpy(tmp, sd[s].t_step, (size_t)K * sizeof *tmp);
      med[s][0] = median(tmp, K);
      for (int q = 0; q < ADAMPI_NUM_PHASES; q++) {
        memcpy(tmp, sd[s].t_phase + (size_t)q * (size_t)K, (size_t)K * sizeof *tmp);
        med[s][1 + q] = median(tmp, K);
      }
      free(tmp);
    }
    qsort(ratio, (size_t)K, sizeof *ratio, cmp_double);
    printf("# %s %s %s %s %s, %d rank(s) x %d thread(s), %d rounds (A B, B A, ...)", c.set, c.opt, c.grads, c.mode,
           c.dtype, size_, c.threads, K);
    if (c.start_step > 0) printf(", every counter at %lld before the first step", (long long)c.start_step);
    printf("\n");
    printf("# A: %s\n# B: %s\n", c.a, c.b);
    const char *ph[] = {"reduce-scatter", "stats", "exchange", "update", "all-gather"};
    for (int s = 0; s < 2; s++) {
      printf("%s: step %.2f ms; phases", s ? "B" : "A", 1e3 * med[s][0]);
      for (int q = 0; q < ADAMPI_NUM_PHASES; q++)
        if (med[0][1 + q] > 0 || med[1][1 + q] > 0) printf(" %s %.2f", ph[q], 1e3 * med[s][1 + q]);
      printf(" ms (medians)\n");
    }
    printf("B/A step, per round: median %.3f, quartiles %.3f-%.3f, range %.3f-%.3f; B faster in %d of %d rounds\n",
           quantile(ratio, K, 0.5), quantile(ratio, K, 0.25), quantile(ratio, K, 0.75), ratio[0], ratio[K - 1], b_faster,
           K);
    printf("B/A of the medians:");
    for (int q = 0; q < ADAMPI_NUM_PHASES; q++)
      if (med[0][1 + q] > 0) printf(" %s %.3f", ph[q], med[1][1 + q] / med[0][1 + q]);
    printf("\nsame bits after %d steps each: %s%s%s\n", K + 2, same ? "yes" : "no (", same ? "" : where, same ? "" : ")");
    printf("csv,set,opt,grads,mode,dtype,ranks,threads,rounds,a_step_ms,b_step_ms,ratio_median,ratio_q1,ratio_q3,"
           "b_faster,a_stats_ms,b_stats_ms,a_update_ms,b_update_ms,same_bits\n");
    printf("csv,%s,%s,%s,%s,%s,%d,%d,%d,%.4f,%.4f,%.4f,%.4f,%.4f,%d,%.4f,%.4f,%.4f,%.4f,%d\n", c.set, c.opt, c.grads,
           c.mode, c.dtype, size_, c.threads, K, 1e3 * med[0][0], 1e3 * med[1][0], quantile(ratio, K, 0.5),
           quantile(ratio, K, 0.25), quantile(ratio, K, 0.75), b_faster, 1e3 * med[0][1 + ADAMPI_PHASE_STATS],
           1e3 * med[1][1 + ADAMPI_PHASE_STATS], 1e3 * med[0][1 + ADAMPI_PHASE_UPDATE],
           1e3 * med[1][1 + ADAMPI_PHASE_UPDATE], same);
    free(ratio);
  }
  /* Handles freed in the order made; the libraries stay loaded until exit (their OpenMP threads). */
  for (int s = 0; s < 2; s++) sd[s].L.adampi_free(&sd[s].opt);
  MPI_Finalize();
  return !same && c.check_bits ? 3 : 0;
}
