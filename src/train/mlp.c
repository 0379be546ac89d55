/*
 * mlp.c - forward and backward of the trainer's network (see mlp.h). Dimensions: b samples in
 * this rank's slice, n the global batch, in/h1/h2/out the layer widths. Matrix products are
 * written as rows of axpy (contiguous inner loops the compiler vectorizes without reassociation).
 */
#include "mlp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1

struct mlp_work {
  int max_b;
  float *z1, *xh1, *a1, *z2, *xh2, *a2, *logits; /* forward activations */
  float *d1, *d2, *dl;                           /* gradients w.r.t. z1/a1, z2/a2, logits */
  double *sum, *sum2;                            /* per-feature sums of the synchronized BN */
  float *inv1, *inv2;                            /* 1 / sqrt(var + eps) of the batch, per feature */
};

void mlp_tensors(int in, int h1, int h2, int out, mlp_tensor t[MLP_TENSORS])
{
  const mlp_tensor table[MLP_TENSORS] = {
    {"fc1.weight", 2, {h1, in}, 0},        {"bn1.weight", 1, {h1, 0}, 1},       {"bn1.bias", 1, {h1, 0}, 1},
    {"fc2.weight", 2, {h2, h1}, 0},        {"bn2.weight", 1, {h2, 0}, 1},       {"bn2.bias", 1, {h2, 0}, 1},
    {"fc3.weight", 2, {out, h2}, 0},       {"fc3.bias", 1, {out, 0}, 1},        {"bn1.running_mean", 1, {h1, 0}, 2},
    {"bn1.running_var", 1, {h1, 0}, 2},    {"bn2.running_mean", 1, {h2, 0}, 2}, {"bn2.running_var", 1, {h2, 0}, 2}};
  memcpy(t, table, sizeof table);
}

void mlp_bind(mlp *m, int in, int h1, int h2, int out, float *base)
{
  m->in = in, m->h1 = h1, m->h2 = h2, m->out = out;
  float *p = base;
  m->w1 = p, p += (size_t)h1 * in;
  m->g1 = p, p += h1;
  m->b1 = p, p += h1;
  m->w2 = p, p += (size_t)h2 * h1;
  m->g2 = p, p += h2;
  m->b2 = p, p += h2;
  m->w3 = p, p += (size_t)out * h2;
  m->b3 = p, p += out;
  m->rm1 = p, p += h1;
  m->rv1 = p, p += h1;
  m->rm2 = p, p += h2;
  m->rv2 = p;
}

