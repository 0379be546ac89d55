/* The C example of the README, compiled and run by ctest so that it stays true. */
#include <adampi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  adampi_config cfg = adampi_config_defaults(ADAMPI_ADAMP);
  adampi *opt = NULL;
  char err[256];
  if (adampi_create(MPI_COMM_WORLD, &cfg, &opt, err, sizeof err) != ADAMPI_OK) {
    fprintf(stderr, "%s\n", err);
    MPI_Abort(MPI_COMM_WORLD, 1); /* programs may abort; the library never does */
  }
  adampi_hparams decay = adampi_adamp_defaults(), no_decay = adampi_adamp_defaults();
  decay.weight_decay = 1e-2;
  int g_decay, g_plain;
  adampi_add_group(opt, &decay, &g_decay);
  adampi_add_group(opt, &no_decay, &g_plain);
  int64_t w_shape[2] = {256, 784}, b_shape[1] = {256};
  adampi_add_tensor(opt, "fc1.weight", 2, w_shape, g_decay, NULL);
  adampi_add_tensor(opt, "fc1.bias", 1, b_shape, g_plain, NULL);
  if (adampi_commit(opt) != ADAMPI_OK) { /* collective: every rank gets the same status */
    fprintf(stderr, "%s\n", adampi_last_error(opt));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }

  int64_t n = adampi_numel(opt); /* all parameters, in registration order */
  float *params = calloc((size_t)n, sizeof *params), *grads = calloc((size_t)n, sizeof *grads);
  for (int64_t i = 0; i < n; i++) params[i] = 0.01f * (float)(i % 97);
  for (int step = 0; step < 10; step++) {
    for (int64_t i = 0; i < n; i++) grads[i] = 0.001f * (float)((i * 7 + step) % 13) - 0.006f;
    /* averages grads over ranks, updates this rank's shard, all-gathers params */
    adampi_status st = adampi_step(opt, params, grads, NULL);
    if (st != ADAMPI_OK) {
      fprintf(stderr, "step %d: %s\n", step, adampi_last_error(opt));
      break;
    }
  }
  adampi_diag d;
  adampi_diag_get(opt, 0, &d);
  if (adampi_rank(opt) == 0)
    printf("fc1.weight: |w| = %.4f, |g| = %.4f, view %d, step %lld\n", d.weight_norm, d.grad_norm, (int)d.view,
           (long long)d.step);
  free(params);
  free(grads);
  adampi_free(&opt);
  MPI_Finalize();
  return 0;
}
