/*
 * adampi-train - data-parallel training of a BatchNorm MLP on Fashion-MNIST with adampi.
 *
 *   mpirun -np N adampi-train [--opt adamp|adamw|sgdp|sgd] [--epochs E] [--batch B] [--lr LR]
 *          [--wd WD] [--momentum M] [--nesterov] [--schedule const|cosine] [--hidden H1,H2]
 *          [--seed S] [--data DIR] [--synthetic] [--csv FILE] [--checkpoint PATH [--keep K]] [--resume PATH]
 *
 * Each rank takes its slice of every global batch and computes forward and backward with
 * BatchNorm statistics synchronized across ranks; the gradient of the global batch is summed in a
 * fixed order (mlp.c), so it has the same bits on 1, 2, 4 or 8 ranks; adampi keeps the sharded
 * optimizer state, updates each rank's shard and all-gathers the parameters. Parameter groups are
 * chosen by tensor name (group_rules); the BatchNorm running statistics are not parameters and
 * are checkpointed as caller arrays (adampi_array). The data order is a function of (seed, epoch),
 * so a run resumed from the checkpoint written at the end of every epoch continues exactly, on any
 * of those rank counts. --keep K keeps the K previous checkpoints as PATH.1 .. PATH.K (adampi_save's
 * keep_last), so a damaged newest one leaves an older one to resume from (launch/ and adampi-ckpt latest).
 * adamw and sgd are AdamP and SGDP with delta = 0 (no projection).
 */
#include "adampi.h"
#include "data.h"
#include "mlp.h"

#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct options {
  const char *opt, *schedule, *data, *csv, *checkpoint, *resume;
  const char *png;
  int epochs, batch, h1, h2, nesterov, synthetic, compare, keep;
  double lr, wd, momentum;
  uint64_t seed;
} options;

static int rank_, size_;

#define CSV_HEADER "optimizer,epoch,step,lr,train_loss,train_acc,test_loss,test_acc,wnorm_fc1,wnorm_fc2,projected,seconds"

static void usage(FILE *f)
{
  fprintf(f, "usage: mpirun -np N adampi-train [--opt adamp|adamw|sgdp|sgd] [--epochs E] [--batch B] [--lr LR]\n"
             "       [--wd WD] [--momentum M] [--nesterov] [--schedule const|cosine] [--hidden H1,H2] [--seed S]\n"
             "       [--data DIR] [--synthetic] [--csv FILE] [--checkpoint PATH [--keep K]] [--resume PATH]\n"
             "       [--compare [--png FILE]]   adamw vs adamp and sgd vs sgdp from the same start, one plot\n");
}

static int parse(int argc, char **argv, options *o)
{
  *o = (options){"adamp", "const", DATA_DEFAULT_DIR, NULL, NULL, NULL, "compare.png", 10, 128, 256, 256, 0, 0, 0, 0, -1, -1, 0.9, 1};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--nesterov")) o->nesterov = 1;
    else if (!strcmp(a, "--synthetic")) o->synthetic = 1;
    else if (!strcmp(a, "--compare")) o->compare = 1;
    else if (!v) return -1;
    else if (!strcmp(a, "--opt")) o->opt = v, i++;
    else if (!strcmp(a, "--schedule")) o->schedule = v, i++;
    else if (!strcmp(a, "--data")) o->data = v, i++;
    else if (!strcmp(a, "--csv")) o->csv = v, i++;
    else if (!strcmp(a, "--png")) o->png = v, i++;
    else if (!strcmp(a, "--checkpoint")) o->checkpoint = v, i++;
    else if (!strcmp(a, "--resume")) o->resume = v, i++;
    else if (!strcmp(a, "--epochs")) o->epochs = atoi(v), i++;
    else if (!strcmp(a, "--keep")) o->keep = atoi(v), i++;
    else if (!strcmp(a, "--batch")) o->batch = atoi(v), i++;
    else if (!strcmp(a, "--lr")) o->lr = atof(v), i++;
    else if (!strcmp(a, "--wd")) o->wd = atof(v), i++;
    else if (!strcmp(a, "--momentum")) o->momentum = atof(v), i++;
    else if (!strcmp(a, "--seed")) o->seed = strtoull(v, NULL, 10), i++;
    else if (!strcmp(a, "--hidden")) {
      if (sscanf(v, "%d,%d", &o->h1, &o->h2) != 2) return -1;
      i++;
    } else return -1;
  }
  int sgd = !strcmp(o->opt, "sgdp") || !strcmp(o->opt, "sgd");
  if (strcmp(o->opt, "adamp") && strcmp(o->opt, "adamw") && !sgd) return -1;
  if (strcmp(o->schedule, "const") && strcmp(o->schedule, "cosine")) return -1;
  if (o->compare && (o->checkpoint || o->resume)) return -1;
  if (o->h1 > 1024 || o->h2 > 1024) return -1;
  if (o->keep < 0 || o->keep > 99) return -1;
  return o->epochs > 0 && o->batch > 0 && o->h1 > 0 && o->h2 > 0 ? 0 : -1;
}

