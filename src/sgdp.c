/*
 * sgdp.c - the SGDP element kernels (MATHS.md "SGDP step"), over one contiguous range.
 *
 * Without nesterov the direction u IS the momentum buffer: the projection acts on the buffer and
 * the projected buffer is what is stored (as in the official package). With nesterov, u is a new
 * value and the buffer is stored unprojected. The gradient enters multiplied by the clipping
 * factor gmul, as in adamp.c.
 */
#include "internal.h"

#include <string.h>

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

/* The new buffer (into *bo) and the direction of one element: apply's first steps (nesterov:
 * c->nesterov, passed as a constant so that the callers' loops vectorize). */
static inline float buffer_direction(float g, float b, const adampi__coef *c, int nesterov, float *bo)
{
  float gi = g * c->gmul;
  float bi = c->mom * b + c->omd * gi;
  *bo = bi;
  return nesterov ? gi + c->mom * bi : bi;
}

typedef float v16f __attribute__((vector_size(64), aligned(4)));

/* The 16 gradients from k into *out, as adampi__grad_at gives them (gt a constant). */
static inline void grads16(const float *g, const uint16_t *g16, int64_t k, float gq, int gt, v16f *out)
{
  if (!gt) {
    *out = *(const v16f *)(g + k);
    return;
  }
  float t[16];
  adampi__grads16(g16, k, gq, gt, t, 1, 0);
  memcpy(out, t, sizeof t);
}

/* buffer_direction on the 16 elements of *g and at b, into *bo and *uo (GCC vector extensions: the
 * same operations, lane by lane; gcc 12 left the plain loop's form scalar here). Pointers, not
 * vector values, cross the call, so that no clone's ABI depends on its vector width. */
static inline void buffer_direction16(const v16f *g, const float *b, const adampi__coef *c, int nesterov, v16f *bo,
                                      v16f *uo)
{
  v16f gi = *g * c->gmul;
  v16f bi = c->mom * *(const v16f *)b + c->omd * gi;
  *bo = bi;
  *uo = nesterov ? gi + c->mom * bi : bi;
}

/* buffer_direction16 on 8 elements, in 32-byte vectors: the narrower clones' form (wu_pass). */
typedef float v8f __attribute__((vector_size(32), aligned(4)));
static inline void buffer_direction8(const float *g, const float *b, const adampi__coef *c, int nesterov, v8f *bo,
                                     v8f *uo)
{
  v8f gi = *(const v8f *)g * c->gmul;
  v8f bi = c->mom * *(const v8f *)b + c->omd * gi;
  *bo = bi;
  *uo = nesterov ? gi + c->mom * bi : bi;
}

/* The second half of a channel-projected row, over its float32 parameters (the rows' rounding
 * follows, adampi__round_row): p = d - w k from its directions d (with nesterov u; without, the
 * buffer itself, which takes the projected p, as the official package stores it); w <- w decay -
 * lr p. nesterov is a constant where it is inlined. */
static inline __attribute__((always_inline)) void finish_t(float *restrict d, float *restrict w, int64_t n,
                                                          const adampi__coef *c, float k, int nesterov)
{
  const float decay = c->decay, lr = c->lr;
  for (int64_t i = 0; i < n; i++) {
    float p = d[i] - w[i] * k;
    if (!nesterov) d[i] = p;
    w[i] = w[i] * decay - lr * p;
  }
}

/* finish_t on the 16 elements at d and w in GCC vector extensions (wide: one 64-byte vector, else
 * two 32-byte ones; the same operations in every lane), for wu_pass's fused second half: there,
 * as a plain loop, it stayed scalar (GCC 12). r16 (a constant): the 16-bit type w is also rounded
 * into, at w16 (adampi__round16), or 0. */
static inline __attribute__((always_inline)) void finish16(float *d, float *w, uint16_t *w16, const adampi__coef *c,
                                                          float k, int nesterov, int r16, int wide)
{
  float x[16];
  if (wide) {
    v16f wv = *(const v16f *)w, p = *(const v16f *)d - wv * k;
    if (!nesterov) *(v16f *)d = p;
    v16f nw = wv * c->decay - c->lr * p;
    *(v16f *)w = nw;
    memcpy(x, &nw, sizeof nw);
  } else {
    for (int h = 0; h < 16; h += 8) {
      v8f wv = *(const v8f *)(w + h), p = *(const v8f *)(d + h) - wv * k;
      if (!nesterov) *(v8f *)(d + h) = p;
      v8f nw = wv * c->decay - c->lr * p;
      *(v8f *)(w + h) = nw;
      memcpy(x + h, &nw, sizeof nw);
    }
  }
  if (r16) adampi__round16(x, w16, r16, wide);
}

