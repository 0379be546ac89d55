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
 * optimizer state and updates each rank's shard. The data order is a function of (seed, epoch),
 * so a run resumed from the checkpoint written at the end of every epoch continues exactly, on any
 * of those rank counts. --keep K keeps the K previous checkpoints as PATH.1 .. PATH.K (adampi_save's
 * keep_last), so a damaged newest one leaves an older one to resume from (launch/ and adampi-ckpt latest).
 * adamw and sgd are AdamP and SGDP with delta = 0 (no projection).
 */
#include "adampi.h"
#include "data.h"
#include "mlp.h"

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

static int fail(const char *msg)
{
  if (rank_ == 0) fprintf(stderr, "adampi-train: %s\n", msg);
  MPI_Finalize();
  return 1;
}

/* Print a failure (rank 0) and return 1; every rank fails alike (the library agrees). */
static int report(const char *msg)
{
  if (rank_ == 0) fprintf(stderr, "adampi-train: %s\n", msg);
  return 1;
}

/* One training run with options o (o->opt decides the optimizer). Collective. Returns 0 or 1. */
static int train_run(const options *oo, const dataset *trainp, const dataset *testp, FILE *csv_shared)
{
  options o = *oo;
  const dataset train = *trainp, test = *testp;
  char err[1024] = "";
  int local_b = o.batch / size_;
  int sgd = !strcmp(o.opt, "sgdp") || !strcmp(o.opt, "sgd");
  if (o.lr < 0) o.lr = sgd ? 0.1 : 1e-3;
  if (o.wd < 0) o.wd = sgd ? 5e-4 : 1e-2;
  /* the optimizer: groups 0 (weights, decay), 1 (BatchNorm, biases), 2 (running statistics) */
  int plain = !strcmp(o.opt, "adamw") || !strcmp(o.opt, "sgd");
  adampi_config cfg = adampi_config_defaults(sgd ? ADAMPI_SGDP : ADAMPI_ADAMP);
  adampi *opt = NULL;
  if (adampi_create(MPI_COMM_WORLD, &cfg, &opt, err, sizeof err) != ADAMPI_OK) return report(err);
  adampi_hparams hp = sgd ? adampi_sgdp_defaults(o.lr) : adampi_adamp_defaults();
  hp.lr = o.lr;
  hp.momentum = sgd ? o.momentum : 0.0;
  hp.nesterov = o.nesterov;
  hp.delta = plain ? 0.0 : 0.1;
  adampi_hparams hd = hp, hn = hp, hb = hp;
  hd.weight_decay = o.wd;
  hb.lr = 0.0;
  if (adampi_add_group(opt, &hd, NULL) || adampi_add_group(opt, &hn, NULL) || adampi_add_group(opt, &hb, NULL))
    return report(adampi_last_error(opt));
  mlp_tensor t[MLP_TENSORS];
  mlp_tensors(train.dim, o.h1, o.h2, 10, t);
  for (int i = 0; i < MLP_TENSORS; i++)
    if (adampi_add_tensor(opt, t[i].name, t[i].ndim, t[i].shape, t[i].group, NULL)) return report(adampi_last_error(opt));
  if (adampi_commit(opt) != ADAMPI_OK) return report(adampi_last_error(opt));
  int64_t N = adampi_numel(opt);
  float *params = calloc((size_t)N, sizeof(float)), *grads = calloc((size_t)N, sizeof(float));
  float *xb = malloc((size_t)local_b * train.dim * sizeof(float));
  uint8_t *yb = malloc((size_t)local_b);
  int *perm = malloc((size_t)train.n * sizeof(int));
  int64_t lo = 0, hi = 0;
  int counts[64], displs[64];
  adampi_shard(opt, rank_, &lo, &hi);
  for (int r = 0; r < size_ && r < 64; r++) {
    int64_t a, b;
    adampi_shard(opt, r, &a, &b);
    counts[r] = (int)(b - a), displs[r] = (int)a;
  }
  mlp m;
  mlp_bind(&m, train.dim, o.h1, o.h2, 10, params);
  mlp_work *work = mlp_work_new(&m, local_b > 1000 ? local_b : 1000);
  if (!params || !grads || !xb || !yb || !perm || !work) return report("out of memory");
  mlp_init(&m, o.seed);
  unsigned char has[MLP_TENSORS] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0};

  int start = 0;
  if (o.resume) {
    adampi_user user = {0};
    adampi_load_options lopt = adampi_load_defaults();
    lopt.params = ADAMPI_PARAMS_FULL;
    lopt.user = &user;
    int64_t e = 0, seed = 0;
    if (adampi_load(opt, o.resume, params, &lopt) != ADAMPI_OK) return report(adampi_last_error(opt));
    if (adampi_user_get(&user, "epoch", &e) || adampi_user_get(&user, "seed", &seed)) return report("the checkpoint was not written by adampi-train");
    if ((uint64_t)seed != o.seed) return report("the checkpoint was written with another --seed");
    start = (int)e;
    if (rank_ == 0) printf("adampi-train: resumed from %s after epoch %d\n", o.resume, start);
  }
  FILE *csv = csv_shared;
  int no_csv = 0;
  if (o.csv && rank_ == 0 && !csv) {
    csv = fopen(o.csv, start ? "a" : "w");
    no_csv = csv == NULL;
    if (csv && !start) fprintf(csv, "optimizer,epoch,step,lr,train_loss,train_acc,test_loss,test_acc,wnorm_fc1,wnorm_fc2,projected,seconds\n");
  }
  MPI_Bcast(&no_csv, 1, MPI_INT, 0, MPI_COMM_WORLD); /* every rank stops alike */
  if (no_csv) return report("cannot write the CSV file");
  if (rank_ == 0)
    printf("adampi-train: %s, %d ranks, batch %d (%d per rank), %d epochs, lr %g (%s), weight decay %g, hidden %d,%d, %lld parameters\n",
           o.opt, size_, o.batch, local_b, o.epochs, o.lr, o.schedule, o.wd, o.h1, o.h2, (long long)N);
  int steps_per_epoch = train.n / o.batch, total = steps_per_epoch * o.epochs;
  if (csv && start == 0) /* the starting point, so that growth can be read off the log */
    fprintf(csv, "%s,0,0,%g,,,,,%.4f,%.4f,0,0\n", o.opt, o.lr, norm(m.w1, (size_t)o.h1 * train.dim),
            norm(m.w2, (size_t)o.h2 * o.h1));
  double t0 = MPI_Wtime();
  for (int epoch = start; epoch < o.epochs; epoch++) {
    permutation(perm, train.n, o.seed, epoch);
    double sums[3] = {0, 0, 0}; /* loss, correct, samples of this epoch on this rank */
    int projected = 0;
    double lr = o.lr;
    for (int s = 0; s < steps_per_epoch; s++) {
      int step = epoch * steps_per_epoch + s;
      lr = !strcmp(o.schedule, "cosine") ? o.lr * 0.5 * (1.0 + cos(M_PI * step / total)) : o.lr;
      adampi_set_lr(opt, 0, lr);
      adampi_set_lr(opt, 1, lr);
      for (int k = 0; k < local_b; k++) {
        int idx = perm[s * o.batch + rank_ * local_b + k];
        memcpy(xb + (size_t)k * train.dim, train.x + (size_t)idx * train.dim, (size_t)train.dim * sizeof(float));
        yb[k] = train.y[idx];
      }
      double loss;
      int correct;
      int bad = mlp_train_batch(&m, work, xb, yb, local_b, o.batch, grads, MPI_COMM_WORLD, &loss, &correct);
      if (bad == -2) return report("the rank count must be a power of two that divides 8, and the batch a multiple of 8");
      if (bad) return report("an MPI call failed in the forward/backward pass");
      /* grads already hold the global mean (reduced in a fixed order, see mlp.c): adampi updates
       * each rank's shard, then the ranks share the updated parameters */
      if (adampi_step_sharded(opt, params + lo, grads + lo, has) != ADAMPI_OK) return report(adampi_last_error(opt));
      if (MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, params, counts, displs, MPI_FLOAT, MPI_COMM_WORLD) != MPI_SUCCESS)
        return report("the parameter all-gather failed");
      sums[0] += loss, sums[1] += correct, sums[2] += local_b;
      projected = 0;
      for (int i = 0; i < MLP_TENSORS; i++) {
        adampi_diag d;
        adampi_diag_get(opt, i, &d);
        projected += d.updated && d.view != ADAMPI_VIEW_NONE;
      }
      if ((s + 1) % 100 == 0 || s + 1 == steps_per_epoch) {
        double g[3];
        MPI_Allreduce(sums, g, 3, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        double el = MPI_Wtime() - t0;
        if (rank_ == 0)
          printf("epoch %d/%d step %5d/%d  loss %.4f  acc %.2f%%  %.0f samples/s  |w| fc1 %.2f fc2 %.2f  projected %d/3\n",
                 epoch + 1, o.epochs, s + 1, steps_per_epoch, g[0] / g[2], 100.0 * g[1] / g[2],
                 (double)(step + 1 - start * steps_per_epoch) * o.batch / el, norm(m.w1, (size_t)o.h1 * train.dim),
                 norm(m.w2, (size_t)o.h2 * o.h1), projected);
        fflush(stdout);
      }
    }
    /* test accuracy: every rank evaluates its slice of the test set */
    double te[2] = {0, 0};
    int per = (test.n + size_ - 1) / size_, t_lo = rank_ * per, t_hi = t_lo + per < test.n ? t_lo + per : test.n;
    for (int k = t_lo; k < t_hi; k += 1000) {
      int nb = t_hi - k < 1000 ? t_hi - k : 1000;
      double l;
      te[1] += mlp_eval(&m, work, test.x + (size_t)k * test.dim, test.y + k, nb, &l);
      te[0] += l;
    }
    double g[3], tg[2];
    MPI_Allreduce(sums, g, 3, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(te, tg, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double el = MPI_Wtime() - t0;
    if (rank_ == 0) {
      printf("epoch %d/%d done: train loss %.4f acc %.2f%%, test loss %.4f acc %.2f%%, %.1f s\n", epoch + 1, o.epochs,
             g[0] / g[2], 100.0 * g[1] / g[2], tg[0] / test.n, 100.0 * tg[1] / test.n, el);
      if (csv)
        fprintf(csv, "%s,%d,%d,%g,%.6f,%.4f,%.6f,%.4f,%.4f,%.4f,%d,%.2f\n", o.opt, epoch + 1, (epoch + 1) * steps_per_epoch,
                lr, g[0] / g[2], g[1] / g[2], tg[0] / test.n, tg[1] / test.n, norm(m.w1, (size_t)o.h1 * train.dim),
                norm(m.w2, (size_t)o.h2 * o.h1), projected, el);
      if (csv) fflush(csv);
    }
    if (o.checkpoint) {
      adampi_user user = {0};
      adampi_user_set(&user, "epoch", epoch + 1);
      adampi_user_set(&user, "seed", (int64_t)o.seed);
      adampi_save_options so = adampi_save_defaults();
      so.params = ADAMPI_PARAMS_FULL;
      so.user = &user;
      so.keep_last = o.keep;
      if (adampi_save(opt, o.checkpoint, params, &so) != ADAMPI_OK) return report(adampi_last_error(opt));
    }
  }
  if (rank_ == 0) printf("adampi-train: %s done in %.1f s\n", o.opt, MPI_Wtime() - t0);
  if (csv && csv != csv_shared) fclose(csv);
  mlp_work_free(&work);
  free(params), free(grads), free(xb), free(yb), free(perm);
  adampi_free(&opt);
  return 0;
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

  /* data (every rank reads it: a few hundred MB at most) */
  dataset train, test;
  char err[1024] = "";
  int synthetic = o.synthetic;
  char probe[1200];
  snprintf(probe, sizeof probe, "%s/train-images-idx3-ubyte.gz", o.data);
  FILE *pf = synthetic ? NULL : fopen(probe, "rb");
  if (pf) fclose(pf);
  if (!synthetic && !pf && !strcmp(o.data, DATA_DEFAULT_DIR)) {
    /* The default place is empty: say how to get the data and still show something. */
    if (rank_ == 0)
      printf("adampi-train: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); "
             "falling back to a SYNTHETIC task\n");
    synthetic = 1;
  } else if (!synthetic && (data_load(o.data, "train", &train, err, sizeof err) != 0 ||
                            data_load(o.data, "t10k", &test, err, sizeof err) != 0)) {
    return fail(err); /* a data set that is there but unreadable, or an explicit --data: an error */
  }
  if (synthetic) {
    if (data_synthetic(12000, 7, &train) || data_synthetic(2000, 8, &test)) return fail("out of memory");
    if (rank_ == 0) printf("adampi-train: SYNTHETIC data (not Fashion-MNIST): 12000 train, 2000 test samples\n");
  }

  int rc = 0;
  if (!o.compare) {
    rc = train_run(&o, &train, &test, NULL);
  } else {
    /* the same initialisation (seed) and data order for all four; one CSV, one plot */
    const char *csv_path = o.csv ? o.csv : "compare.csv";
    FILE *csv = rank_ == 0 ? fopen(csv_path, "w") : NULL;
    if (rank_ == 0 && !csv) rc = report("cannot write the CSV file");
    if (csv) fprintf(csv, "optimizer,epoch,step,lr,train_loss,train_acc,test_loss,test_acc,wnorm_fc1,wnorm_fc2,projected,seconds\n");
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