/* A permutation of 0..n-1 that depends only on (seed, epoch): the data order of an epoch. */
static void permutation(int *p, int n, uint64_t seed, int epoch)
{
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + (uint64_t)epoch * 0xbf58476d1ce4e5b9ull + 1;
  for (int i = 0; i < n; i++) p[i] = i;
  for (int i = n - 1; i > 0; i--) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    int j = (int)(s % (uint64_t)(i + 1));
    int t = p[i];
    p[i] = p[j], p[j] = t;
  }
}

static double norm(const float *x, size_t n)
{
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
  return sqrt(s);
}

/* 1 on every rank if bad is set on any: a local failure (a malloc, a file) must be known to all
 * before the next collective, or the ranks that did not fail would wait in it forever. */
static int agree(int bad)
{
  int any = 0;
  MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
  return any;
}

static int fail(const char *msg)
{
  if (rank_ == 0) fprintf(stderr, "adampi-train: %s\n", msg);
  MPI_Finalize();
  return 1;
}

/* Print a failure (rank 0) and return 1. Only for failures every rank has alike: the library's
 * (it agrees), or local ones after agree(). */
static int report(const char *msg)
{
  if (rank_ == 0) fprintf(stderr, "adampi-train: %s\n", msg);
  return 1;
}

/* ---- the optimizer: parameter groups chosen by tensor name ------------------------------------ */

enum { GROUP_DECAY, GROUP_NO_DECAY, NUM_GROUPS };

/* fnmatch patterns, first match wins: decoupled weight decay on the Linear layers' weights only,
 * none on BatchNorm's scale and shift nor on biases (the usual AdamW setting). A new layer gets
 * its group from its name, not from its position. */
static const struct {
  const char *pattern;
  int group;
} group_rules[] = {
  {"fc*.weight", GROUP_DECAY},
  {"*", GROUP_NO_DECAY},
};

static int group_of(const char *name)
{
  for (size_t k = 0; k < sizeof group_rules / sizeof group_rules[0]; k++)
    if (fnmatch(group_rules[k].pattern, name, 0) == 0) return group_rules[k].group;
  return GROUP_NO_DECAY;
}

/* One training run: the options, the optimizer, the model's buffers and this rank's batch. */
typedef struct run {
  options o; /* lr and wd resolved */
  const dataset *train, *test;
  adampi *opt;
  int64_t numel, lo, hi;         /* the flat buffer's length, this rank's shard [lo, hi) */
  float *params, *grads;         /* numel floats each; params the same on every rank */
  float *stats;                  /* BatchNorm running statistics, the same on every rank */
  adampi_array arrays[MLP_BUFFERS]; /* the running statistics, as the checkpoint names them */
  mlp m;
  mlp_work *work;
  float *xb;   /* this rank's samples of a batch */
  uint8_t *yb; /* and their labels */
  int *perm;   /* the epoch's data order */
  int local_b, steps_per_epoch, start_epoch;
  FILE *csv;
  int own_csv;
  double t0;
} run;

