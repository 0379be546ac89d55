/*
 * adamp.c - the AdamP element kernels (MATHS.md "AdamP step"), over one contiguous range.
 *
 * Element maths is float32 with the operations in the order the official package performs them;
 * scalars are computed in double and rounded to float once, as PyTorch does for Python scalars.
 * The build disables contraction (-ffp-contract=off), so every clone of these loops rounds alike.
 * The gradient enters every kernel multiplied by the step's clipping factor gmul (a float, as
 * torch's clip_grad_norm_ multiplies the gradients in place; 1.0f when not clipping, which leaves
 * every bit as it was). The only sum, <w,u> over a row, goes in blocks of 256 through 16 float
 * lanes into 16 double lanes (adampi__block_lanes), in an order fixed by the position in the row.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

static adampi__coef coefficients(const adampi_hparams *hp, int64_t t, double wd_factor)
{
  adampi__coef c = {0};
  double bc1 = 1.0 - pow(hp->beta1, (double)t); /* bias corrections of update t */
  double bc2 = 1.0 - pow(hp->beta2, (double)t);
  c.b1 = (float)hp->beta1;
  c.omb1 = (float)(1.0 - hp->beta1);
  c.b2 = (float)hp->beta2;
  c.omb2 = (float)(1.0 - hp->beta2);
  c.sqbc2 = (float)sqrt(bc2);
  c.eps = (float)hp->eps;
  c.lr_bc1 = (float)(hp->lr / bc1);
  c.decay = hp->weight_decay > 0.0 ? (float)(1.0 - hp->lr * hp->weight_decay * wd_factor) : 1.0f;
  c.nesterov = hp->nesterov;
  return c;
}

/* UNIT(cl, X): X, an expression over the local coefficients cl, with cl.sqbc2 the constant 1.0f
 * where it is 1. sqbc2, sqrt(1 - beta2^t) rounded to float, is exactly 1 once beta2^t < 2^-24
 * (from update 16,626 with beta2 = 0.999, 826 with 0.98, 325 with 0.95), and the division by it,
 * direction's first, is then exact: the kernels X is built into divide once less per element there,
 * with the same bits (GCC folds x / 1.0f to x). AdamP's update is bound by the divider on the CPUs
 * measured without AVX-512 (README, "A CPU without AVX-512"), where each 8 elements take a square
 * root and two divisions. */
#define UNIT(cl, X) ((cl).sqbc2 == 1.0f ? ((cl).sqbc2 = 1.0f, (X)) : (X))

/* The update direction u of one element, from the new moments. */
static inline float direction(float g, float m, float v, const adampi__coef *c)
{
  float denom = sqrtf(v) / c->sqbc2 + c->eps; /* sqrt(v)/sqrt(bc2) + eps */
  float num = c->nesterov ? c->b1 * m + c->omb1 * g : m;
  return num / denom;
}

/* The new moments (into *mo, *vo) and the direction of one element: apply's first steps. */
static inline float moments_direction(float g, float m, float v, const adampi__coef *c, float *mo, float *vo)
{
  float gi = g * c->gmul;
  float mi = c->b1 * m + c->omb1 * gi;
  float vi = c->b2 * v + c->omb2 * gi * gi;
  *mo = mi, *vo = vi;
  return direction(gi, mi, vi, c);
}

/* The second half of a channel-projected row, over its float32 parameters (the rows' rounding
 * follows, adampi__round_row): w <- w decay - lr_bc1 (u - w k), the same operations as apply. */
static inline __attribute__((always_inline)) void finish_t(float *restrict w, const float *restrict u, int64_t n,
                                                          const adampi__coef *c, float k)
{
  const float decay = c->decay, lr_bc1 = c->lr_bc1;
  for (int64_t i = 0; i < n; i++) {
    float p = u[i] - w[i] * k; /* remove the radial component */
    w[i] = w[i] * decay - lr_bc1 * p;
  }
}

/* finish_t on the 16 elements at w and u in GCC vector extensions (wide: one 64-byte vector, else
 * two 32-byte ones; the same operations in every lane), for wu_pass's fused second half: there,
 * as a plain loop, it stayed scalar (GCC 12). r16 (a constant): the 16-bit type w is also rounded
 * into, at w16 (adampi__round16), or 0. */
