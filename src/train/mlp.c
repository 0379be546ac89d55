/*
 * mlp.c - forward and backward of the trainer's network (see mlp.h). Dimensions: b samples in
 * this rank's slice, n the global batch, in/h1/h2/out the layer widths. Matrix products are
 * written as rows of axpy (contiguous inner loops the compiler vectorizes without reassociation).
 *
 * Sums over the samples of the global batch never depend on how many ranks share it: the batch
 * is cut into MLP_SLICES fixed slices; every sum is taken slice by slice (in sample order), then
 * over the slices by a fixed pairwise tree, first inside a rank (its slices form whole subtrees),
 * then across ranks by recursive doubling (whose pairs are the tree's). So the gradient of a
 * global batch is bitwise the same on 1, 2, 4 or 8 ranks, and so is a resumed run.
 */
#include "mlp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1

struct mlp_work {
  int max_b;
  int nparams;        /* floats of the flat layout (the parameters) */
  float *gslices;     /* MLP_SLICES gradient vectors, one per local slice */
  float *ftmp;        /* nparams: the partner's vector in the cross-rank tree */
  double *dslices;    /* MLP_SLICES x 2 hmax: per-slice BatchNorm sums */
  double *dtmp;       /* 2 hmax */
  float *z1, *xh1, *a1, *z2, *xh2, *a2, *logits; /* forward activations */
  float *d1, *d2, *dl;                           /* gradients w.r.t. z1/a1, z2/a2, logits */
  double *sum, *sum2;                            /* per-feature sums of the synchronized BN */
  float *inv1, *inv2;                            /* 1 / sqrt(var + eps) of the batch, per feature */
};

void mlp_tensors(int in, int h1, int h2, int out, mlp_tensor t[MLP_TENSORS])
{
  const mlp_tensor table[MLP_TENSORS] = {
    {"fc1.weight", 2, {h1, in}}, {"bn1.weight", 1, {h1, 0}}, {"bn1.bias", 1, {h1, 0}}, {"fc2.weight", 2, {h2, h1}},
    {"bn2.weight", 1, {h2, 0}},  {"bn2.bias", 1, {h2, 0}},   {"fc3.weight", 2, {out, h2}}, {"fc3.bias", 1, {out, 0}}};
  memcpy(t, table, sizeof table);
}

void mlp_buffers(int h1, int h2, mlp_buffer b[MLP_BUFFERS])
{
  const mlp_buffer table[MLP_BUFFERS] = {
    {"bn1.running_mean", h1}, {"bn1.running_var", h1}, {"bn2.running_mean", h2}, {"bn2.running_var", h2}};
  memcpy(b, table, sizeof table);
}

int64_t mlp_num_params(int in, int h1, int h2, int out)
{
  return (int64_t)h1 * in + 2 * h1 + (int64_t)h2 * h1 + 2 * h2 + (int64_t)out * h2 + out;
}

int64_t mlp_num_stats(int h1, int h2) { return 2 * (int64_t)h1 + 2 * (int64_t)h2; }

