/*
 * clone_check - runs the problem of problem.h (all four optimizer variants) and writes the final
 * parameters, state and the double statistics of every step to a file. Built twice: against the
 * library with its AVX-512/AVX2/baseline kernels chosen at run time, and against a build with the
 * baseline kernels only (ADAMPI_NO_CLONES); the test compares the two files byte for byte, which is
 * the promise that results do not depend on the machine's vector width.
 */
#include "problem.h"

#define STEPS 8

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  if (argc != 2) {
    fprintf(stderr, "usage: clone_check OUT\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  FILE *out = test_rank() == 0 ? fopen(argv[1], "wb") : NULL;
  for (int vi = 0; vi < 4; vi++) {
    const problem_variant *v = &problem_variants[vi];
    char err[512];
    adampi *opt = problem_create(MPI_COMM_WORLD, v, ADAMPI_NONFINITE_ERROR, err, sizeof err);
    if (opt == NULL) {
      fprintf(stderr, "%s\n", err);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int64_t lo, hi;
    adampi_shard(opt, adampi_rank(opt), &lo, &hi);
    float *w = calloc((size_t)(hi - lo) + 1, sizeof *w);
    static double diag[STEPS * PROBLEM_NT * 4];
    problem_init(opt, w);
    if (problem_steps(opt, MPI_COMM_WORLD, v, w, 0, STEPS, NULL, diag) != ADAMPI_OK) {
      fprintf(stderr, "%s\n", adampi_last_error(opt));
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    problem_result r;
    problem_collect(opt, MPI_COMM_WORLD, v->kind, w, &r);
    if (out) {
      fwrite(r.params, sizeof(float), (size_t)r.numel, out);
      fwrite(r.s0, sizeof(float), (size_t)r.numel, out);
      fwrite(r.s1, sizeof(float), (size_t)r.numel, out);
      fwrite(diag, sizeof diag, 1, out);
    }
    problem_release(&r);
    free(w);
    adampi_free(&opt);
  }
  if (out) fclose(out);
  MPI_Finalize();
  return 0;
}