static inline __attribute__((always_inline)) void finish16(float *w, uint16_t *w16, const float *u,
                                                          const adampi__coef *c, float k, int r16, int wide)
{
  float x[16];
  if (wide) {
    adampi__v16f wv, uv;
    memcpy(&wv, w, sizeof wv), memcpy(&uv, u, sizeof uv);
    adampi__v16f p = uv - wv * k, nw = wv * c->decay - c->lr_bc1 * p;
    memcpy(w, &nw, sizeof nw), memcpy(x, &nw, sizeof nw);
  } else {
    for (int h = 0; h < 16; h += 8) {
      adampi__v8fa wv, uv;
      memcpy(&wv, w + h, sizeof wv), memcpy(&uv, u + h, sizeof uv);
      adampi__v8fa p = uv - wv * k, nw = wv * c->decay - c->lr_bc1 * p;
      memcpy(w + h, &nw, sizeof nw), memcpy(x + h, &nw, sizeof nw);
    }
  }
  if (r16) adampi__round16(x, w16, r16, wide);
}

/* <w, u> over n elements with the moments as this step will make them, u computed 16 at a time
 * and added to the lanes while in registers (internal.h, adampi__block_lanes). store: write the
 * new moments and u (the first half of a channel-projected row; w16: the row's 16-bit parameters,
 * adampi__prefetch_w16); else write nothing. fuse (with store): the second half of the previous
 * row of the task, *prev, element by element alongside, its w as float32 and, with r16, rounded
 * into its 16-bit parameters (adampi__prev_row, finish16). gt: the gradients' type, g16's where it
 * is 16-bit (adampi__grad_at). gt, store, fuse, r16 and wide (adampi__wide_vectors, the lanes'
 * form) are constants. */
static inline __attribute__((always_inline)) double wu_pass(const float *restrict g, const uint16_t *restrict g16,
                                                           float gq, int gt, float *restrict m,
                                                           float *restrict v, const float *restrict w,
                                                           float *restrict u_out, const uint16_t *w16, int64_t n,
                                                           const adampi__coef *c, int store,
                                                           const adampi__prev_row *prev, int fuse, int r16,
                                                           int wide, int v3)
{
  const adampi__coef cl = *c; /* locals: stores to m, v, u could alias *c otherwise */
  float *restrict pw = fuse ? prev->w : NULL;
  uint16_t *restrict pw16 = fuse && r16 ? prev->w16 : NULL;
  const float *restrict pu = fuse ? prev->u : NULL;
  const float pk = fuse ? prev->k : 0.0f;
  adampi__v8d acc[2] = {{0}, {0}};            /* wide */
  adampi__v4d acc4[4] = {{0}, {0}, {0}, {0}}; /* not wide: the same lanes in 32-byte vectors */
  for (int64_t i = 0; i < n; i += 256) {
    int64_t end = n - i < 256 ? n : i + 256, k = i;
    adampi__block_lanes lanes = {{0}};
    adampi__block_lanes8 lanes8 = {{{0}, {0}}};
    for (; k + 16 <= end; k += 16) {
      float u[16], taken[16];
      const float *gk = g + k;
      adampi__prefetch_write(m + k, ADAMPI__AHEAD), adampi__prefetch_write(v + k, ADAMPI__AHEAD);
      adampi__prefetch_read(w + k, ADAMPI__AHEAD), adampi__prefetch_grads(g, g16, k, gt, ADAMPI__AHEAD);
      adampi__prefetch_w16(w16, k);
      if (gt) { /* widened first, on their own: GCC 12 then keeps the 16-wide vectors */
        adampi__grads16(g16, k, gq, gt, taken, wide, v3);
        gk = taken;
      }
      for (int j = 0; j < 16; j++) {
        float mi, vi;
        u[j] = moments_direction(gk[j], m[k + j], v[k + j], &cl, &mi, &vi);
        if (store) m[k + j] = mi, v[k + j] = vi, u_out[k + j] = u[j];
      }
      if (wide) adampi__lanes_add16(&lanes, w + k, u);
      else adampi__lanes8_add16(&lanes8, w + k, u);
      if (fuse) finish16(pw + k, r16 ? pw16 + k : NULL, pu + k, &cl, pk, r16, wide);
    }
    if (fuse && k < end) finish_t(pw + k, pu + k, end - k, &cl, pk);
    if (fuse && r16 && k < end) adampi__round_w(pw + k, pw16 + k, end - k, r16);
    for (int j = 0; k + j < end; j++) { /* the row's last, partial chunk */
      float mi, vi;
      float u = moments_direction(adampi__grad_at(g, g16, k + j, gq, gt), m[k + j], v[k + j], &cl, &mi, &vi);
      if (store) m[k + j] = mi, v[k + j] = vi, u_out[k + j] = u;
      if (wide) adampi__lanes_add1(&lanes, j, w[k + j] * u);
      else adampi__lanes8_add1(&lanes8, j, w[k + j] * u);
    }
    if (wide) adampi__lanes_fold(acc, &lanes);
    else adampi__lanes8_fold(acc4, &lanes8);
  }
  return wide ? adampi__lanes_total(acc) : adampi__lanes8_total(acc4);
}

