/*
 * sgdp.c - the SGDP element kernels (MATHS.md "SGDP step"), over one contiguous range.
 *
 * Without nesterov the direction u IS the momentum buffer: the projection acts on the buffer and
 * the projected buffer is what is stored (as in the official package). With nesterov, u is a new
 * value and the buffer is stored unprojected. The gradient enters multiplied by the clipping
 * factor gmul, as in adamp.c.
 */
#include "internal.h"

static adampi__coef coefficients(const adampi_hparams *hp, int64_t t, double wd_factor)
{
  (void)t; /* no bias correction */
  adampi__coef c = {0};
  c.mom = (float)hp->momentum;
  c.omd = (float)(1.0 - hp->dampening);
  c.lr = (float)hp->lr;
  c.decay = hp->weight_decay > 0.0
                ? (float)(1.0 - hp->lr * hp->weight_decay * wd_factor / (1.0 - hp->momentum))
                : 1.0f;
  c.nesterov = hp->nesterov;
  return c;
}

/* <w, u> over n elements with the buffer as this step will make it; writes nothing. Blocks of
 * 256 as in adamp.c. */
ADAMPI_CLONES
static double dot_wu(const float *restrict g, const float *restrict b, const float *restrict w, int64_t n,
                     const adampi__coef *c)
{
  const adampi__coef cl = *c;
  adampi__v8d acc[2] = {{0}, {0}};
  float u[256];
  for (int64_t i = 0; i < n; i += 256) {
    int64_t len = n - i < 256 ? n - i : 256;
    for (int64_t k = 0; k < len; k++) {
      float gi = g[i + k] * cl.gmul;
      float bi = cl.mom * b[i + k] + cl.omd * gi;
      u[k] = cl.nesterov ? gi + cl.mom * bi : bi;
    }
    double sum;
    if (adampi__lanes_dot_block(acc, w + i, u, len, &sum)) return sum;
  }
  return adampi__lanes_total(acc);
}

ADAMPI_CLONES
static void apply(const float *restrict g, float *restrict b, float *restrict w, int64_t n, const adampi__coef *c,
                  int proj, float k)
{
  const adampi__coef cl = *c; /* locals: the stores could alias *c otherwise */
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i] * cl.gmul;               /* the clipped gradient (gmul 1: g) */
    float bi = cl.mom * b[i] + cl.omd * gi;  /* b <- momentum b + (1-dampening) g */
    float u = cl.nesterov ? gi + cl.mom * bi : bi;
    if (proj) u = u - w[i] * k;  /* remove the radial component */
    b[i] = cl.nesterov ? bi : u; /* without nesterov the projected u is the buffer */
    w[i] = w[i] * cl.decay - cl.lr * u;
  }
}

/* A channel-projected row in two passes, once its decision is known (same bits as
 * apply with proj): first the new buffer is stored and <w, u> returned, with u the
 * buffer itself, or (nesterov) g + momentum * buffer written to u; then finish. */
ADAMPI_CLONES
static double buffer_wu(const float *restrict g, float *restrict b, const float *restrict w, float *restrict u,
                        int64_t n, const adampi__coef *c)
{
  const adampi__coef cl = *c;
  adampi__v8d acc[2] = {{0}, {0}};
  for (int64_t i = 0; i < n; i += 256) {
    int64_t len = n - i < 256 ? n - i : 256;
    for (int64_t k = 0; k < len; k++) {
      float gi = g[i + k] * cl.gmul;
      float bi = cl.mom * b[i + k] + cl.omd * gi;
      b[i + k] = bi;
      if (cl.nesterov) u[i + k] = gi + cl.mom * bi;
    }
    double sum;
    if (adampi__lanes_dot_block(acc, w + i, cl.nesterov ? u + i : b + i, len, &sum)) return sum;
  }
  return adampi__lanes_total(acc);
}

/* Second pass: u <- u - w k; without nesterov the projected u is the buffer; w <- w decay - lr u. */
ADAMPI_CLONES
static void finish(float *restrict b, float *restrict w, const float *restrict u, int64_t n, const adampi__coef *c,
                   float k)
{
  const float decay = c->decay, lr = c->lr;
  if (c->nesterov) {
    for (int64_t i = 0; i < n; i++) {
      float p = u[i] - w[i] * k;
      w[i] = w[i] * decay - lr * p;
    }
  } else {
    for (int64_t i = 0; i < n; i++) {
      float p = b[i] - w[i] * k;
      b[i] = p;
      w[i] = w[i] * decay - lr * p;
    }
  }
}

/* The kernel table (internal.h, adampi__kernels): the shard arrays of a span, unpacked. */
static double span_wu(const adampi__span *s, const adampi__coef *c)
{
  return dot_wu(s->g, s->state[ADAMPI__MOMENTUM], s->w, s->n, c);
}

static void span_apply(const adampi__span *s, const adampi__coef *c, int proj, float k)
{
  apply(s->g, s->state[ADAMPI__MOMENTUM], s->w, s->n, c, proj, k);
}

static double span_state_wu(const adampi__span *s, float *u, const adampi__coef *c)
{
  return buffer_wu(s->g, s->state[ADAMPI__MOMENTUM], s->w, u, s->n, c);
}

static void span_finish(const adampi__span *s, const float *u, const adampi__coef *c, float k)
{
  finish(s->state[ADAMPI__MOMENTUM], s->w, u, s->n, c, k);
}

const adampi__kernels adampi__sgdp_kernels = {1, coefficients, span_wu, span_apply, span_state_wu, span_finish};
