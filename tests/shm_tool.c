/*
 * shm_tool - adampi_alloc_step_buffers for shm_full.sh: one tensor of ROWS x 1000, the step buffers,
 * then a data-parallel step through them (or, if they were refused, through the caller's buffers).
 *
 *   shm_tool ROWS
 *
 * Prints, on every rank: "rank R: buffers STATUS: MESSAGE" and "rank R: step ok" (or the error).
 * Exit 0 when every rank saw the same status and the step that followed worked.
 */
#include "mpi_check.h"

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int64_t shape[2] = {argc > 1 ? atoll(argv[1]) : 0, 1000};
  int r = test_rank(), bad = shape[0] < 1;
  adampi *opt = NULL;
  adampi_config cfg = adampi_config_defaults(ADAMPI_SGDP);
  adampi_hparams hp = adampi_sgdp_defaults(0.1);
  char err[256];
  if (!bad) bad = adampi_create(MPI_COMM_WORLD, &cfg, &opt, err, sizeof err) != ADAMPI_OK;
  if (!bad) bad = adampi_add_group(opt, &hp, NULL) || adampi_add_tensor(opt, "w", 2, shape, 0, NULL) || adampi_commit(opt);
  if (bad) {
    fprintf(stderr, "usage: shm_tool ROWS (ROWS >= 1), or the setup failed\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  int64_t N = adampi_numel(opt);
  float *p = NULL, *g = NULL;
  adampi_status st = adampi_alloc_step_buffers(opt, &p, &g), lo, hi;
  printf("rank %d: buffers %s: %s\n", r, adampi_strerror(st), st == ADAMPI_OK ? "-" : adampi_last_error(opt));
  int mine = (int)st;
  MPI_Allreduce(&mine, &lo, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&mine, &hi, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  int same = lo == hi, own = st != ADAMPI_OK;
  if (own && (p != NULL || g != NULL)) same = 0; /* a refusal must not hand out pointers */
  if (own) p = malloc((size_t)N * sizeof(float)), g = malloc((size_t)N * sizeof(float));
  for (int64_t k = 0; k < N; k++) p[k] = (float)(k % 7) - 3.0f, g[k] = (float)((k + r) % 5) * 0.25f;
  adampi_status ss = adampi_step(opt, p, g, NULL);
  printf("rank %d: step %s\n", r, ss == ADAMPI_OK ? "ok" : adampi_last_error(opt));
  if (own) free(p), free(g);
  adampi_free(&opt);
  int fail = !same || ss != ADAMPI_OK, any = 0;
  MPI_Allreduce(&fail, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