/* <w, u> with the moments as this step will make them; writes nothing. Each kernel below comes in
 * three sets, wide, x86-64-v3 and narrow (internal.h, ADAMPI__KERNEL_SET), each built for its one
 * target, so that the AVX-512 set holds no code for the others' form and the x86-64-v3 set converts
 * float16 by the CPU (wide and v3 are constants: the set's). */
static inline __attribute__((always_inline)) double dot_wu_t(const float *g, const uint16_t *g16, float gq, int gt,
                                                            const float *m, const float *v, const float *w, int64_t n,
                                                            const adampi__coef *c, int wide, int v3)
{
  float *mw = (float *)m, *vw = (float *)v; /* not written: store is 0 */
#define WU(GT) return wu_pass(g, g16, gq, GT, mw, vw, w, NULL, NULL, n, c, 0, NULL, 0, 0, wide, v3)
  ADAMPI__GRAD_CASES(gt, WU);
#undef WU
}
#define DOT_WU_ARGS                                                                                              \
  const float *g, const uint16_t *g16, float gq, int gt, const float *m, const float *v, const float *w, int64_t n, \
      const adampi__coef *c
ADAMPI_CLONES_WIDE static double dot_wu(DOT_WU_ARGS) { return dot_wu_t(g, g16, gq, gt, m, v, w, n, c, 1, 0); }
ADAMPI_CLONES_V3 static double dot_wu_v3(DOT_WU_ARGS) { return dot_wu_t(g, g16, gq, gt, m, v, w, n, c, 0, 1); }
ADAMPI_CLONES_NARROW static double dot_wu_narrow(DOT_WU_ARGS) { return dot_wu_t(g, g16, gq, gt, m, v, w, n, c, 0, 0); }

/* First half of the update of a channel-projected row, once its decision is known: the new
 * moments are stored (m, v are this step's from here on), the directions go to u, and <w, u> is
 * returned, summed like dot_wu; with fuse, the previous row's second half alongside (wu_pass).
 * finish_t completes a row from u and w alone, so that second half reads 2 arrays instead of 5
 * and recomputes nothing. */
static inline __attribute__((always_inline)) double moments_wu_t(const float *g, const uint16_t *g16, float gq,
                                                                int gt, float *m, float *v, const float *w, float *u,
                                                                const uint16_t *w16, int64_t n, const adampi__coef *c,
                                                                const adampi__prev_row *prev, int fuse, int r16,
                                                                int wide, int v3)
{
#define WU(GT) return wu_pass(g, g16, gq, GT, m, v, w, u, w16, n, c, 1, prev, fuse, r16, wide, v3)
  ADAMPI__GRAD_CASES(gt, WU);
#undef WU
}

/* The kernel table's rows (internal.h) over n elements of rows of len (gt a constant): each row's
 * first half fused with the previous row's second half (adampi__prev_row), u alternating between
 * the two halves of the scratch. w is written as float32 and rounded as the parameters' type dt
 * says: into the type r16 (a constant: bfloat16, or float16 in the wide and x86-64-v3 sets) as each
 * chunk is written, else after each row, from cache (adampi__round_row; by round16 where it is
 * set). */