/* <w, u> over n elements with the buffer as this step will make it, u added to the lanes 16 at a
 * time while in registers, as in adamp.c. store: write the new buffer and, with nesterov, u (and
 * prefetch w16, the row's 16-bit parameters: adampi__prefetch_w16); else write nothing. nesterov
 * must be c->nesterov (a constant here, so that the loops vectorize); gt: the gradients' type,
 * g16's where it is 16-bit (adampi__grad_at; a constant too); wide: adampi__wide_vectors (a
 * constant), the form of the lanes and of the 16 elements' arithmetic: 64-byte vectors, or two
 * 32-byte ones (same operations, same bits; GCC 12 left a plain loop over the 16 scalar there).
 * fuse (with store): the second half of the previous row of the task, *prev, element by element
 * alongside, its w as float32 and, with r16, rounded into its 16-bit parameters
 * (adampi__prev_row, its u the d of finish_t); fuse and r16 are constants too. */
static inline __attribute__((always_inline)) double wu_pass(const float *restrict g, const uint16_t *restrict g16,
                                                           float gq, int gt, float *restrict b,
                                                           const float *restrict w, float *restrict u_out,
                                                           const uint16_t *w16, int64_t n, const adampi__coef *c,
                                                           int store, int nesterov, const adampi__prev_row *prev,
                                                           int fuse, int r16, int wide, int v3)
{
  const adampi__coef cl = *c; /* locals: the stores could alias *c otherwise */
  float *restrict pw = fuse ? prev->w : NULL, *restrict pd = fuse ? prev->u : NULL;
  uint16_t *restrict pw16 = fuse && r16 ? prev->w16 : NULL;
  const float pk = fuse ? prev->k : 0.0f;
  adampi__v8d acc[2] = {{0}, {0}};            /* wide */
  adampi__v4d acc4[4] = {{0}, {0}, {0}, {0}}; /* not wide */
  for (int64_t i = 0; i < n; i += 256) {
    int64_t end = n - i < 256 ? n : i + 256, k = i;
    adampi__block_lanes lanes = {{0}};
    adampi__block_lanes8 lanes8 = {{{0}, {0}}};
    for (; k + 16 <= end; k += 16) {
      adampi__prefetch_write(b + k, ADAMPI__AHEAD), adampi__prefetch_read(w + k, ADAMPI__AHEAD);
      adampi__prefetch_grads(g, g16, k, gt, ADAMPI__AHEAD);
      adampi__prefetch_w16(w16, k);
      if (wide) {
        v16f gk, bi, u;
        grads16(g, g16, k, gq, gt, &gk);
        buffer_direction16(&gk, b + k, &cl, nesterov, &bi, &u);
        if (store) *(v16f *)(b + k) = bi;
        if (store && nesterov) *(v16f *)(u_out + k) = u;
        adampi__lanes_add16(&lanes, w + k, (const float *)&u);
      } else {
        float taken[16];
        const float *gk = g + k;
        v8f u[2];
        if (gt) adampi__grads16(g16, k, gq, gt, taken, 0, v3), gk = taken;
        for (int h = 0; h < 2; h++) {
          v8f bi;
          buffer_direction8(gk + 8 * h, b + k + 8 * h, &cl, nesterov, &bi, &u[h]);
          if (store) *(v8f *)(b + k + 8 * h) = bi;
          if (store && nesterov) *(v8f *)(u_out + k + 8 * h) = u[h];
        }
        adampi__lanes8_add16(&lanes8, w + k, (const float *)u);
      }
      if (fuse) finish16(pd + k, pw + k, r16 ? pw16 + k : NULL, &cl, pk, nesterov, r16, wide);
    }
    if (fuse && k < end) finish_t(pd + k, pw + k, end - k, &cl, pk, nesterov);
    if (fuse && r16 && k < end) adampi__round_w(pw + k, pw16 + k, end - k, r16);
    for (int j = 0; k + j < end; j++) { /* the row's last, partial chunk */
      float bi, u = buffer_direction(adampi__grad_at(g, g16, k + j, gq, gt), b[k + j], &cl, nesterov, &bi);
      if (store) b[k + j] = bi;
      if (store && nesterov) u_out[k + j] = u;
      if (wide) adampi__lanes_add1(&lanes, j, w[k + j] * u);
      else adampi__lanes8_add1(&lanes8, j, w[k + j] * u);
    }
    if (wide) adampi__lanes_fold(acc, &lanes);
    else adampi__lanes8_fold(acc4, &lanes8);
  }
  return wide ? adampi__lanes_total(acc) : adampi__lanes8_total(acc4);
}