static void run_free(run *r)
{
  if (r->own_csv && r->csv) fclose(r->csv);
  mlp_work_free(&r->work);
  free(r->params), free(r->grads), free(r->stats), free(r->xb), free(r->yb), free(r->perm);
  adampi_free(&r->opt);
}

/* Groups, tensors (in mlp_tensors' order, each in the group its name selects), commit.
 * Collective. 0 or 1 (reported). */
static int make_optimizer(run *r)
{
  const options *o = &r->o;
  int sgd = !strcmp(o->opt, "sgdp") || !strcmp(o->opt, "sgd");
  int plain = !strcmp(o->opt, "adamw") || !strcmp(o->opt, "sgd"); /* no projection */
  char err[1024] = "";
  adampi_config cfg = adampi_config_defaults(sgd ? ADAMPI_SGDP : ADAMPI_ADAMP);
  if (adampi_create(MPI_COMM_WORLD, &cfg, &r->opt, err, sizeof err) != ADAMPI_OK) return report(err);
  adampi_hparams hp = sgd ? adampi_sgdp_defaults(o->lr) : adampi_adamp_defaults();
  hp.lr = o->lr;
  hp.momentum = sgd ? o->momentum : 0.0;
  hp.nesterov = o->nesterov;
  hp.delta = plain ? 0.0 : 0.1;
  adampi_hparams groups[NUM_GROUPS] = {hp, hp};
  groups[GROUP_DECAY].weight_decay = o->wd;
  adampi_status st = ADAMPI_OK;
  for (int g = 0; g < NUM_GROUPS && st == ADAMPI_OK; g++) st = adampi_add_group(r->opt, &groups[g], NULL);
  mlp_tensor t[MLP_TENSORS];
  mlp_tensors(r->train->dim, o->h1, o->h2, 10, t);
  for (int i = 0; i < MLP_TENSORS && st == ADAMPI_OK; i++)
    st = adampi_add_tensor(r->opt, t[i].name, t[i].ndim, t[i].shape, group_of(t[i].name), NULL);
  if (agree(st != ADAMPI_OK)) return report(st != ADAMPI_OK ? adampi_last_error(r->opt) : "another rank could not register");
  if (adampi_commit(r->opt) != ADAMPI_OK) return report(adampi_last_error(r->opt));
  r->numel = adampi_numel(r->opt);
  adampi_shard(r->opt, rank_, &r->lo, &r->hi);
  return 0;
}

/* Every buffer of the run, then the model bound to them and initialised from the seed (the same
 * on every rank). Collective: an allocation failure anywhere fails every rank. 0 or 1. */
static int make_model(run *r)
{
  const options *o = &r->o;
  int in = r->train->dim;
  r->params = calloc((size_t)r->numel, sizeof(float));
  r->grads = calloc((size_t)r->numel, sizeof(float));
  r->stats = calloc((size_t)mlp_num_stats(o->h1, o->h2), sizeof(float));
  r->xb = malloc((size_t)r->local_b * in * sizeof(float));
  r->yb = malloc((size_t)r->local_b);
  r->perm = malloc((size_t)r->train->n * sizeof(int));
  int bad = !r->params || !r->grads || !r->stats || !r->xb || !r->yb || !r->perm;
  if (!bad) {
    mlp_bind(&r->m, in, o->h1, o->h2, 10, r->params, r->stats);
    r->work = mlp_work_new(&r->m, r->local_b > 1000 ? r->local_b : 1000); /* 1000: the test batches */
    bad = r->work == NULL;
  }
  if (agree(bad)) return report(bad ? "out of memory" : "out of memory on another rank");
  mlp_init(&r->m, o->seed);
  mlp_buffer b[MLP_BUFFERS];
  mlp_buffers(o->h1, o->h2, b);
  float *at = r->stats;
  for (int k = 0; k < MLP_BUFFERS; k++) r->arrays[k] = (adampi_array){b[k].name, at, b[k].len}, at += b[k].len;
  return 0;
}