static inline __attribute__((always_inline)) void rows_t(const float *g, const uint16_t *g16, float gq, int gt,
                                                        float *m, float *v, float *w, uint16_t *w16, int dt,
                                                        int64_t n, int64_t len, const adampi__sums *ww, double eps,
                                                        float *u, adampi__round_fn round16, const adampi__coef *c,
                                                        int r16, int wide, int v3)
{
  adampi__prev_row prev = {NULL, NULL, NULL, 0.0f};
  for (int64_t o = 0, r = 0; o <= n; o += len, r++) {
    if (o < n) {
      float *uo = u + (r & 1) * len;
      const uint16_t *g16o = g16 ? g16 + o : NULL, *w16o = w16 ? w16 + o : NULL;
      double wu = r == 0 ? moments_wu_t(g + o, g16o, gq, gt, m + o, v + o, w + o, uo, w16o, len, c, NULL, 0, r16,
                                        wide, v3)
                         : moments_wu_t(g + o, g16o, gq, gt, m + o, v + o, w + o, uo, w16o, len, c, &prev, 1, r16,
                                        wide, v3);
      if (r > 0 && !r16) adampi__round_row(&prev, len, dt, round16);
      prev = (adampi__prev_row){w + o, w16 ? w16 + o : NULL, uo, adampi__radial_coefficient(wu, ww[r].ww, eps)};
    } else { /* the last row's second half */
      finish_t(prev.w, prev.u, len, c, prev.k);
      adampi__round_row(&prev, len, dt, round16);
    }
  }
}

/* rows_t for the gradients' type gt (a constant) and the parameters' (bfloat16 ones with bfloat16
 * or float32 gradients; float16 ones only with float16 gradients or float32 ones). */
static inline __attribute__((always_inline)) void rows_dt(const float *g, const uint16_t *g16, float gq, int gt,
                                                         float *m, float *v, float *w, uint16_t *w16, int dt,
                                                         int64_t n, int64_t len, const adampi__sums *ww, double eps,
                                                         float *u, adampi__round_fn round16, const adampi__coef *c,
                                                         int wide, int v3)
{
  const int type = ADAMPI__GRAD_TYPE(gt);
  if (type == ADAMPI_BFLOAT16 || (type == ADAMPI_FLOAT32 && dt == ADAMPI_BFLOAT16))
    rows_t(g, g16, gq, gt, m, v, w, w16, dt, n, len, ww, eps, u, round16, c, ADAMPI_BFLOAT16, wide, v3);
  else if (ADAMPI__F16_INLINE(wide, v3, dt))
    rows_t(g, g16, gq, gt, m, v, w, w16, dt, n, len, ww, eps, u, round16, c, ADAMPI_FLOAT16, wide, v3);
  else
    rows_t(g, g16, gq, gt, m, v, w, w16, dt, n, len, ww, eps, u, round16, c, 0, wide, v3);
}

static inline __attribute__((always_inline)) void rows_types(const float *g, const uint16_t *g16, float gq, int gt,
                                                            float *m, float *v, float *w, uint16_t *w16, int dt,
                                                            int64_t n, int64_t len, const adampi__sums *ww,
                                                            double eps, float *u, adampi__round_fn round16,
                                                            const adampi__coef *c, int wide, int v3)
{
  adampi__coef cl = *c;
#define ROWS(GT) UNIT(cl, rows_dt(g, g16, gq, GT, m, v, w, w16, dt, n, len, ww, eps, u, round16, &cl, wide, v3))
  ADAMPI__GRAD_CASES(gt, ROWS);
#undef ROWS
}
#define ROWS_ARGS                                                                                             \
  const float *g, const uint16_t *g16, float gq, int gt, float *m, float *v, float *w, uint16_t *w16, int dt, \
      int64_t n, int64_t len, const adampi__sums *ww, double eps, float *u, adampi__round_fn round16,         \
      const adampi__coef *c
ADAMPI_CLONES_WIDE static void rows(ROWS_ARGS)
{
  rows_types(g, g16, gq, gt, m, v, w, w16, dt, n, len, ww, eps, u, round16, c, 1, 0);
}
ADAMPI_CLONES_V3 static void rows_v3(ROWS_ARGS)
{
  rows_types(g, g16, gq, gt, m, v, w, w16, dt, n, len, ww, eps, u, round16, c, 0, 1);
}
ADAMPI_CLONES_NARROW static void rows_narrow(ROWS_ARGS)
{
  rows_types(g, g16, gq, gt, m, v, w, w16, dt, n, len, ww, eps, u, round16, c, 0, 0);
}

/* One element of an AdamP step: moments, direction, optional projection u - w*k (proj a constant),
 * decoupled weight decay, then w moves by lr_bc1 u (MATHS.md "AdamP step", in that order); g the
 * element's gradient, before clipping. */
