/*
 * test_mlp.c - the trainer's network: analytic gradients of every layer type (Linear, BatchNorm
 * with statistics synchronized across ranks, ReLU, softmax cross-entropy) against central finite
 * differences of the global-batch loss, on 1 rank and on several (each rank holds a slice of the
 * batch; the mean of the ranks' gradients must be the gradient).
 */
#include "mlp.h"
#include "mpi_check.h"

#include <math.h>

#define IN 7
#define H1 6
#define H2 5
#define OUT 4
#define BATCH 12 /* global; divisible by 1, 2, 3, 4 */

static float params[4096], grads[4096], mean_grads[4096];

/* Global mean loss of the batch (x, y) at the current parameters, on every rank. */
static double global_loss(mlp *m, mlp_work *w, const float *x, const uint8_t *y, int b, float *tmp_grads)
{
  float saved[4 * (H1 + H2)];
  memcpy(saved, m->rm1, sizeof saved); /* a training pass moves the running statistics */
  double loss = 0, total = 0;
  int correct;
  mlp_train_batch(m, w, x, y, b, BATCH, tmp_grads, params, MPI_COMM_WORLD, &loss, &correct);
  memcpy(m->rm1, saved, sizeof saved);
  MPI_Allreduce(&loss, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  return total / BATCH;
}

START_TEST(gradients_match_finite_differences)
{
  int P = test_size(), r = test_rank();
  if (BATCH % P != 0) return;
  int b = BATCH / P;
  mlp m;
  mlp_bind(&m, IN, H1, H2, OUT, params);
  mlp_init(&m, 3);
  uint64_t seed = 11;
  for (int i = 0; i < H1; i++) m.g1[i] = 1.0f + 0.3f * test_uniform(&seed), m.b1[i] = 0.2f * test_uniform(&seed);
  for (int i = 0; i < H2; i++) m.g2[i] = 1.0f + 0.3f * test_uniform(&seed), m.b2[i] = 0.2f * test_uniform(&seed);
  float x[BATCH * IN];
  uint8_t y[BATCH];
  for (int i = 0; i < BATCH * IN; i++) x[i] = test_uniform(&seed);
  for (int i = 0; i < BATCH; i++) y[i] = (uint8_t)(test_rng(&seed) % OUT);
  mlp_work *w = mlp_work_new(&m, BATCH);
  const float *xs = x + (size_t)r * b * IN;
  const uint8_t *ys = y + (size_t)r * b;
  float scratch[4096];
  double loss;
  int correct;
  float saved[4 * (H1 + H2)];
  memcpy(saved, m.rm1, sizeof saved);
  ck_assert_int_eq(mlp_train_batch(&m, w, xs, ys, b, BATCH, grads, params, MPI_COMM_WORLD, &loss, &correct), 0);
  memcpy(m.rm1, saved, sizeof saved);
  int n = IN * H1 + 2 * H1 + H1 * H2 + 2 * H2 + H2 * OUT + OUT; /* trainable parameters */
  MPI_Allreduce(grads, mean_grads, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  for (int i = 0; i < n; i++) mean_grads[i] /= (float)P;
  double worst = 0;
  int checked = 0;
  for (int i = 0; i < n; i++) {
    float keep = params[i], h = 1e-3f;
    params[i] = keep + h;
    double up = global_loss(&m, w, xs, ys, b, scratch);
    params[i] = keep - h;
    double down = global_loss(&m, w, xs, ys, b, scratch);
    params[i] = keep;
    double fd = (up - down) / (2.0 * h), an = mean_grads[i];
    double err = fabs(fd - an) / fmax(fabs(fd) + fabs(an), 1e-2);
    if (err > worst) worst = err;
    checked++;
    ck_assert_msg(err < 2e-2, "[%d ranks] parameter %d: analytic %.6g, finite difference %.6g", P, i, an, fd);
  }
  if (r == 0) printf("mlp gradients on %d rank(s): %d parameters, largest relative difference %.2e\n", P, checked, worst);
  mlp_work_free(&w);
}
END_TEST

static Suite *make_suite(void)
{
  Suite *s = suite_create("mlp");
  TCase *tc = tcase_create("gradients");
  tcase_add_test(tc, gradients_match_finite_differences);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) { return run_mpi_suite(argc, argv, make_suite); }