/* Parameters, optimizer state and running statistics from o.resume; the epoch to start from.
 * Collective. 0 or 1. */
static int resume(run *r)
{
  adampi_user user = {0};
  adampi_load_options lo = adampi_load_defaults();
  lo.params = ADAMPI_PARAMS_FULL;
  lo.user = &user;
  lo.arrays = r->arrays;
  lo.num_arrays = MLP_BUFFERS;
  int64_t epoch = 0, seed = 0;
  if (adampi_load(r->opt, r->o.resume, r->params, &lo) != ADAMPI_OK) return report(adampi_last_error(r->opt));
  if (adampi_user_get(&user, "epoch", &epoch) || adampi_user_get(&user, "seed", &seed))
    return report("the checkpoint was not written by adampi-train");
  if ((uint64_t)seed != r->o.seed) return report("the checkpoint was written with another --seed");
  r->start_epoch = (int)epoch;
  if (rank_ == 0) printf("adampi-train: resumed from %s after epoch %d\n", r->o.resume, r->start_epoch);
  return 0;
}

/* Everything the run checkpoints at the end of an epoch. Collective. 0 or 1. */
static int save(run *r, int epochs_done)
{
  adampi_user user = {0};
  adampi_user_set(&user, "epoch", epochs_done);
  adampi_user_set(&user, "seed", (int64_t)r->o.seed);
  adampi_save_options so = adampi_save_defaults();
  so.params = ADAMPI_PARAMS_FULL;
  so.user = &user;
  so.keep_last = r->o.keep;
  so.arrays = r->arrays;
  so.num_arrays = MLP_BUFFERS;
  if (adampi_save(r->opt, r->o.checkpoint, r->params, &so) != ADAMPI_OK) return report(adampi_last_error(r->opt));
  return 0;
}

/* The CSV (rank 0): the shared one of --compare, or o.csv, appended to on a resume. Collective. */
static int open_csv(run *r, FILE *shared)
{
  r->csv = shared;
  int bad = 0;
  if (r->o.csv && rank_ == 0 && !shared) {
    r->csv = fopen(r->o.csv, r->start_epoch ? "a" : "w");
    r->own_csv = r->csv != NULL;
    bad = r->csv == NULL;
    if (r->csv && !r->start_epoch) fprintf(r->csv, "%s\n", CSV_HEADER);
  }
  if (agree(bad)) return report("cannot write the CSV file");
  return 0;
}

static double wnorm1(const run *r) { return norm(r->m.w1, (size_t)r->o.h1 * r->train->dim); }
static double wnorm2(const run *r) { return norm(r->m.w2, (size_t)r->o.h2 * r->o.h1); }

/* The learning rate at a global step. */
static double lr_at(const options *o, int step, int total)
{
  return !strcmp(o->schedule, "cosine") ? o->lr * 0.5 * (1.0 + cos(M_PI * step / total)) : o->lr;
}

/* Tensors that a projection changed at the last step (AdamP/SGDP's scale-invariant ones). */
static int projected_count(const run *r)
{
  int n = 0;
  for (int i = 0; i < adampi_num_tensors(r->opt); i++) {
    adampi_diag d;
    adampi_diag_get(r->opt, i, &d);
    n += d.updated && d.view != ADAMPI_VIEW_NONE;
  }
  return n;
}

/* One step of the global batch s of the epoch: this rank's samples, forward and backward (the
 * gradient of the global batch on every rank, mlp.c), the optimizer on this rank's shard, the
 * updated parameters shared. Collective. sums += this rank's loss, correct, samples. 0 or 1. */