static inline __attribute__((always_inline)) void apply_one(float g, float *restrict m, float *restrict v,
                                                           float *restrict w, uint16_t *restrict w16, int64_t i,
                                                           const adampi__coef *cl, int proj, float k, int dt)
{
  float gi = g * cl->gmul;                         /* the clipped gradient (gmul 1: g) */
  float mi = cl->b1 * m[i] + cl->omb1 * gi;       /* m <- beta1 m + (1-beta1) g */
  float vi = cl->b2 * v[i] + cl->omb2 * gi * gi;  /* v <- beta2 v + (1-beta2) g^2 */
  float u = direction(gi, mi, vi, cl);
  if (proj) u = u - w[i] * k; /* remove the radial component: u - p <p,u> */
  m[i] = mi;
  v[i] = vi;
  adampi__store_w(w, w16, i, w[i] * cl->decay - cl->lr_bc1 * u, dt);
}

/* One AdamP step over n elements (apply_one each); w rounded into w16 as adampi__store_w says (dt
 * a constant where it is inlined), or each 16 after the block (ADAMPI__ROUNDS16: the wide set; the
 * x86-64-v3 set for float16 parameters, its bfloat16 ones taking the plain loop,
 * adampi__update_blocks); the gradients as in wu_pass, 16-bit ones widened 16 at a time
 * (adampi__grads16) so that the loop vectorizes. cl: the coefficients, a local copy. */
static inline __attribute__((always_inline)) void apply_body(const float *restrict g, const uint16_t *restrict g16,
                                                            float gq, int gt, float *restrict m,
                                                            float *restrict v, float *restrict w,
                                                            uint16_t *restrict w16, int64_t n, const adampi__coef *cl,
                                                            int proj, float k, int dt, int wide, int v3)
{
  int64_t i = 0;
  for (; adampi__update_blocks(gt, dt, 0) && i + 16 <= n; i += 16) { /* the rest: the plain loop */
    float buf[16];
    adampi__prefetch_write(m + i, ADAMPI__AHEAD), adampi__prefetch_write(v + i, ADAMPI__AHEAD);
    adampi__prefetch_write(w + i, ADAMPI__AHEAD);
    const float *gk = adampi__grads_ahead16(g, g16, i, gq, gt, buf, wide, v3, ADAMPI__AHEAD);
    const int r16 = ADAMPI__ROUNDS16(wide, v3, dt), d = r16 ? ADAMPI_FLOAT32 : dt; /* r16: rounded after the 16 */
    if (proj)
      for (int j = 0; j < 16; j++) apply_one(gk[j], m, v, w, w16, i + j, cl, 1, k, d);
    else
      for (int j = 0; j < 16; j++) apply_one(gk[j], m, v, w, w16, i + j, cl, 0, k, d);
    if (r16) adampi__round16(w + i, w16 + i, dt, wide);
  }
  for (; i < n; i++) apply_one(adampi__grad_at(g, g16, i, gq, gt), m, v, w, w16, i, cl, proj, k, dt);
}

/* apply_body with proj and nesterov constants in the narrower clones (wide: adampi__wide_vectors, a
 * constant): they vectorize no loop with a test of either inside, where the AVX-512 clones do, with
 * masks (AMD EPYC, AdamP with bfloat16 gradients on the AVX2 clones: the update took 10x the
 * AVX-512 clones' time with the tests inside); in every set, with UNIT. */
static inline __attribute__((always_inline)) void apply_t(const float *restrict g, const uint16_t *restrict g16,
                                                         float gq, int gt, float *restrict m,
                                                         float *restrict v, float *restrict w,
                                                         uint16_t *restrict w16, int64_t n, const adampi__coef *c,
                                                         int proj, float k, int dt, int wide, int v3)
{
  if (wide) {
    adampi__coef clw = *c;
    UNIT(clw, apply_body(g, g16, gq, gt, m, v, w, w16, n, &clw, proj, k, dt, 1, 0));
    return;
  }
  adampi__coef cl = *c;
#define BODY(PROJ, NESTEROV) \
  (cl.nesterov = NESTEROV, UNIT(cl, apply_body(g, g16, gq, gt, m, v, w, w16, n, &cl, PROJ, k, dt, 0, v3)))
  if (proj) cl.nesterov ? BODY(1, 1) : BODY(1, 0);
  else cl.nesterov ? BODY(0, 1) : BODY(0, 0);
#undef BODY
}