/* <w, u> with the buffer as this step will make it; writes nothing. Each kernel below comes in three
 * sets, wide, x86-64-v3 and narrow, as in adamp.c. */
static inline __attribute__((always_inline)) double dot_wu_t(const float *g, const uint16_t *g16, float gq, int gt,
                                                            const float *b, const float *w, int64_t n,
                                                            const adampi__coef *c, int wide, int v3)
{
#define WU(GT)                                                                                \
  return c->nesterov ? wu_pass(g, g16, gq, GT, (float *)b, w, NULL, NULL, n, c, 0, 1, NULL, 0, 0, wide, v3) \
                     : wu_pass(g, g16, gq, GT, (float *)b, w, NULL, NULL, n, c, 0, 0, NULL, 0, 0, wide, v3)
  ADAMPI__GRAD_CASES(gt, WU);
#undef WU
}
#define DOT_WU_ARGS \
  const float *g, const uint16_t *g16, float gq, int gt, const float *b, const float *w, int64_t n, const adampi__coef *c
ADAMPI_CLONES_WIDE static double dot_wu(DOT_WU_ARGS) { return dot_wu_t(g, g16, gq, gt, b, w, n, c, 1, 0); }
ADAMPI_CLONES_V3 static double dot_wu_v3(DOT_WU_ARGS) { return dot_wu_t(g, g16, gq, gt, b, w, n, c, 0, 1); }
ADAMPI_CLONES_NARROW static double dot_wu_narrow(DOT_WU_ARGS) { return dot_wu_t(g, g16, gq, gt, b, w, n, c, 0, 0); }

/* One element of an SGDP step, g its gradient before clipping (proj a constant). */
static inline __attribute__((always_inline)) void apply_one(float g, float *restrict b, float *restrict w,
                                                           uint16_t *restrict w16, int64_t i, const adampi__coef *cl,
                                                           int proj, float k, int dt)
{
  float gi = g * cl->gmul;                 /* the clipped gradient (gmul 1: g) */
  float bi = cl->mom * b[i] + cl->omd * gi; /* b <- momentum b + (1-dampening) g */
  float u = cl->nesterov ? gi + cl->mom * bi : bi;
  if (proj) u = u - w[i] * k;  /* remove the radial component */
  b[i] = cl->nesterov ? bi : u; /* without nesterov the projected u is the buffer */
  adampi__store_w(w, w16, i, w[i] * cl->decay - cl->lr * u, dt);
}

/* apply_one over n elements; w rounded into w16 as adampi__store_w says (dt a constant where it is
 * inlined), or each 16 after the block (ADAMPI__ROUNDS16: the wide set, which goes in blocks for
 * every type, and the x86-64-v3 set's float16 parameters); the gradients as in wu_pass, 16-bit
 * ones widened 16 at a time (adampi__grads16) so that the loop vectorizes. cl: the coefficients, a
 * local copy. */