static int train_step(run *r, int s, double lr, double sums[3])
{
  const dataset *d = r->train;
  for (int k = 0; k < r->local_b; k++) {
    int idx = r->perm[s * r->o.batch + rank_ * r->local_b + k];
    memcpy(r->xb + (size_t)k * d->dim, d->x + (size_t)idx * d->dim, (size_t)d->dim * sizeof(float));
    r->yb[k] = d->y[idx];
  }
  for (int g = 0; g < NUM_GROUPS; g++) adampi_set_lr(r->opt, g, lr);
  double loss;
  int correct;
  int bad = mlp_train_batch(&r->m, r->work, r->xb, r->yb, r->local_b, r->o.batch, r->grads, MPI_COMM_WORLD, &loss, &correct);
  if (bad == -2) return report("the rank count must be a power of two that divides 8, and the batch a multiple of 8");
  if (bad) return report("an MPI call failed in the forward/backward pass");
  /* grads already hold the global mean, reduced in a fixed order: the sharded step, not
   * adampi_step, whose own reduction would change the bits with the rank count */
  if (adampi_step_sharded(r->opt, r->params + r->lo, r->grads + r->lo, NULL) != ADAMPI_OK ||
      adampi_allgather(r->opt, r->params) != ADAMPI_OK)
    return report(adampi_last_error(r->opt));
  sums[0] += loss, sums[1] += correct, sums[2] += r->local_b;
  return 0;
}