/* apply_t for the parameters' type, gt a constant (wide: adampi__wide_vectors, a constant too). */
static inline __attribute__((always_inline)) void apply_dt(const float *g, const uint16_t *g16, float gq, int gt,
                                                          float *m, float *v, float *w, uint16_t *w16, int dt,
                                                          int64_t n, const adampi__coef *c, int proj, float k,
                                                          int wide, int v3)
{
  const int type = ADAMPI__GRAD_TYPE(gt);
  if (type == ADAMPI_BFLOAT16) /* with bfloat16 parameters */
    apply_t(g, g16, gq, gt, m, v, w, w16, n, c, proj, k, ADAMPI_BFLOAT16, wide, v3);
  else if (type == ADAMPI_FLOAT16 && dt == ADAMPI_FLOAT16) /* rounded here (adampi__round16, or each element) */
    apply_t(g, g16, gq, gt, m, v, w, w16, n, c, proj, k, ADAMPI_FLOAT16, wide, v3);
  else if (type == ADAMPI_FLOAT16)
    apply_t(g, g16, gq, gt, m, v, w, NULL, n, c, proj, k, ADAMPI_FLOAT32, wide, v3);
  else if (dt == ADAMPI_BFLOAT16) apply_t(g, NULL, 1.0f, 0, m, v, w, w16, n, c, proj, k, ADAMPI_BFLOAT16, wide, v3);
  else if (dt == ADAMPI_FLOAT16) apply_t(g, NULL, 1.0f, 0, m, v, w, w16, n, c, proj, k, ADAMPI_FLOAT16, wide, v3);
  else apply_t(g, NULL, 1.0f, 0, m, v, w, NULL, n, c, proj, k, ADAMPI_FLOAT32, wide, v3);
}

/* apply_dt for the gradients' type and scaling, then the parameters'. */
static inline __attribute__((always_inline)) void apply_types(const float *g, const uint16_t *g16, float gq, int gt,
                                                             float *m, float *v, float *w, uint16_t *w16, int dt,
                                                             int64_t n, const adampi__coef *c, int proj, float k,
                                                             int wide, int v3)
{
#define DT(GT) apply_dt(g, g16, gq, GT, m, v, w, w16, dt, n, c, proj, k, wide, v3)
  ADAMPI__GRAD_CASES(gt, DT);
#undef DT
}

#define APPLY_ARGS                                                                                 \
  const float *g, const uint16_t *g16, float gq, int gt, float *m, float *v, float *w, uint16_t *w16, \
      int dt, int64_t n, const adampi__coef *c, int proj, float k
ADAMPI_CLONES_WIDE static void apply(APPLY_ARGS)
{
  apply_types(g, g16, gq, gt, m, v, w, w16, dt, n, c, proj, k, 1, 0);
}
ADAMPI_CLONES_V3 static void apply_v3(APPLY_ARGS)
{
  apply_types(g, g16, gq, gt, m, v, w, w16, dt, n, c, proj, k, 0, 1);
}
ADAMPI_CLONES_NARROW static void apply_narrow(APPLY_ARGS)
{
  apply_types(g, g16, gq, gt, m, v, w, w16, dt, n, c, proj, k, 0, 0);
}

/* The kernel table (internal.h, adampi__kernels): the shard arrays of a span, unpacked. */
static double span_wu(const adampi__span *s, const adampi__coef *c)
{
  return ADAMPI__KERNEL_SET(dot_wu, dot_wu_v3, dot_wu_narrow)(s->g, s->g16, s->gq, s->g16_type,
                                                              s->state[ADAMPI__EXP_AVG], s->state[ADAMPI__EXP_AVG_SQ],
                                                              s->w, s->n, c);
}

static void span_apply(const adampi__span *s, const adampi__coef *c, int proj, float k)
{
  ADAMPI__KERNEL_SET(apply, apply_v3, apply_narrow)(s->g, s->g16, s->gq, s->g16_type, s->state[ADAMPI__EXP_AVG],
                                                    s->state[ADAMPI__EXP_AVG_SQ], s->w, s->w16, s->dtype16, s->n, c,
                                                    proj, k);
}

static void span_rows(const adampi__span *s, int64_t len, const adampi__sums *ww, double eps, float *u,
                      adampi__round_fn round16, const adampi__coef *c)
{
  ADAMPI__KERNEL_SET(rows, rows_v3, rows_narrow)(s->g, s->g16, s->gq, s->g16_type, s->state[ADAMPI__EXP_AVG],
                                                 s->state[ADAMPI__EXP_AVG_SQ], s->w, s->w16, s->dtype16, s->n, len, ww,
                                                 eps, u, round16, c);
}

const adampi__kernels adampi__adamp_kernels = {2, coefficients, span_wu, span_apply, span_rows};
