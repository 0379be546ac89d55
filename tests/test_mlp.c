/*
 * test_mlp.c - the trainer's network: analytic gradients of every layer type (Linear, BatchNorm
 * with statistics synchronized across ranks, ReLU, softmax cross-entropy) against central finite
 * differences of the global-batch loss, on 1, 2 and 4 ranks (each rank holds a slice of the
 * batch); the gradients must be the same bits on every rank and for every rank count.
 */
#include "mlp.h"
#include "mpi_check.h"

#include <math.h>

#define IN 7
#define H1 6
#define H2 5
#define OUT 4
#define BATCH 16 /* global: 8 slices of 2 samples, on 1, 2, 4 or 8 ranks */

static float params[4096], stats[4096], grads[4096], mean_grads[4096];

/* Global mean loss of the batch (x, y) at the current parameters, on every rank. */
static double global_loss(mlp *m, mlp_work *w, const float *x, const uint8_t *y, int b, float *tmp_grads)
{
  float saved[2 * (H1 + H2)];
  memcpy(saved, m->rm1, sizeof saved); /* a training pass moves the running statistics */
  double loss = 0, total = 0;
  int correct;
  mlp_train_batch(m, w, x, y, b, BATCH, tmp_grads, MPI_COMM_WORLD, &loss, &correct);
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
  mlp_bind(&m, IN, H1, H2, OUT, params, stats);
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
  float saved[2 * (H1 + H2)];
  memcpy(saved, m.rm1, sizeof saved);
  ck_assert_int_eq(mlp_train_batch(&m, w, xs, ys, b, BATCH, grads, MPI_COMM_WORLD, &loss, &correct), 0);
  memcpy(m.rm1, saved, sizeof saved);
  int n = IN * H1 + 2 * H1 + H1 * H2 + 2 * H2 + H2 * OUT + OUT; /* trainable parameters */
  memcpy(mean_grads, grads, (size_t)n * sizeof(float));
  unsigned long h = 0, lo, hi;
  for (int i = 0; i < n; i++) {
    uint32_t bits;
    memcpy(&bits, &grads[i], 4);
    h = h * 1000003ul + bits;
  }
  MPI_Allreduce(&h, &lo, 1, MPI_UNSIGNED_LONG, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&h, &hi, 1, MPI_UNSIGNED_LONG, MPI_MAX, MPI_COMM_WORLD);
  ck_assert_msg(lo == hi, "ranks hold different gradients");

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

/* The gradient of one global batch computed on 1, 2, ... up to the world's ranks (sub-communicators
 * of this run): the same bits every time. */
START_TEST(same_gradients_on_every_rank_count)
{
  int P = test_size(), me = test_rank();
  float x[BATCH * IN];
  uint8_t y[BATCH];
  uint64_t seed = 99;
  for (int i = 0; i < BATCH * IN; i++) x[i] = test_uniform(&seed);
  for (int i = 0; i < BATCH; i++) y[i] = (uint8_t)(test_rng(&seed) % OUT);
  static float ref[4096];
  int n = IN * H1 + 2 * H1 + H1 * H2 + 2 * H2 + H2 * OUT + OUT, differs = 0;
  for (int k = 1; k <= P && k <= 8; k *= 2) {
    MPI_Comm sub;
    MPI_Comm_split(MPI_COMM_WORLD, me < k ? 0 : MPI_UNDEFINED, me, &sub);
    if (sub == MPI_COMM_NULL) continue;
    mlp m;
    mlp_bind(&m, IN, H1, H2, OUT, params, stats);
    mlp_init(&m, 5);
    mlp_work *w = mlp_work_new(&m, BATCH);
    int b = BATCH / k;
    double loss;
    int correct;
    ck_assert_int_eq(mlp_train_batch(&m, w, x + (size_t)me * b * IN, y + (size_t)me * b, b, BATCH, grads, sub, &loss,
                                     &correct), 0);
    if (k == 1) memcpy(ref, grads, (size_t)n * sizeof(float));
    else if (me == 0) differs |= memcmp(ref, grads, (size_t)n * sizeof(float)) != 0;
    mlp_work_free(&w);
    MPI_Comm_free(&sub);
  }
  ck_assert_msg(!differs, "the gradient of the same global batch differs between rank counts");
}
END_TEST

static Suite *make_suite(void)
{
  Suite *s = suite_create("mlp");
  TCase *tc = tcase_create("gradients");
  tcase_add_test(tc, gradients_match_finite_differences);
  tcase_add_test(tc, same_gradients_on_every_rank_count);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) { return run_mpi_suite(argc, argv, make_suite); }
