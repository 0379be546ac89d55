/*
 * adampi-replay - replay a recorded trajectory of gradients through adampi.
 *
 *   mpirun -np N adampi-replay IN.h5 OUT.h5
 *
 * Reads the initial parameters and the gradients of every step from IN (format in replay.h and the
 * README), runs the optimizer sharded over the N ranks, and writes the final parameters to OUT.
 * On any error every rank exits with status 1, rank 0 prints the message, and OUT is not created.
 */
#include "replay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
  fprintf(f,
          "usage: mpirun -np N adampi-replay IN.h5 OUT.h5\n"
          "Replays the gradients recorded in IN through AdamP or SGDP sharded over N ranks\n"
          "and writes the final parameters to OUT (not created on error).\n");
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
    if (rank == 0) usage(stdout);
    MPI_Finalize();
    return 0;
  }
  if (argc != 3) {
    if (rank == 0) usage(stderr);
    MPI_Finalize();
    return 2;
  }
  char err[1024] = "";
  replay_file *rf = NULL;
  adampi *opt = NULL;
  float *params = NULL;
  int rc = replay_open(MPI_COMM_WORLD, argv[1], &rf, err, sizeof err);
  if (rc == 0) rc = replay_make_optimizer(rf, NULL, &opt, err, sizeof err);
  if (rc == 0) {
    int64_t lo, hi;
    adampi_shard(opt, rank, &lo, &hi);
    params = calloc((size_t)(hi - lo) + 1, sizeof *params);
    int bad = params == NULL, any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any) rc = ADAMPI_ERR_NOMEM, snprintf(err, sizeof err, "out of memory for the parameter shard");
  }
  if (rc == 0) rc = replay_read_params(rf, opt, params, err, sizeof err);
  double t0 = MPI_Wtime();
  if (rc == 0) rc = replay_run(rf, opt, params, 0, replay_steps(rf), err, sizeof err);
  double seconds = MPI_Wtime() - t0;
  if (rc == 0) rc = replay_write_params(rf, opt, params, argv[2], err, sizeof err);
  if (rc != 0 && rank == 0) fprintf(stderr, "adampi-replay: %s\n", err);
  if (rc == 0 && rank == 0) {
    replay_counts c;
    replay_get_counts(rf, &c);
    printf("adampi-replay: %d steps of %s over %d tensors (%lld elements) on %d ranks in %.3f s\n"
           "  projected under the channel view %lld times, the layer view %lld times, not projected %lld times\n"
           "  wrote %s\n",
           replay_steps(rf), replay_kind(rf) == ADAMPI_ADAMP ? "AdamP" : "SGDP", replay_num_tensors(rf),
           (long long)adampi_numel(opt), adampi_size(opt), seconds, (long long)c.channel, (long long)c.layer,
           (long long)c.none, argv[2]);
  }
  free(params);
  adampi_free(&opt);
  replay_close(&rf);
  MPI_Finalize();
  return rc == 0 ? 0 : 1;
}
