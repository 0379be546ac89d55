/*
 * adampi-replay - replay a recorded trajectory of gradients through adampi.
 *
 *   mpirun -np N adampi-replay [--stop-after K --checkpoint CK.h5] [--resume CK.h5]
 *                              [--dtype float32|bf16|fp16] [--clip-norm C] [--grad-scale S] IN.h5 OUT.h5
 *
 * Reads the initial parameters and the gradients of every step from IN (format in replay.h and the
 * README), runs the optimizer sharded over the N ranks, and writes the final parameters to OUT.
 * --stop-after K --checkpoint CK runs K steps, saves the optimizer to CK and writes the parameters
 * after K steps to OUT; --resume CK loads CK (saved on any number of ranks) and runs the remaining
 * steps. --dtype bf16|fp16 replays a 16-bit model: IN's parameters are its fp32 master
 * (adampi_set_master), each step's gradients are IN's rounded to the type, and OUT holds the fp32
 * master, in the same format. --clip-norm C clips by global norm (cfg.max_grad_norm), --grad-scale
 * S is every step's grad_scale. On any error every rank exits with status 1, rank 0 prints the
 * message, and OUT is not created; bad options exit with status 2 before anything is read.
 */
#include "replay.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
  fprintf(f,
          "usage: mpirun -np N adampi-replay [options] IN.h5 OUT.h5\n"
          "Replays the gradients recorded in IN through AdamP or SGDP sharded over N ranks\n"
          "and writes the final parameters to OUT (not created on error).\n"
          "  --stop-after K      run only up to step K (K steps from the start)\n"
          "  --checkpoint CK.h5  with --stop-after: save the optimizer there after step K\n"
          "  --resume CK.h5      load CK.h5 (saved on any number of ranks) and continue from its step\n"
          "  --dtype T           the model's type: float32 (default), bf16 (bfloat16) or fp16 (float16);\n"
          "                      with bf16/fp16 IN's parameters are the fp32 master, the gradients are\n"
          "                      rounded to T before each step, and OUT holds the fp32 master\n"
          "  --clip-norm C       clip the gradients by global norm C (clip_grad_norm_; 0: off, the default)\n"
          "  --grad-scale S      divide the gradients by S at every step (loss scale; default 1)\n");
}

typedef struct args {
  const char *in, *out, *checkpoint, *resume;
  long stop_after; /* -1: all steps */
  adampi_dtype dtype;
  double clip_norm, grad_scale;
} args;

/* A number option's value: all of text, finite, and > 0 (positive) or >= 0. 0 or -1. */
static int number(const char *text, int positive, double *v)
{
  char *end;
  *v = strtod(text, &end);
  if (end == text || *end || !isfinite(*v)) return -1;
  return positive ? (*v > 0 ? 0 : -1) : (*v >= 0 ? 0 : -1);
}