static float uniform(uint64_t *s, float bound)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return bound * (float)((double)(z >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

void mlp_init(mlp *m, uint64_t seed)
{
  /* kaiming_uniform(a=sqrt(5)) as torch.nn.Linear: bound 1/sqrt(fan_in) */
  for (size_t i = 0; i < (size_t)m->h1 * m->in; i++) m->w1[i] = uniform(&seed, 1.0f / sqrtf((float)m->in));
  for (size_t i = 0; i < (size_t)m->h2 * m->h1; i++) m->w2[i] = uniform(&seed, 1.0f / sqrtf((float)m->h1));
  for (size_t i = 0; i < (size_t)m->out * m->h2; i++) m->w3[i] = uniform(&seed, 1.0f / sqrtf((float)m->h2));
  for (int i = 0; i < m->out; i++) m->b3[i] = uniform(&seed, 1.0f / sqrtf((float)m->h2));
  for (int i = 0; i < m->h1; i++) m->g1[i] = 1.0f, m->b1[i] = 0.0f, m->rm1[i] = 0.0f, m->rv1[i] = 1.0f;
  for (int i = 0; i < m->h2; i++) m->g2[i] = 1.0f, m->b2[i] = 0.0f, m->rm2[i] = 0.0f, m->rv2[i] = 1.0f;
}

mlp_work *mlp_work_new(const mlp *m, int max_b)
{
  mlp_work *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  int hmax = m->h1 > m->h2 ? m->h1 : m->h2;
  size_t b = (size_t)max_b;
  w->max_b = max_b;
  w->z1 = calloc(b * m->h1, sizeof(float)), w->xh1 = calloc(b * m->h1, sizeof(float)), w->a1 = calloc(b * m->h1, sizeof(float));
  w->z2 = calloc(b * m->h2, sizeof(float)), w->xh2 = calloc(b * m->h2, sizeof(float)), w->a2 = calloc(b * m->h2, sizeof(float));
  w->logits = calloc(b * m->out, sizeof(float)), w->dl = calloc(b * m->out, sizeof(float));
  w->d1 = calloc(b * m->h1, sizeof(float)), w->d2 = calloc(b * m->h2, sizeof(float));
  w->sum = calloc(2 * (size_t)hmax, sizeof(double)), w->sum2 = w->sum + hmax;
  w->inv1 = calloc((size_t)m->h1, sizeof(float)), w->inv2 = calloc((size_t)m->h2, sizeof(float));
  if (!w->z1 || !w->xh1 || !w->a1 || !w->z2 || !w->xh2 || !w->a2 || !w->logits || !w->dl || !w->d1 || !w->d2 || !w->sum ||
      !w->inv1 || !w->inv2)
    mlp_work_free(&w);
  return w;
}

void mlp_work_free(mlp_work **wp)
{
  if (!wp || !*wp) return;
  mlp_work *w = *wp;
  free(w->z1), free(w->xh1), free(w->a1), free(w->z2), free(w->xh2), free(w->a2), free(w->logits), free(w->dl);
  free(w->d1), free(w->d2), free(w->sum), free(w->inv1), free(w->inv2);
  free(w);
  *wp = NULL;
}

/* z (b x o) = x (b x i) W^T (W: o x i), as rows of dot products over contiguous rows. */
static void linear(const float *x, const float *W, const float *bias, float *z, int b, int i_dim, int o_dim)
{
  for (int s = 0; s < b; s++)
    for (int o = 0; o < o_dim; o++) {
      const float *xr = x + (size_t)s * i_dim, *wr = W + (size_t)o * i_dim;
      float acc[16] = {0};
      int k = 0;
      for (; k + 16 <= i_dim; k += 16)
        for (int j = 0; j < 16; j++) acc[j] += xr[k + j] * wr[k + j];
      float sum = 0.0f;
      for (int j = 0; j < 16; j++) sum += acc[j];
      for (; k < i_dim; k++) sum += xr[k] * wr[k];
      z[(size_t)s * o_dim + o] = sum + (bias ? bias[o] : 0.0f);
    }
}

/* Synchronized batch normalization over the global batch, then ReLU. */
static int bn_relu_forward(const float *z, float *xh, float *a, const float *gamma, const float *beta, float *rm, float *rv,
                           float *inv, double *sum, double *sum2, int b, int h, int64_t n, MPI_Comm comm)
{
  for (int j = 0; j < h; j++) sum[j] = sum2[j] = 0.0;
  for (int s = 0; s < b; s++)
    for (int j = 0; j < h; j++) {
      double v = z[(size_t)s * h + j];
      sum[j] += v, sum2[j] += v * v;
    }
  if (MPI_Allreduce(MPI_IN_PLACE, sum, h, MPI_DOUBLE, MPI_SUM, comm) != MPI_SUCCESS ||
      MPI_Allreduce(MPI_IN_PLACE, sum2, h, MPI_DOUBLE, MPI_SUM, comm) != MPI_SUCCESS)
    return -1;
  for (int j = 0; j < h; j++) {
    double mu = sum[j] / (double)n, var = sum2[j] / (double)n - mu * mu;
    if (var < 0) var = 0;
    inv[j] = (float)(1.0 / sqrt(var + BN_EPS));
    sum[j] = mu;
    rm[j] = (float)((1.0 - BN_MOMENTUM) * rm[j] + BN_MOMENTUM * mu);
    rv[j] = (float)((1.0 - BN_MOMENTUM) * rv[j] + BN_MOMENTUM * var * (double)n / (double)(n > 1 ? n - 1 : 1));
  }
  for (int s = 0; s < b; s++)
    for (int j = 0; j < h; j++) {
      size_t q = (size_t)s * h + j;
      xh[q] = (float)((z[q] - sum[j]) * inv[j]);
      float y = gamma[j] * xh[q] + beta[j];
      a[q] = y > 0.0f ? y : 0.0f;
    }
  return 0;
}

/* d (b x h): on entry dL/da, on exit dL/dz; gradients of gamma/beta (scaled) into dg/db. */
static int bn_relu_backward(float *d, const float *xh, const float *a, const float *gamma, const float *inv, float *dg,
                            float *db, double *sum, double *sum2, int b, int h, int64_t n, float scale, MPI_Comm comm)
{
  for (int j = 0; j < h; j++) sum[j] = sum2[j] = 0.0;
  for (int s = 0; s < b; s++)
    for (int j = 0; j < h; j++) {
      size_t q = (size_t)s * h + j;
      if (a[q] <= 0.0f) d[q] = 0.0f; /* ReLU */
      sum[j] += d[q], sum2[j] += (double)d[q] * xh[q];
    }
  for (int j = 0; j < h; j++) db[j] = (float)(scale * sum[j]), dg[j] = (float)(scale * sum2[j]);
  if (MPI_Allreduce(MPI_IN_PLACE, sum, h, MPI_DOUBLE, MPI_SUM, comm) != MPI_SUCCESS ||
      MPI_Allreduce(MPI_IN_PLACE, sum2, h, MPI_DOUBLE, MPI_SUM, comm) != MPI_SUCCESS)
    return -1;
  for (int s = 0; s < b; s++)
    for (int j = 0; j < h; j++) {
      size_t q = (size_t)s * h + j;
      d[q] = (float)(gamma[j] * inv[j] * (d[q] - sum[j] / (double)n - xh[q] * sum2[j] / (double)n));
    }
  return 0;
}

/* dW (o x i) += scale * d^T x ; dx (b x i) = d W (if dx). */
static void linear_backward(const float *x, const float *W, const float *d, float *dW, float *dbias, float *dx, int b,
                            int i_dim, int o_dim, float scale)
{
  memset(dW, 0, (size_t)o_dim * i_dim * sizeof(float));
  if (dbias) memset(dbias, 0, (size_t)o_dim * sizeof(float));
  for (int s = 0; s < b; s++)
    for (int o = 0; o < o_dim; o++) {
      float g = scale * d[(size_t)s * o_dim + o];
      float *row = dW + (size_t)o * i_dim;
      const float *xr = x + (size_t)s * i_dim;
      for (int k = 0; k < i_dim; k++) row[k] += g * xr[k];
      if (dbias) dbias[o] += g;
    }
  if (!dx) return;
  memset(dx, 0, (size_t)b * i_dim * sizeof(float));
  for (int s = 0; s < b; s++)
    for (int o = 0; o < o_dim; o++) {
      float g = d[(size_t)s * o_dim + o];
      const float *wr = W + (size_t)o * i_dim;
      float *xr = dx + (size_t)s * i_dim;
      for (int k = 0; k < i_dim; k++) xr[k] += g * wr[k];
    }
}

/* Softmax cross-entropy: loss sum, correct count; dl = p - onehot per sample. */
static double softmax_ce(const float *logits, const uint8_t *y, float *dl, int b, int out, int *correct)
{
  double loss = 0.0;
  *correct = 0;
  for (int s = 0; s < b; s++) {
    const float *l = logits + (size_t)s * out;
    int arg = 0;
    float mx = l[0];
    for (int k = 1; k < out; k++)
      if (l[k] > mx) mx = l[k], arg = k;
    double z = 0.0;
    for (int k = 0; k < out; k++) z += exp((double)l[k] - mx);
    loss += log(z) - ((double)l[y[s]] - mx);
    *correct += arg == y[s];
    for (int k = 0; dl && k < out; k++) dl[(size_t)s * out + k] = (float)(exp((double)l[k] - mx) / z) - (k == y[s]);
  }
  return loss;
}

int mlp_train_batch(mlp *m, mlp_work *w, const float *x, const uint8_t *y, int b, int64_t n, float *grads_base,
                    float *params_base, MPI_Comm comm, double *loss_sum, int *correct)
{
  int P;
  MPI_Comm_size(comm, &P);
  float scale = (float)P / (float)n; /* this rank's share of the mean over the global batch */
  mlp g;
  mlp_bind(&g, m->in, m->h1, m->h2, m->out, grads_base);
  (void)params_base;
  linear(x, m->w1, NULL, w->z1, b, m->in, m->h1);
  if (bn_relu_forward(w->z1, w->xh1, w->a1, m->g1, m->b1, m->rm1, m->rv1, w->inv1, w->sum, w->sum2, b, m->h1, n, comm)) return -1;
  linear(w->a1, m->w2, NULL, w->z2, b, m->h1, m->h2);
  if (bn_relu_forward(w->z2, w->xh2, w->a2, m->g2, m->b2, m->rm2, m->rv2, w->inv2, w->sum, w->sum2, b, m->h2, n, comm)) return -1;
  linear(w->a2, m->w3, m->b3, w->logits, b, m->h2, m->out);
  *loss_sum = softmax_ce(w->logits, y, w->dl, b, m->out, correct);

  linear_backward(w->a2, m->w3, w->dl, g.w3, g.b3, w->d2, b, m->h2, m->out, scale);
  if (bn_relu_backward(w->d2, w->xh2, w->a2, m->g2, w->inv2, g.g2, g.b2, w->sum, w->sum2, b, m->h2, n, scale, comm)) return -1;
  linear_backward(w->a1, m->w2, w->d2, g.w2, NULL, w->d1, b, m->h1, m->h2, scale);
  if (bn_relu_backward(w->d1, w->xh1, w->a1, m->g1, w->inv1, g.g1, g.b1, w->sum, w->sum2, b, m->h1, n, scale, comm)) return -1;
  linear_backward(x, m->w1, w->d1, g.w1, NULL, NULL, b, m->in, m->h1, scale);
  /* running statistics never get a gradient */
  memset(g.rm1, 0, sizeof(float) * (size_t)(2 * m->h1 + 2 * m->h2));
  return 0;
}

int mlp_eval(const mlp *m, mlp_work *w, const float *x, const uint8_t *y, int b, double *loss_sum)
{
  linear(x, m->w1, NULL, w->z1, b, m->in, m->h1);
  for (int s = 0; s < b; s++)
    for (int j = 0; j < m->h1; j++) {
      size_t q = (size_t)s * m->h1 + j;
      float v = m->g1[j] * (w->z1[q] - m->rm1[j]) / sqrtf(m->rv1[j] + (float)BN_EPS) + m->b1[j];
      w->a1[q] = v > 0.0f ? v : 0.0f;
    }
  linear(w->a1, m->w2, NULL, w->z2, b, m->h1, m->h2);
  for (int s = 0; s < b; s++)
    for (int j = 0; j < m->h2; j++) {
      size_t q = (size_t)s * m->h2 + j;
      float v = m->g2[j] * (w->z2[q] - m->rm2[j]) / sqrtf(m->rv2[j] + (float)BN_EPS) + m->b2[j];
      w->a2[q] = v > 0.0f ? v : 0.0f;
    }
  linear(w->a2, m->w3, m->b3, w->logits, b, m->h2, m->out);
  int correct = 0;
  double loss = softmax_ce(w->logits, y, NULL, b, m->out, &correct);
  if (loss_sum) *loss_sum = loss;
  return correct;
}