static inline __attribute__((always_inline)) void apply_body(const float *restrict g, const uint16_t *restrict g16,
                                                            float gq, int gt, float *restrict b,
                                                            float *restrict w, uint16_t *restrict w16, int64_t n,
                                                            const adampi__coef *cl, int proj, float k, int dt, int wide,
                                                            int v3)
{
  const int ahead = proj ? ADAMPI__AHEAD : ADAMPI__SGD_APPLY_AHEAD(wide); /* adampi__prefetch_read */
  int64_t i = 0;
  for (; adampi__update_blocks(gt, dt, wide) && i + 16 <= n; i += 16) { /* the rest: the plain loop */
    float buf[16];
    adampi__prefetch_write(b + i, ahead), adampi__prefetch_write(w + i, ahead);
    const float *gk = adampi__grads_ahead16(g, g16, i, gq, gt, buf, wide, v3, ahead);
    const int r16 = ADAMPI__ROUNDS16(wide, v3, dt), d = r16 ? ADAMPI_FLOAT32 : dt; /* r16: rounded after the 16 */
    if (proj)
      for (int j = 0; j < 16; j++) apply_one(gk[j], b, w, w16, i + j, cl, 1, k, d);
    else
      for (int j = 0; j < 16; j++) apply_one(gk[j], b, w, w16, i + j, cl, 0, k, d);
    if (r16) adampi__round16(w + i, w16 + i, dt, wide);
  }
  for (; i < n; i++) apply_one(adampi__grad_at(g, g16, i, gq, gt), b, w, w16, i, cl, proj, k, dt);
}

/* apply_body with proj and nesterov constants in the narrower clones' plain loop (wide:
 * adampi__wide_vectors, a constant), as adamp.c's apply_t does and for the same reason; their loop
 * of blocks (adampi__update_blocks) ran faster without (AMD EPYC, the AVX2 clones on ResNet-50
 * shapes: SGDP's update with float32 gradients took 1.9x the AVX-512 clones' time with the
 * constants, 1.0x without). */
static inline __attribute__((always_inline)) void apply_t(const float *restrict g, const uint16_t *restrict g16,
                                                         float gq, int gt, float *restrict b,
                                                         float *restrict w, uint16_t *restrict w16, int64_t n,
                                                         const adampi__coef *c, int proj, float k, int dt, int wide,
                                                         int v3)
{
  if (wide) {
    const adampi__coef clw = *c; /* a local: the stores could alias *c otherwise */
    apply_body(g, g16, gq, gt, b, w, w16, n, &clw, proj, k, dt, 1, 0);
    return;
  }
  adampi__coef cl = *c;
  if (adampi__update_blocks(gt, dt, 0)) {
    apply_body(g, g16, gq, gt, b, w, w16, n, &cl, proj, k, dt, 0, v3);
    return;
  }
#define BODY(PROJ, NESTEROV) \
  (cl.nesterov = NESTEROV, apply_body(g, g16, gq, gt, b, w, w16, n, &cl, PROJ, k, dt, 0, v3))
  if (proj) cl.nesterov ? BODY(1, 1) : BODY(1, 0);
  else cl.nesterov ? BODY(0, 1) : BODY(0, 0);
#undef BODY
}

/* apply_t for the parameters' type, gt a constant (wide: adampi__wide_vectors, a constant too). */
static inline __attribute__((always_inline)) void apply_dt(const float *g, const uint16_t *g16, float gq, int gt,
                                                          float *b, float *w, uint16_t *w16, int dt, int64_t n,
                                                          const adampi__coef *c, int proj, float k, int wide, int v3)
{
  const int type = ADAMPI__GRAD_TYPE(gt);
  if (type == ADAMPI_BFLOAT16) /* with bfloat16 parameters */
    apply_t(g, g16, gq, gt, b, w, w16, n, c, proj, k, ADAMPI_BFLOAT16, wide, v3);
  else if (type == ADAMPI_FLOAT16 && dt == ADAMPI_FLOAT16) /* rounded here (adampi__round16, or each element) */
    apply_t(g, g16, gq, gt, b, w, w16, n, c, proj, k, ADAMPI_FLOAT16, wide, v3);
  else if (type == ADAMPI_FLOAT16)
    apply_t(g, g16, gq, gt, b, w, NULL, n, c, proj, k, ADAMPI_FLOAT32, wide, v3);
  else if (dt == ADAMPI_BFLOAT16) apply_t(g, NULL, 1.0f, 0, b, w, w16, n, c, proj, k, ADAMPI_BFLOAT16, wide, v3);
  else if (dt == ADAMPI_FLOAT16) apply_t(g, NULL, 1.0f, 0, b, w, w16, n, c, proj, k, ADAMPI_FLOAT16, wide, v3);
  else apply_t(g, NULL, 1.0f, 0, b, w, NULL, n, c, proj, k, ADAMPI_FLOAT32, wide, v3);
}