/* Loss sum and correct count of the test set, every rank its slice, summed over ranks. */
static void evaluate(run *r, double totals[2])
{
  const dataset *t = r->test;
  double te[2] = {0, 0};
  int per = (t->n + size_ - 1) / size_, lo = rank_ * per, hi = lo + per < t->n ? lo + per : t->n;
  for (int k = lo; k < hi; k += 1000) {
    int nb = hi - k < 1000 ? hi - k : 1000;
    double l;
    te[1] += mlp_eval(&r->m, r->work, t->x + (size_t)k * t->dim, t->y + k, nb, &l);
    te[0] += l;
  }
  MPI_Allreduce(te, totals, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

/* One epoch: the steps with a progress line every 100, the test set, the epoch's line and CSV
 * row, the checkpoint. Collective. 0 or 1. */
static int train_epoch(run *r, int epoch)
{
  const options *o = &r->o;
  int total = r->steps_per_epoch * o->epochs;
  double sums[3] = {0, 0, 0}, g[3], tg[2], lr = o->lr; /* loss, correct, samples of this epoch on this rank */
  permutation(r->perm, r->train->n, o->seed, epoch);
  for (int s = 0; s < r->steps_per_epoch; s++) {
    int step = epoch * r->steps_per_epoch + s;
    lr = lr_at(o, step, total);
    if (train_step(r, s, lr, sums)) return 1;
    if ((s + 1) % 100 != 0 && s + 1 != r->steps_per_epoch) continue;
    MPI_Allreduce(sums, g, 3, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double el = MPI_Wtime() - r->t0;
    if (rank_ == 0)
      printf("epoch %d/%d step %5d/%d  loss %.4f  acc %.2f%%  %.0f samples/s  |w| fc1 %.2f fc2 %.2f  projected %d/3\n",
             epoch + 1, o->epochs, s + 1, r->steps_per_epoch, g[0] / g[2], 100.0 * g[1] / g[2],
             (double)(step + 1 - r->start_epoch * r->steps_per_epoch) * o->batch / el, wnorm1(r), wnorm2(r),
             projected_count(r));
    fflush(stdout);
  }
  evaluate(r, tg);
  MPI_Allreduce(sums, g, 3, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  double el = MPI_Wtime() - r->t0;
  int n_test = r->test->n;
  if (rank_ == 0) {
    printf("epoch %d/%d done: train loss %.4f acc %.2f%%, test loss %.4f acc %.2f%%, %.1f s\n", epoch + 1, o->epochs,
           g[0] / g[2], 100.0 * g[1] / g[2], tg[0] / n_test, 100.0 * tg[1] / n_test, el);
    if (r->csv) {
      fprintf(r->csv, "%s,%d,%d,%g,%.6f,%.4f,%.6f,%.4f,%.4f,%.4f,%d,%.2f\n", o->opt, epoch + 1,
              (epoch + 1) * r->steps_per_epoch, lr, g[0] / g[2], g[1] / g[2], tg[0] / n_test, tg[1] / n_test, wnorm1(r),
              wnorm2(r), projected_count(r), el);
      fflush(r->csv);
    }
  }
  return o->checkpoint ? save(r, epoch + 1) : 0;
}

/* One training run with options oo (oo->opt decides the optimizer). Collective. Returns 0 or 1,
 * the same on every rank. */
static int train_run(const options *oo, const dataset *train, const dataset *test, FILE *csv_shared)
{
  run r = {.o = *oo, .train = train, .test = test};
  options *o = &r.o;
  int sgd = !strcmp(o->opt, "sgdp") || !strcmp(o->opt, "sgd");
  if (o->lr < 0) o->lr = sgd ? 0.1 : 1e-3;
  if (o->wd < 0) o->wd = sgd ? 5e-4 : 1e-2;
  r.local_b = o->batch / size_;
  r.steps_per_epoch = train->n / o->batch;
  int rc = make_optimizer(&r) || make_model(&r) || (o->resume && resume(&r)) || open_csv(&r, csv_shared);
  if (rc == 0 && rank_ == 0)
    printf("adampi-train: %s, %d ranks, batch %d (%d per rank), %d epochs, lr %g (%s), weight decay %g, hidden %d,%d, %lld "
           "parameters\n",
           o->opt, size_, o->batch, r.local_b, o->epochs, o->lr, o->schedule, o->wd, o->h1, o->h2, (long long)r.numel);
  if (rc == 0 && r.csv && r.start_epoch == 0) /* the starting point, so that growth can be read off the log */
    fprintf(r.csv, "%s,0,0,%g,,,,,%.4f,%.4f,0,0\n", o->opt, o->lr, wnorm1(&r), wnorm2(&r));
  r.t0 = MPI_Wtime();
  for (int epoch = r.start_epoch; rc == 0 && epoch < o->epochs; epoch++) rc = train_epoch(&r, epoch);
  if (rc == 0 && rank_ == 0) printf("adampi-train: %s done in %.1f s\n", o->opt, MPI_Wtime() - r.t0);
  run_free(&r);
  return rc;
}

/* The comparison plot with gnuplot (Debian's gnuplot-nox): weight norm of the scale-invariant
 * layers and test accuracy against steps, one line per optimizer. Rank 0 only. */
static int plot(const char *csv, const char *png, int synthetic)
{
  char script[4096];
  snprintf(script, sizeof script, "%s.gp", png);
  FILE *f = fopen(script, "w");
  if (!f) return report("cannot write the gnuplot script");
  fprintf(f,
          "set datafile separator ','\nset terminal pngcairo size 1200,500 font ',10'\nset output '%s'\n"
          "set multiplot layout 1,2 title '%s: weight norm and accuracy, same initialisation'\n"
          "set key left top\nset xlabel 'step'\nset ylabel '||W|| of fc1 and fc2 (scale-invariant)'\n"
          "plot for [o in 'adamw adamp sgd sgdp'] '%s' using 3:(strcol(1) eq o ? sqrt($9**2+$10**2) : NaN) "
          "with linespoints title o\n"
          "set ylabel 'test accuracy'\nset key right bottom\n"
          "plot for [o in 'adamw adamp sgd sgdp'] '%s' using 3:(strcol(1) eq o ? $8 : NaN) with linespoints title o\n"
          "unset multiplot\n",
          png, synthetic ? "SYNTHETIC data" : "Fashion-MNIST", csv, csv);
  fclose(f);
  char cmd[8400];
  snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>&1", script);
  if (system(cmd) != 0) {
    printf("adampi-train: gnuplot failed or is not installed (apt-get install gnuplot-nox); the data are in %s\n", csv);
    return 0;
  }
  printf("adampi-train: plot written to %s (data in %s)\n", png, csv);
  return 0;
}

/* The data sets, on every rank (a few hundred MB at most); *synthetic says which. Collective: a
 * rank that cannot read or hold them fails every rank. 0 or 1 (reported). */
static int load_data(const options *o, dataset *train, dataset *test, int *synthetic)
{
  char err[1024] = "out of memory", probe[1200];
  *synthetic = o->synthetic;
  snprintf(probe, sizeof probe, "%s/train-images-idx3-ubyte.gz", o->data);
  FILE *pf = *synthetic ? NULL : fopen(probe, "rb");
  if (pf) fclose(pf);
  /* The default place is empty (on some rank: all must take the same branch): say how to get the
   * data and still show something. */
  if (agree(!*synthetic && !pf && !strcmp(o->data, DATA_DEFAULT_DIR))) {
    if (rank_ == 0 && !*synthetic)
      printf("adampi-train: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); "
             "falling back to a SYNTHETIC task\n");
    *synthetic = 1;
  }
  int bad;
  if (*synthetic) bad = data_synthetic(12000, 7, train) || data_synthetic(2000, 8, test);
  else /* a data set that is there but unreadable, or an explicit --data: an error */
    bad = data_load(o->data, "train", train, err, sizeof err) != 0 || data_load(o->data, "t10k", test, err, sizeof err) != 0;
  if (agree(bad)) return report(bad ? err : "another rank could not read the data");
  if (*synthetic && rank_ == 0) printf("adampi-train: SYNTHETIC data (not Fashion-MNIST): 12000 train, 2000 test samples\n");
  return 0;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  options o;
  if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
    if (rank_ == 0) usage(stdout);
    MPI_Finalize();
    return 0;
  }
  if (parse(argc, argv, &o) != 0) {
    if (rank_ == 0) usage(stderr);
    MPI_Finalize();
    return 2;
  }
  if (size_ > 8 || (size_ & (size_ - 1)) || o.batch % 8 != 0)
    return fail("run on 1, 2, 4 or 8 ranks with a batch that is a multiple of 8: the global batch is summed in 8 fixed "
                "slices, which is what makes results independent of the rank count");

  dataset train = {0}, test = {0};
  int synthetic = 0;
  if (load_data(&o, &train, &test, &synthetic)) {
    data_free(&train), data_free(&test);
    MPI_Finalize();
    return 1;
  }

  int rc = 0;
  if (!o.compare) {
    rc = train_run(&o, &train, &test, NULL);
  } else {
    /* the same initialisation (seed) and data order for all four; one CSV, one plot */
    const char *csv_path = o.csv ? o.csv : "compare.csv";
    FILE *csv = rank_ == 0 ? fopen(csv_path, "w") : NULL;
    if (rank_ == 0 && !csv) rc = report("cannot write the CSV file");
    if (csv) fprintf(csv, "%s\n", CSV_HEADER);
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    const char *opts[4] = {"adamw", "adamp", "sgd", "sgdp"};
    for (int k = 0; k < 4 && rc == 0; k++) {
      options one = o;
      one.opt = opts[k];
      one.csv = csv_path;
      rc = train_run(&one, &train, &test, csv);
    }
    if (csv) fclose(csv);
    if (rc == 0 && rank_ == 0) rc = plot(csv_path, o.png, synthetic);
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
  }
  data_free(&train), data_free(&test);
  MPI_Finalize();
  return rc;
}