void mlp_bind(mlp *m, int in, int h1, int h2, int out, float *params, float *stats)
{
  m->in = in, m->h1 = h1, m->h2 = h2, m->out = out;
  float *p = params;
  m->w1 = p, p += (size_t)h1 * in;
  m->g1 = p, p += h1;
  m->b1 = p, p += h1;
  m->w2 = p, p += (size_t)h2 * h1;
  m->g2 = p, p += h2;
  m->b2 = p, p += h2;
  m->w3 = p, p += (size_t)out * h2;
  m->b3 = p;
  m->rm1 = m->rv1 = m->rm2 = m->rv2 = NULL;
  if (!stats) return;
  m->rm1 = stats, m->rv1 = stats + h1, m->rm2 = stats + 2 * h1, m->rv2 = stats + 2 * h1 + h2;
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
  w->nparams = (int)mlp_num_params(m->in, m->h1, m->h2, m->out);
  w->gslices = calloc((size_t)MLP_SLICES * w->nparams, sizeof(float));
  w->ftmp = calloc((size_t)w->nparams, sizeof(float));
  w->dslices = calloc((size_t)MLP_SLICES * 2 * hmax, sizeof(double));
  w->dtmp = calloc(2 * (size_t)hmax, sizeof(double));
  if (!w->gslices || !w->ftmp || !w->dslices || !w->dtmp || !w->z1 || !w->xh1 || !w->a1 || !w->z2 || !w->xh2 || !w->a2 || !w->logits || !w->dl || !w->d1 || !w->d2 || !w->sum ||
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
  free(w->gslices), free(w->ftmp), free(w->dslices), free(w->dtmp);
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

/* Pairwise tree over c local slices (c a power of two) of vectors of n doubles, into v[0..n). */
static void tree_slices_d(double *v, int c, int n)
{
  for (int step = 1; step < c; step *= 2)
    for (int k = 0; k + step < c; k += 2 * step)
      for (int j = 0; j < n; j++) v[(size_t)k * n + j] += v[(size_t)(k + step) * n + j];
}

static void tree_slices_f(float *v, int c, int n)
{
  for (int step = 1; step < c; step *= 2)
    for (int k = 0; k + step < c; k += 2 * step)
      for (int j = 0; j < n; j++) v[(size_t)k * n + j] += v[(size_t)(k + step) * n + j];
}

/* Recursive doubling over a power-of-two number of ranks: after round k every rank holds the sum
 * of its aligned block of 2^(k+1) ranks, added as the tree adds it (a + b == b + a in IEEE). */
static int tree_ranks_d(double *v, double *tmp, int n, MPI_Comm comm)
{
  int P, r;
  MPI_Comm_size(comm, &P);
  MPI_Comm_rank(comm, &r);
  for (int bit = 1; bit < P; bit *= 2) {
    if (MPI_Sendrecv(v, n, MPI_DOUBLE, r ^ bit, 31, tmp, n, MPI_DOUBLE, r ^ bit, 31, comm, MPI_STATUS_IGNORE) != MPI_SUCCESS)
      return -1;
    for (int j = 0; j < n; j++) v[j] += tmp[j];
  }
  return 0;
}

static int tree_ranks_f(float *v, float *tmp, int n, MPI_Comm comm)
{
  int P, r;
  MPI_Comm_size(comm, &P);
  MPI_Comm_rank(comm, &r);
  for (int bit = 1; bit < P; bit *= 2) {
    if (MPI_Sendrecv(v, n, MPI_FLOAT, r ^ bit, 32, tmp, n, MPI_FLOAT, r ^ bit, 32, comm, MPI_STATUS_IGNORE) != MPI_SUCCESS)
      return -1;
    for (int j = 0; j < n; j++) v[j] += tmp[j];
  }
  return 0;
}

/* Global sums over the batch of two per-feature quantities, slice by slice then by the tree:
 * sa[j] = sum of a[s][j], sb[j] = sum of a[s][j] * b[s][j] (b NULL: of a[s][j]^2). */
static int global_sums(const float *a, const float *b, int nb, int slice, int h, mlp_work *w, double *sa, double *sb,
                       MPI_Comm comm)
{
  int c = nb / slice;
  for (int k = 0; k < c; k++) {
    double *ss = w->dslices + (size_t)k * 2 * h;
    for (int j = 0; j < 2 * h; j++) ss[j] = 0.0;
    for (int s = k * slice; s < (k + 1) * slice; s++)
      for (int j = 0; j < h; j++) {
        double x = a[(size_t)s * h + j];
        ss[j] += x;
        ss[h + j] += x * (b ? (double)b[(size_t)s * h + j] : x);
      }
  }
  tree_slices_d(w->dslices, c, 2 * h);
  if (tree_ranks_d(w->dslices, w->dtmp, 2 * h, comm)) return -1;
  for (int j = 0; j < h; j++) sa[j] = w->dslices[j], sb[j] = w->dslices[h + j];
  return 0;
}

/* Synchronized batch normalization over the global batch, then ReLU. */
static int bn_relu_forward(const float *z, float *xh, float *a, const float *gamma, const float *beta, float *rm, float *rv,
                           float *inv, mlp_work *w, int b, int slice, int h, int64_t n, MPI_Comm comm)
{
  double *sum = w->sum, *sum2 = w->sum2;
  if (global_sums(z, NULL, b, slice, h, w, sum, sum2, comm)) return -1;
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

/* d (b x h): on entry dL/da per sample, on exit dL/dz; the global-batch sums of the BatchNorm
 * parameters' gradients (unscaled) into dg/db. */
static int bn_relu_backward(float *d, const float *xh, const float *a, const float *gamma, const float *inv, float *dg,
                            float *db, mlp_work *w, int b, int slice, int h, int64_t n, MPI_Comm comm)
{
  double *sum = w->sum, *sum2 = w->sum2;
  for (int s = 0; s < b; s++)
    for (int j = 0; j < h; j++) {
      size_t q = (size_t)s * h + j;
      if (a[q] <= 0.0f) d[q] = 0.0f; /* ReLU */
    }
  if (global_sums(d, xh, b, slice, h, w, sum, sum2, comm)) return -1;
  for (int j = 0; j < h; j++) db[j] = (float)sum[j], dg[j] = (float)sum2[j];
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
                    MPI_Comm comm, double *loss_sum, int *correct)
{
  int P;
  MPI_Comm_size(comm, &P);
  int slice = (int)(n / MLP_SLICES), c = b / slice; /* this rank's slices */
  if (n % MLP_SLICES || (int64_t)b * P != n || slice * c != b || (P & (P - 1)) || P > MLP_SLICES) return -2;
  linear(x, m->w1, NULL, w->z1, b, m->in, m->h1);
  if (bn_relu_forward(w->z1, w->xh1, w->a1, m->g1, m->b1, m->rm1, m->rv1, w->inv1, w, b, slice, m->h1, n, comm)) return -1;
  linear(w->a1, m->w2, NULL, w->z2, b, m->h1, m->h2);
  if (bn_relu_forward(w->z2, w->xh2, w->a2, m->g2, m->b2, m->rm2, m->rv2, w->inv2, w, b, slice, m->h2, n, comm)) return -1;
  linear(w->a2, m->w3, m->b3, w->logits, b, m->h2, m->out);
  *loss_sum = softmax_ce(w->logits, y, w->dl, b, m->out, correct);

  /* Backward, slice by slice for the Linear weights: each slice's sums in its own vector. */
  memset(w->gslices, 0, (size_t)c * w->nparams * sizeof(float));
  float bn_g[4][1024]; /* global-batch gradients of BatchNorm gamma/beta: h <= 1024 */
  mlp gk;
  for (int k = 0; k < c; k++) {
    mlp_bind(&gk, m->in, m->h1, m->h2, m->out, w->gslices + (size_t)k * w->nparams, NULL);
    size_t s0 = (size_t)k * slice;
    linear_backward(w->a2 + s0 * m->h2, m->w3, w->dl + s0 * m->out, gk.w3, gk.b3, w->d2 + s0 * m->h2, slice, m->h2, m->out, 1.0f);
  }
  if (bn_relu_backward(w->d2, w->xh2, w->a2, m->g2, w->inv2, bn_g[2], bn_g[3], w, b, slice, m->h2, n, comm)) return -1;
  for (int k = 0; k < c; k++) {
    mlp_bind(&gk, m->in, m->h1, m->h2, m->out, w->gslices + (size_t)k * w->nparams, NULL);
    size_t s0 = (size_t)k * slice;
    linear_backward(w->a1 + s0 * m->h1, m->w2, w->d2 + s0 * m->h2, gk.w2, NULL, w->d1 + s0 * m->h1, slice, m->h1, m->h2, 1.0f);
  }
  if (bn_relu_backward(w->d1, w->xh1, w->a1, m->g1, w->inv1, bn_g[0], bn_g[1], w, b, slice, m->h1, n, comm)) return -1;
  for (int k = 0; k < c; k++) {
    mlp_bind(&gk, m->in, m->h1, m->h2, m->out, w->gslices + (size_t)k * w->nparams, NULL);
    size_t s0 = (size_t)k * slice;
    linear_backward(x + s0 * m->in, m->w1, w->d1 + s0 * m->h1, gk.w1, NULL, NULL, slice, m->in, m->h1, 1.0f);
  }
  /* The slices' tree inside the rank, then across ranks: every rank holds the global sums. */
  tree_slices_f(w->gslices, c, w->nparams);
  if (tree_ranks_f(w->gslices, w->ftmp, w->nparams, comm)) return -1;
  memcpy(grads_base, w->gslices, (size_t)w->nparams * sizeof(float));
  mlp g;
  mlp_bind(&g, m->in, m->h1, m->h2, m->out, grads_base, NULL);
  memcpy(g.g1, bn_g[0], sizeof(float) * (size_t)m->h1), memcpy(g.b1, bn_g[1], sizeof(float) * (size_t)m->h1);
  memcpy(g.g2, bn_g[2], sizeof(float) * (size_t)m->h2), memcpy(g.b2, bn_g[3], sizeof(float) * (size_t)m->h2);
  /* the mean over the global batch */
  float inv_n = 1.0f / (float)n;
  for (int i = 0; i < w->nparams; i++) grads_base[i] *= inv_n;
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
