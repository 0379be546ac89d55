/*
 * clone_check - runs the problem of problem.h (all four optimizer variants) and writes the final
 * parameters, state and the double statistics of every step to a file. Built twice: against the
 * library with its AVX-512/AVX2/baseline kernels chosen at run time, and against a build with the
 * baseline kernels only (ADAMPI_NO_CLONES); the test compares the two files byte for byte, which is
 * the promise that results do not depend on the machine's vector width. Then the data-parallel
 * step of the same problem through the step buffers (the reduction that takes the statistics on
 * the way) in float32, bfloat16 and float16 with clipping and a gradient scale, so that the 16-bit
 * conversions are compared too; and the sharded step of the same types, where each pass reads
 * 16-bit gradients where the caller passed them (float16 ones widened by the CPU's conversion or
 * by the integer formula, as the build has it), and scaled float32 ones through the float32 shard.
 * threads_same_bits runs it with 1 and 3 threads per rank.
 */
#include "problem.h"

#define STEPS 8

/* STEPS data-parallel steps through the step buffers in the given type, each rank with its own
 * gradients (loss scales of 4 and 3 in turn, clipping at 10); the master or fp32 parameters, the
 * state and the 16-bit parameters go to out. sharded: sharded steps instead, every rank with the
 * same gradients, in buffers of its own; the 16-bit parameters of rank 0's shard go to out. */
static void data_parallel(const problem_variant *v, adampi_dtype dt, int sharded, FILE *out)
{
  adampi_config cfg = adampi_config_defaults(v->kind);
  cfg.dtype = dt;
  cfg.max_grad_norm = 10.0;
  char err[512];
  adampi *opt = problem_create_cfg(MPI_COMM_WORLD, v, &cfg, err, sizeof err);
  void *params = NULL, *grads = NULL;
  if (opt && sharded) {
    params = malloc((size_t)adampi_numel(opt) * adampi_dtype_size(dt));
    grads = malloc((size_t)adampi_numel(opt) * adampi_dtype_size(dt));
  }
  if (opt == NULL || (!sharded && adampi_alloc_step_buffers_ex(opt, &params, &grads) != ADAMPI_OK) ||
      params == NULL || grads == NULL) {
    fprintf(stderr, "%s\n", opt ? adampi_last_error(opt) : err);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  int64_t N = adampi_numel(opt), lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  const size_t skip = (size_t)lo * adampi_dtype_size(dt); /* bytes before this rank's shard */
  float *w = malloc((size_t)N * sizeof *w), *g = malloc((size_t)N * sizeof *g);
  uint64_t seed = 42;
  for (int64_t k = 0; k < N; k++) w[k] = 0.5f * test_uniform(&seed);
  adampi_round_to(dt, w, params, N);
  for (int step = 0; step < STEPS; step++) {
    unsigned char has[PROBLEM_NT];
    problem_mask(step, has);
    adampi_widen(dt, params, w, N);
    for (int i = 0; i < PROBLEM_NT; i++) {
      adampi_tensor_info t;
      adampi_tensor(opt, i, &t);
      problem_grad(&t, i, step * 64 + (sharded ? 0 : test_rank()), w + t.offset, g + t.offset);
    }
    const float scale = step % 2 ? 3.0f : 4.0f; /* divided by, and multiplied by 1/4 (adampi__grad_scaling) */
    for (int64_t k = 0; k < N; k++) g[k] *= scale;
    adampi_round_to(dt, g, grads, N);
    adampi_step_options o = adampi_step_defaults();
    o.has_grad = has;
    o.grad_scale = scale;
    adampi_status st = sharded ? adampi_step_sharded_ex(opt, (char *)params + skip, (char *)grads + skip, &o)
                               : adampi_step_ex(opt, params, grads, &o);
    if (st != ADAMPI_OK) {
      fprintf(stderr, "%s\n", adampi_last_error(opt));
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  }
  problem_result r;
  const float *master = adampi_master_shard(opt);
  problem_collect(opt, MPI_COMM_WORLD, v->kind, master ? master : (const float *)params + lo, &r);
  if (out) {
    fwrite(r.params, sizeof(float), (size_t)r.numel, out);
    fwrite(r.s0, sizeof(float), (size_t)r.numel, out);
    fwrite(r.s1, sizeof(float), (size_t)r.numel, out);
    fwrite(params, adampi_dtype_size(dt), (size_t)N, out);
  }
  problem_release(&r);
  free(w);
  free(g);
  if (sharded) free(params), free(grads);
  adampi_free(&opt);
}

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
  const adampi_dtype types[3] = {ADAMPI_FLOAT32, ADAMPI_BFLOAT16, ADAMPI_FLOAT16};
  for (int k = 0; k < 12; k++) data_parallel(&problem_variants[k % 2 ? 2 : 0], types[k / 2 % 3], k >= 6, out);
  if (out) fclose(out);
  MPI_Finalize();
  return 0;
}