/* apply_dt for the gradients' type and scaling, then the parameters'. */
static inline __attribute__((always_inline)) void apply_types(const float *g, const uint16_t *g16, float gq, int gt,
                                                             float *b, float *w, uint16_t *w16, int dt, int64_t n,
                                                             const adampi__coef *c, int proj, float k, int wide,
                                                             int v3)
{
#define DT(GT) apply_dt(g, g16, gq, GT, b, w, w16, dt, n, c, proj, k, wide, v3)
  ADAMPI__GRAD_CASES(gt, DT);
#undef DT
}

#define APPLY_ARGS                                                                                              \
  const float *g, const uint16_t *g16, float gq, int gt, float *b, float *w, uint16_t *w16, int dt, int64_t n, \
      const adampi__coef *c, int proj, float k
ADAMPI_CLONES_WIDE static void apply(APPLY_ARGS) { apply_types(g, g16, gq, gt, b, w, w16, dt, n, c, proj, k, 1, 0); }
ADAMPI_CLONES_V3 static void apply_v3(APPLY_ARGS) { apply_types(g, g16, gq, gt, b, w, w16, dt, n, c, proj, k, 0, 1); }
ADAMPI_CLONES_NARROW static void apply_narrow(APPLY_ARGS)
{
  apply_types(g, g16, gq, gt, b, w, w16, dt, n, c, proj, k, 0, 0);
}

/* The first half of a channel-projected row, once its decision is known (same bits as apply with
 * proj): the new buffer is stored and <w, u> returned, with u the buffer itself, or (nesterov)
 * g + momentum * buffer written to u; with fuse, the previous row's second half alongside
 * (wu_pass). finish_t is the second half. */
static inline __attribute__((always_inline)) double buffer_wu_t(const float *g, const uint16_t *g16, float gq,
                                                               int gt, float *b, const float *w, float *u,
                                                               const uint16_t *w16, int64_t n, const adampi__coef *c,
                                                               const adampi__prev_row *prev, int fuse, int r16,
                                                               int wide, int v3)
{
#define WU(GT)                                                                                         \
  return c->nesterov ? wu_pass(g, g16, gq, GT, b, w, u, w16, n, c, 1, 1, prev, fuse, r16, wide, v3) \
                     : wu_pass(g, g16, gq, GT, b, w, u, w16, n, c, 1, 0, prev, fuse, r16, wide, v3)
  ADAMPI__GRAD_CASES(gt, WU);
#undef WU
}

/* The kernel table's rows (internal.h) over n elements of rows of len (gt a constant): each row's
 * first half fused with the previous row's second half (adampi__prev_row), u (with nesterov)
 * alternating between the two halves of the scratch. w is written as float32 and rounded as the
 * parameters' type dt says: into the type r16 (a constant: bfloat16, or float16 in the wide and
 * x86-64-v3 sets) as each chunk is written, else after each row, from cache (adampi__round_row; by
 * round16 where it is set). */
static inline __attribute__((always_inline)) void rows_t(const float *g, const uint16_t *g16, float gq, int gt,
                                                        float *b, float *w, uint16_t *w16, int dt, int64_t n,
                                                        int64_t len, const adampi__sums *ww, double eps, float *u,
                                                        adampi__round_fn round16, const adampi__coef *c, int r16,
                                                        int wide, int v3)
{
  adampi__prev_row prev = {NULL, NULL, NULL, 0.0f};
  for (int64_t o = 0, r = 0; o <= n; o += len, r++) {
    if (o < n) {
      float *uo = u + (r & 1) * len;
      const uint16_t *g16o = g16 ? g16 + o : NULL, *w16o = w16 ? w16 + o : NULL;
      double wu = r == 0 ? buffer_wu_t(g + o, g16o, gq, gt, b + o, w + o, uo, w16o, len, c, NULL, 0, r16, wide, v3)
                         : buffer_wu_t(g + o, g16o, gq, gt, b + o, w + o, uo, w16o, len, c, &prev, 1, r16, wide, v3);
      if (r > 0 && !r16) adampi__round_row(&prev, len, dt, round16);
      prev = (adampi__prev_row){w + o, w16 ? w16 + o : NULL, c->nesterov ? uo : b + o,
                                adampi__radial_coefficient(wu, ww[r].ww, eps)};
    } else { /* the last row's second half */
      finish_t(prev.u, prev.w, len, c, prev.k, c->nesterov);
      adampi__round_row(&prev, len, dt, round16);
    }
  }
}