/* 0, or -1 with a message in why (empty: the usage says it). */
static int parse(int argc, char **argv, args *a, char *why, size_t why_len)
{
  *a = (args){NULL, NULL, NULL, NULL, -1, ADAMPI_FLOAT32, 0.0, 1.0};
  why[0] = '\0';
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
      const char *t = argv[++i];
      if (!strcmp(t, "float32") || !strcmp(t, "fp32")) a->dtype = ADAMPI_FLOAT32;
      else if (!strcmp(t, "bf16") || !strcmp(t, "bfloat16")) a->dtype = ADAMPI_BFLOAT16;
      else if (!strcmp(t, "fp16") || !strcmp(t, "float16")) a->dtype = ADAMPI_FLOAT16;
      else return snprintf(why, why_len, "--dtype '%s' is not a known type (float32, bf16, fp16, bfloat16, float16)", t), -1;
    } else if (!strcmp(argv[i], "--clip-norm") && i + 1 < argc) {
      if (number(argv[++i], 0, &a->clip_norm) != 0)
        return snprintf(why, why_len, "--clip-norm '%s' must be a finite number >= 0 (0: no clipping)", argv[i]), -1;
    } else if (!strcmp(argv[i], "--grad-scale") && i + 1 < argc) {
      if (number(argv[++i], 1, &a->grad_scale) != 0)
        return snprintf(why, why_len, "--grad-scale '%s' must be a finite number > 0", argv[i]), -1;
    } else if (!strcmp(argv[i], "--stop-after") && i + 1 < argc) {
      char *end;
      a->stop_after = strtol(argv[++i], &end, 10);
      if (*end || a->stop_after < 0) return -1;
    } else if (!strcmp(argv[i], "--checkpoint") && i + 1 < argc) {
      a->checkpoint = argv[++i];
    } else if (!strcmp(argv[i], "--resume") && i + 1 < argc) {
      a->resume = argv[++i];
    } else if (argv[i][0] == '-' && argv[i][1] == '-') {
      return -1;
    } else if (!a->in) {
      a->in = argv[i];
    } else if (!a->out) {
      a->out = argv[i];
    } else {
      return -1;
    }
  }
  if (!a->in || !a->out || (a->checkpoint && a->stop_after < 0)) return -1;
  return 0;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  args a;
  if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
    if (rank == 0) usage(stdout);
    MPI_Finalize();
    return 0;
  }
  char why[512];
  if (parse(argc, argv, &a, why, sizeof why) != 0) {
    if (rank == 0 && why[0]) fprintf(stderr, "adampi-replay: %s\n", why);
    if (rank == 0) usage(stderr);
    MPI_Finalize();
    return 2;
  }
  char err[1024] = "";
  replay_file *rf = NULL;
  adampi *opt = NULL;
  float *params = NULL; /* the shard in fp32: the parameters, or a 16-bit model's master from IN */
  void *typed = NULL;    /* a 16-bit model's shard in its type (NULL for float32: params) */
  int start = 0, stop = 0;
  int rc = replay_open(MPI_COMM_WORLD, a.in, &rf, err, sizeof err);
  if (rc == 0) {
    adampi_config cfg = adampi_config_defaults(replay_kind(rf));
    cfg.dtype = a.dtype;
    cfg.max_grad_norm = a.clip_norm;
    rc = replay_make_optimizer(rf, &cfg, &opt, err, sizeof err);
    replay_set_grad_scale(rf, a.grad_scale);
  }
  if (rc == 0) {
    int64_t lo, hi;
    adampi_shard(opt, rank, &lo, &hi);
    params = calloc((size_t)(hi - lo) + 1, sizeof *params);
    if (a.dtype != ADAMPI_FLOAT32) typed = calloc((size_t)(hi - lo) + 1, adampi_dtype_size(a.dtype));
    int bad = params == NULL || (a.dtype != ADAMPI_FLOAT32 && typed == NULL), any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any) rc = ADAMPI_ERR_NOMEM, snprintf(err, sizeof err, "out of memory for the parameter shard");
  }
  if (rc == 0 && a.resume) {
    adampi_user user;
    adampi_load_options lo = adampi_load_defaults();
    lo.user = &user;
    int64_t done = -1;
    rc = adampi_load(opt, a.resume, typed ? typed : (void *)params, &lo);
    if (rc != 0) snprintf(err, sizeof err, "%s", adampi_last_error(opt));
    else if (adampi_user_get(&user, "replay_steps_done", &done) != ADAMPI_OK || done < 0 || done > replay_steps(rf))
      rc = ADAMPI_ERR_FORMAT,
      snprintf(err, sizeof err, "%s was not saved by adampi-replay for %s (no valid replay_steps_done)", a.resume, a.in);
    start = (int)done;
  } else if (rc == 0) {
    rc = replay_read_params(rf, opt, params, err, sizeof err);
    /* a 16-bit model: IN holds its fp32 master; its parameters are the master rounded */
    if (rc == 0 && typed && (rc = adampi_set_master(opt, params, ADAMPI_PARAMS_SHARD, typed)) != 0)
      snprintf(err, sizeof err, "%s", adampi_last_error(opt));
  }
  stop = a.stop_after >= 0 && a.stop_after < replay_steps(rf) ? (int)a.stop_after : (rf ? replay_steps(rf) : 0);
  if (rc == 0 && stop < start)
    rc = ADAMPI_ERR_ARG, snprintf(err, sizeof err, "--stop-after %d is before the checkpoint's step %d", stop, start);
  double t0 = MPI_Wtime();
  if (rc == 0) rc = replay_run(rf, opt, typed ? typed : (void *)params, start, stop, err, sizeof err);
  double seconds = MPI_Wtime() - t0;
  if (rc == 0 && a.checkpoint) {
    adampi_user user = {0};
    adampi_user_set(&user, "replay_steps_done", stop);
    adampi_save_options so = adampi_save_defaults();
    so.user = &user;
    rc = adampi_save(opt, a.checkpoint, typed ? typed : (void *)params, &so);
    if (rc != 0) snprintf(err, sizeof err, "%s", adampi_last_error(opt));
  }
  /* OUT holds the fp32 parameters: a 16-bit model's master (NULL only for an empty shard) */
  if (rc == 0) rc = replay_write_params(rf, opt, typed ? adampi_master_shard(opt) : params, a.out, err, sizeof err);
  if (rc != 0 && rank == 0) fprintf(stderr, "adampi-replay: %s\n", err);
  if (rc == 0 && rank == 0) {
    replay_counts c;
    replay_get_counts(rf, &c);
    printf("adampi-replay: steps %d..%d of %d (%s) over %d tensors (%lld elements) on %d ranks in %.3f s\n"
           "  projected under the channel view %lld times, the layer view %lld times, not projected %lld times\n"
           "  wrote %s%s%s\n",
           start, stop, replay_steps(rf), replay_kind(rf) == ADAMPI_ADAMP ? "AdamP" : "SGDP", replay_num_tensors(rf),
           (long long)adampi_numel(opt), adampi_size(opt), seconds, (long long)c.channel, (long long)c.layer,
           (long long)c.none, a.out, a.checkpoint ? " and checkpoint " : "", a.checkpoint ? a.checkpoint : "");
    if (a.dtype != ADAMPI_FLOAT32 || a.clip_norm > 0 || a.grad_scale != 1.0)
      printf("  model %s%s, grad scale %.17g, clip norm %.17g (clipped at %lld steps)\n", adampi_dtype_name(a.dtype),
             a.dtype != ADAMPI_FLOAT32 ? " (OUT: its fp32 master)" : "", a.grad_scale, a.clip_norm, (long long)c.clipped);
  }
  free(params);
  free(typed);
  adampi_free(&opt);
  replay_close(&rf);
  MPI_Finalize();
  return rc == 0 ? 0 : 1;
}
