/*
 * adampi-replay - replay a recorded trajectory of gradients through adampi.
 *
 *   mpirun -np N adampi-replay [--stop-after K --checkpoint CK.h5] [--resume CK.h5] IN.h5 OUT.h5
 *
 * Reads the initial parameters and the gradients of every step from IN (format in replay.h and the
 * README), runs the optimizer sharded over the N ranks, and writes the final parameters to OUT.
 * --stop-after K --checkpoint CK runs K steps, saves the optimizer to CK and writes the parameters
 * after K steps to OUT; --resume CK loads CK (saved on any number of ranks) and runs the remaining
 * steps. On any error every rank exits with status 1, rank 0 prints the message, and OUT is not
 * created.
 */
#include "replay.h"

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
          "  --resume CK.h5      load CK.h5 (saved on any number of ranks) and continue from its step\n");
}

typedef struct args {
  const char *in, *out, *checkpoint, *resume;
  long stop_after; /* -1: all steps */
} args;

static int parse(int argc, char **argv, args *a)
{
  *a = (args){NULL, NULL, NULL, NULL, -1};
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--stop-after") && i + 1 < argc) {
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
  if (parse(argc, argv, &a) != 0) {
    if (rank == 0) usage(stderr);
    MPI_Finalize();
    return 2;
  }
  char err[1024] = "";
  replay_file *rf = NULL;
  adampi *opt = NULL;
  float *params = NULL;
  int start = 0, stop = 0;
  int rc = replay_open(MPI_COMM_WORLD, a.in, &rf, err, sizeof err);
  if (rc == 0) rc = replay_make_optimizer(rf, NULL, &opt, err, sizeof err);
  if (rc == 0) {
    int64_t lo, hi;
    adampi_shard(opt, rank, &lo, &hi);
    params = calloc((size_t)(hi - lo) + 1, sizeof *params);
    int bad = params == NULL, any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any) rc = ADAMPI_ERR_NOMEM, snprintf(err, sizeof err, "out of memory for the parameter shard");
  }
  if (rc == 0 && a.resume) {
    adampi_user user;
    adampi_load_options lo = adampi_load_defaults();
    lo.user = &user;
    int64_t done = -1;
    rc = adampi_load(opt, a.resume, params, &lo);
    if (rc != 0) snprintf(err, sizeof err, "%s", adampi_last_error(opt));
    else if (adampi_user_get(&user, "replay_steps_done", &done) != ADAMPI_OK || done < 0 || done > replay_steps(rf))
      rc = ADAMPI_ERR_FORMAT,
      snprintf(err, sizeof err, "%s was not saved by adampi-replay for %s (no valid replay_steps_done)", a.resume, a.in);
    start = (int)done;
  } else if (rc == 0) {
    rc = replay_read_params(rf, opt, params, err, sizeof err);
  }
  stop = a.stop_after >= 0 && a.stop_after < replay_steps(rf) ? (int)a.stop_after : (rf ? replay_steps(rf) : 0);
  if (rc == 0 && stop < start)
    rc = ADAMPI_ERR_ARG, snprintf(err, sizeof err, "--stop-after %d is before the checkpoint's step %d", stop, start);
  double t0 = MPI_Wtime();
  if (rc == 0) rc = replay_run(rf, opt, params, start, stop, err, sizeof err);
  double seconds = MPI_Wtime() - t0;
  if (rc == 0 && a.checkpoint) {
    adampi_user user = {0};
    adampi_user_set(&user, "replay_steps_done", stop);
    adampi_save_options so = adampi_save_defaults();
    so.user = &user;
    rc = adampi_save(opt, a.checkpoint, params, &so);
    if (rc != 0) snprintf(err, sizeof err, "%s", adampi_last_error(opt));
  }
  if (rc == 0) rc = replay_write_params(rf, opt, params, a.out, err, sizeof err);
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
  }
  free(params);
  adampi_free(&opt);
  replay_close(&rf);
  MPI_Finalize();
  return rc == 0 ? 0 : 1;
}