/* rows_t for the gradients' type gt (a constant) and the parameters' (bfloat16 ones with bfloat16
 * or float32 gradients; float16 ones only with float16 gradients or float32 ones). */
static inline __attribute__((always_inline)) void rows_dt(const float *g, const uint16_t *g16, float gq, int gt,
                                                         float *b, float *w, uint16_t *w16, int dt, int64_t n,
                                                         int64_t len, const adampi__sums *ww, double eps, float *u,
                                                         adampi__round_fn round16, const adampi__coef *c, int wide,
                                                         int v3)
{
  const int type = ADAMPI__GRAD_TYPE(gt);
  if (type == ADAMPI_BFLOAT16 || (type == ADAMPI_FLOAT32 && dt == ADAMPI_BFLOAT16))
    rows_t(g, g16, gq, gt, b, w, w16, dt, n, len, ww, eps, u, round16, c, ADAMPI_BFLOAT16, wide, v3);
  else if (ADAMPI__F16_INLINE(wide, v3, dt))
    rows_t(g, g16, gq, gt, b, w, w16, dt, n, len, ww, eps, u, round16, c, ADAMPI_FLOAT16, wide, v3);
  else
    rows_t(g, g16, gq, gt, b, w, w16, dt, n, len, ww, eps, u, round16, c, 0, wide, v3);
}

static inline __attribute__((always_inline)) void rows_types(const float *g, const uint16_t *g16, float gq, int gt,
                                                            float *b, float *w, uint16_t *w16, int dt, int64_t n,
                                                            int64_t len, const adampi__sums *ww, double eps,
                                                            float *u, adampi__round_fn round16,
                                                            const adampi__coef *c, int wide, int v3)
{
#define ROWS(GT) rows_dt(g, g16, gq, GT, b, w, w16, dt, n, len, ww, eps, u, round16, c, wide, v3)
  ADAMPI__GRAD_CASES(gt, ROWS);
#undef ROWS
}
#define ROWS_ARGS                                                                                              \
  const float *g, const uint16_t *g16, float gq, int gt, float *b, float *w, uint16_t *w16, int dt, int64_t n, \
      int64_t len, const adampi__sums *ww, double eps, float *u, adampi__round_fn round16, const adampi__coef *c
ADAMPI_CLONES_WIDE static void rows(ROWS_ARGS)
{
  rows_types(g, g16, gq, gt, b, w, w16, dt, n, len, ww, eps, u, round16, c, 1, 0);
}
ADAMPI_CLONES_V3 static void rows_v3(ROWS_ARGS)
{
  rows_types(g, g16, gq, gt, b, w, w16, dt, n, len, ww, eps, u, round16, c, 0, 1);
}
ADAMPI_CLONES_NARROW static void rows_narrow(ROWS_ARGS)
{
  rows_types(g, g16, gq, gt, b, w, w16, dt, n, len, ww, eps, u, round16, c, 0, 0);
}

/* The kernel table (internal.h, adampi__kernels): the shard arrays of a span, unpacked. */
static double span_wu(const adampi__span *s, const adampi__coef *c)
{
  return ADAMPI__KERNEL_SET(dot_wu, dot_wu_v3, dot_wu_narrow)(s->g, s->g16, s->gq, s->g16_type,
                                                              s->state[ADAMPI__MOMENTUM], s->w, s->n, c);
}

static void span_apply(const adampi__span *s, const adampi__coef *c, int proj, float k)
{
  ADAMPI__KERNEL_SET(apply, apply_v3, apply_narrow)(s->g, s->g16, s->gq, s->g16_type, s->state[ADAMPI__MOMENTUM],
                                                    s->w, s->w16, s->dtype16, s->n, c, proj, k);
}

static void span_rows(const adampi__span *s, int64_t len, const adampi__sums *ww, double eps, float *u,
                      adampi__round_fn round16, const adampi__coef *c)
{
  ADAMPI__KERNEL_SET(rows, rows_v3, rows_narrow)(s->g, s->g16, s->gq, s->g16_type, s->state[ADAMPI__MOMENTUM], s->w,
                                                 s->w16, s->dtype16, s->n, len, ww, eps, u, round16, c);
}

const adampi__kernels adampi__sgdp_kernels = {1, coefficients, span_wu, span_apply, span_rows};
