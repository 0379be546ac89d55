/*
 * floor_kernels.h - the floor's reference kernels that hold 16 float lanes, built for one vector
 * width. floor.h includes it twice: with FLOOR_WIDE 1 (one 64-byte vector per 16 lanes, the
 * form these kernels always had, which the AVX-512 clones keep in registers) and FLOOR_WIDE 0 (two
 * 32-byte vectors). GCC 12 keeps a 64-byte vector in memory in an AVX2 or baseline clone and moves
 * it 16 bytes at a time: on an AMD EPYC without AVX-512 (Zen 3) the read-only kernel ran at
 * 0.39-0.47 of the statistics pass's speed that way, so the floor was no floor there. The library's
 * own kernels choose their form the same way (src/internal.h, adampi__wide_vectors).
 *
 * Each inclusion defines bw_K_wide or bw_K_narrow for K in adam_ahead, sgd_ahead, adam16_ahead,
 * sgd16_ahead, read2, read2_ahead, read16 and read16_ahead, and their table, floor_kernels_wide or
 * floor_kernels_narrow. It uses what floor.h defines before it: AHEAD, ahead_r, ahead_w,
 * bench_bf16, thread_range, threads_, the vector types and struct floor_kernels.
 */
#if FLOOR_WIDE
#define FLOOR_NAME(k) k##_wide
#define FLOOR_V bench_v16f /* 16 lanes in one vector */
#define FLOOR_VH bench_v16h
#define FLOOR_VU bench_v16u
#define FLOOR_NV 1
#define FLOOR_REST a0[0] /* where the read kernels add the elements after the last 16 */
#define FLOOR_SGD_AHEAD AHEAD /* as the library's unprojected SGDP update (ADAMPI__SGD_APPLY_AHEAD) */
#define FLOOR_READ_AHEAD AHEAD /* the float32 stream's distance (the library's wide row loop: none) */
#else
#define FLOOR_NAME(k) k##_narrow
#define FLOOR_V bench_v8f /* 16 lanes in two vectors */
#define FLOOR_VH bench_v8h
#define FLOOR_VU bench_v8u
#define FLOOR_NV 2
#define FLOOR_REST rest /* in a0[0], GCC moved that lane out of its vector in the loop */
#define FLOOR_SGD_AHEAD 512
#define FLOOR_READ_AHEAD 768 /* 192 floats: the library's narrow row loops (ADAMPI__STATS_AHEAD) */
#endif
#define FLOOR_L (16 / FLOOR_NV) /* lanes per vector */

/* The update's pattern on 16 elements: all loads, then all stores, as adampi's update. */
static inline void FLOOR_NAME(adam16)(const FLOOR_V *g, float *m, float *v, float *w)
{
  FLOOR_V *mv = (FLOOR_V *)m, *vv = (FLOOR_V *)v, *wv = (FLOOR_V *)w, mo[FLOOR_NV], vo[FLOOR_NV], wo[FLOOR_NV];
  for (int h = 0; h < FLOOR_NV; h++)
    mo[h] = mv[h] * 0.5f + g[h], vo[h] = vv[h] * 0.5f + g[h] * g[h], wo[h] = wv[h] * 0.99999f - 1e-6f * g[h];
  for (int h = 0; h < FLOOR_NV; h++) mv[h] = mo[h], vv[h] = vo[h], wv[h] = wo[h];
}

static inline void FLOOR_NAME(sgd16)(const FLOOR_V *g, float *b, float *w)
{
  FLOOR_V *bv = (FLOOR_V *)b, *wv = (FLOOR_V *)w, bo[FLOOR_NV], wo[FLOOR_NV];
  for (int h = 0; h < FLOOR_NV; h++) bo[h] = bv[h] * 0.5f + g[h], wo[h] = wv[h] * 0.99999f - 1e-6f * g[h];
  for (int h = 0; h < FLOOR_NV; h++) bv[h] = bo[h], wv[h] = wo[h];
}

/* 16 bfloat16 values as floats (the shift of bench_bf16). Vectors cross these calls by pointer, so
 * that no clone's ABI depends on its vector width. */
static inline void FLOOR_NAME(widen16)(const uint16_t *h16, FLOOR_V *out)
{
  for (int h = 0; h < FLOOR_NV; h++)
    out[h] = (FLOOR_V)(__builtin_convertvector(((const FLOOR_VH *)h16)[h], FLOOR_VU) << 16);
}

/* The prefetching kernels of the update's pattern (bw_adam and bw_sgd, bw_adam16 and bw_sgd16
 * are their plain versions): the same operations 16 elements at a time, after prefetching the lines
 * AHEAD (Adam) or FLOOR_SGD_AHEAD (SGD) bytes on, as the library's kernels of this form do. */
CLONES static void FLOOR_NAME(bw_adam_ahead)(const float *g, float *m, float *v, float *w, int64_t n)
{
  const int64_t n16 = n / 16 * 16;
#pragma omp parallel for num_threads(threads_) if (threads_ > 1)
  for (int64_t k = 0; k < n16; k += 16) {
    ahead_r(g + k, AHEAD), ahead_w(m + k, AHEAD), ahead_w(v + k, AHEAD), ahead_w(w + k, AHEAD);
    FLOOR_NAME(adam16)((const FLOOR_V *)(g + k), m + k, v + k, w + k);
  }
  for (int64_t i = n16; i < n; i++) {
    m[i] = m[i] * 0.5f + g[i];
    v[i] = v[i] * 0.5f + g[i] * g[i];
    w[i] = w[i] * 0.99999f - 1e-6f * g[i];
  }
}

CLONES static void FLOOR_NAME(bw_sgd_ahead)(const float *g, float *b, float *w, int64_t n)
{
  const int64_t n16 = n / 16 * 16;
#pragma omp parallel for num_threads(threads_) if (threads_ > 1)
  for (int64_t k = 0; k < n16; k += 16) {
    ahead_r(g + k, FLOOR_SGD_AHEAD), ahead_w(b + k, FLOOR_SGD_AHEAD), ahead_w(w + k, FLOOR_SGD_AHEAD);
    FLOOR_NAME(sgd16)((const FLOOR_V *)(g + k), b + k, w + k);
  }
  for (int64_t i = n16; i < n; i++) {
    b[i] = b[i] * 0.5f + g[i];
    w[i] = w[i] * 0.99999f - 1e-6f * g[i];
  }
}

CLONES static void FLOOR_NAME(bw_adam16_ahead)(const uint16_t *g, float *m, float *v, float *w, int64_t n)
{
  const int64_t n32 = n / 32 * 32;
#pragma omp parallel for num_threads(threads_) if (threads_ > 1)
  for (int64_t k = 0; k < n32; k += 32) { /* 32 gradients per line */
    ahead_r(g + k, AHEAD), ahead_w(m + k, AHEAD), ahead_w(v + k, AHEAD), ahead_w(w + k, AHEAD);
    ahead_w(m + k + 16, AHEAD), ahead_w(v + k + 16, AHEAD), ahead_w(w + k + 16, AHEAD);
    FLOOR_V g0[FLOOR_NV], g1[FLOOR_NV];
    FLOOR_NAME(widen16)(g + k, g0), FLOOR_NAME(widen16)(g + k + 16, g1);
    FLOOR_NAME(adam16)(g0, m + k, v + k, w + k);
    FLOOR_NAME(adam16)(g1, m + k + 16, v + k + 16, w + k + 16);
  }
  for (int64_t i = n32; i < n; i++) {
    float gi = bench_bf16(g[i]);
    m[i] = m[i] * 0.5f + gi;
    v[i] = v[i] * 0.5f + gi * gi;
    w[i] = w[i] * 0.99999f - 1e-6f * gi;
  }
}

CLONES static void FLOOR_NAME(bw_sgd16_ahead)(const uint16_t *g, float *b, float *w, int64_t n)
{
  const int64_t n32 = n / 32 * 32;
#pragma omp parallel for num_threads(threads_) if (threads_ > 1)
  for (int64_t k = 0; k < n32; k += 32) {
    ahead_r(g + k, FLOOR_SGD_AHEAD), ahead_w(b + k, FLOOR_SGD_AHEAD), ahead_w(w + k, FLOOR_SGD_AHEAD);
    ahead_w(b + k + 16, FLOOR_SGD_AHEAD), ahead_w(w + k + 16, FLOOR_SGD_AHEAD);
    FLOOR_V g0[FLOOR_NV], g1[FLOOR_NV];
    FLOOR_NAME(widen16)(g + k, g0), FLOOR_NAME(widen16)(g + k + 16, g1);
    FLOOR_NAME(sgd16)(g0, b + k, w + k);
    FLOOR_NAME(sgd16)(g1, b + k + 16, w + k + 16);
  }
  for (int64_t i = n32; i < n; i++) {
    float gi = bench_bf16(g[i]);
    b[i] = b[i] * 0.5f + gi;
    w[i] = w[i] * 0.99999f - 1e-6f * gi;
  }
}

/* A read-only pass over g and w (what the statistics pass must read: 8 bytes per element), with
 * 16 float lanes so that it is not held back by the order of a scalar sum. The lanes are named
 * vectors: a0 and b0, and a1 and b1 in the narrow form; the elements after the last 16 go to lane 0
 * of a0 in the wide form, as they always did, and to rest in the narrow one. Written otherwise
 * (vectors in an array; lane 0 in the narrow form) GCC built other code for the wide form, or took
 * that lane out of its vector in the narrow one's loop. */
CLONES static float FLOOR_NAME(bw_read2)(const float *g, const float *w, int64_t n)
{
  float total = 0.0f;
#pragma omp parallel num_threads(threads_) if (threads_ > 1) reduction(+ : total)
  {
    int64_t lo, hi;
    thread_range(n, &lo, &hi);
    FLOOR_V a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0};
    float rest = 0.0f;
    int64_t i = lo;
    for (; i + 16 <= hi; i += 16) {
      a0 += *(const FLOOR_V *)(g + i), b0 += *(const FLOOR_V *)(w + i);
      if (FLOOR_NV == 2) a1 += *(const FLOOR_V *)(g + i + 8), b1 += *(const FLOOR_V *)(w + i + 8);
    }
    for (; i < hi; i++) FLOOR_REST += g[i] + w[i];
    for (int j = 0; j < FLOOR_L; j++) total += a0[j] + b0[j];
    for (int j = 0; j < FLOOR_L && FLOOR_NV == 2; j++) total += a1[j] + b1[j];
    if (!FLOOR_WIDE) total += rest;
  }
  return total;
}

/* The same, prefetching ahead (FLOOR_READ_AHEAD): a function of its own, so that the plain one compiles as
 * it did (a second loop in it had made the 16-bit one take 8 ms instead of 5-6). */
CLONES static float FLOOR_NAME(bw_read2_ahead)(const float *g, const float *w, int64_t n)
{
  float total = 0.0f;
#pragma omp parallel num_threads(threads_) if (threads_ > 1) reduction(+ : total)
  {
    int64_t lo, hi;
    thread_range(n, &lo, &hi);
    FLOOR_V a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0};
    float rest = 0.0f;
    int64_t i = lo;
    for (; i + 16 <= hi; i += 16) {
      ahead_r(g + i, FLOOR_READ_AHEAD), ahead_r(w + i, FLOOR_READ_AHEAD);
      a0 += *(const FLOOR_V *)(g + i), b0 += *(const FLOOR_V *)(w + i);
      if (FLOOR_NV == 2) a1 += *(const FLOOR_V *)(g + i + 8), b1 += *(const FLOOR_V *)(w + i + 8);
    }
    for (; i < hi; i++) FLOOR_REST += g[i] + w[i];
    for (int j = 0; j < FLOOR_L; j++) total += a0[j] + b0[j];
    for (int j = 0; j < FLOOR_L && FLOOR_NV == 2; j++) total += a1[j] + b1[j];
    if (!FLOOR_WIDE) total += rest;
  }
  return total;
}

/* The statistics reads of a sharded 16-bit step: the caller's 16-bit gradients with w (2 + 4 bytes
 * per element). The wide form widens them lane by lane, as it always did (GCC makes one conversion
 * of the 16); the narrow one by widen16 (lane by lane, GCC gathered the second 8 word by word). */
CLONES static float FLOOR_NAME(bw_read16)(const uint16_t *g, const float *w, int64_t n)
{
  float total = 0.0f;
#pragma omp parallel num_threads(threads_) if (threads_ > 1) reduction(+ : total)
  {
    int64_t lo, hi;
    thread_range(n, &lo, &hi);
    FLOOR_V a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0};
    float rest = 0.0f;
    int64_t i = lo;
    for (; i + 16 <= hi; i += 16) {
#if FLOOR_WIDE
      for (int j = 0; j < 16; j++) a0[j] += bench_bf16(g[i + j]);
      b0 += *(const FLOOR_V *)(w + i);
#else
      FLOOR_V t[2];
      FLOOR_NAME(widen16)(g + i, t);
      a0 += t[0], a1 += t[1], b0 += *(const FLOOR_V *)(w + i), b1 += *(const FLOOR_V *)(w + i + 8);
#endif
    }
    for (; i < hi; i++) FLOOR_REST += bench_bf16(g[i]) + w[i];
    for (int j = 0; j < FLOOR_L; j++) total += a0[j] + b0[j];
    for (int j = 0; j < FLOOR_L && FLOOR_NV == 2; j++) total += a1[j] + b1[j];
    if (!FLOOR_WIDE) total += rest;
  }
  return total;
}

/* The same, prefetching ahead (FLOOR_READ_AHEAD). */
CLONES static float FLOOR_NAME(bw_read16_ahead)(const uint16_t *g, const float *w, int64_t n)
{
  float total = 0.0f;
#pragma omp parallel num_threads(threads_) if (threads_ > 1) reduction(+ : total)
  {
    int64_t lo, hi;
    thread_range(n, &lo, &hi);
    FLOOR_V a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0};
    float rest = 0.0f;
    int64_t i = lo;
    for (; i + 16 <= hi; i += 16) {
      ahead_r(w + i, FLOOR_READ_AHEAD);
      if ((i & 31) == 0) ahead_r(g + i, FLOOR_READ_AHEAD / 2); /* the same elements ahead */
#if FLOOR_WIDE
      for (int j = 0; j < 16; j++) a0[j] += bench_bf16(g[i + j]);
      b0 += *(const FLOOR_V *)(w + i);
#else
      FLOOR_V t[2];
      FLOOR_NAME(widen16)(g + i, t);
      a0 += t[0], a1 += t[1], b0 += *(const FLOOR_V *)(w + i), b1 += *(const FLOOR_V *)(w + i + 8);
#endif
    }
    for (; i < hi; i++) FLOOR_REST += bench_bf16(g[i]) + w[i];
    for (int j = 0; j < FLOOR_L; j++) total += a0[j] + b0[j];
    for (int j = 0; j < FLOOR_L && FLOOR_NV == 2; j++) total += a1[j] + b1[j];
    if (!FLOOR_WIDE) total += rest;
  }
  return total;
}

static const struct floor_kernels FLOOR_NAME(floor_kernels) = {
    FLOOR_NAME(bw_adam_ahead), FLOOR_NAME(bw_sgd_ahead), FLOOR_NAME(bw_adam16_ahead), FLOOR_NAME(bw_sgd16_ahead),
    FLOOR_NAME(bw_read2),      FLOOR_NAME(bw_read2_ahead), FLOOR_NAME(bw_read16),     FLOOR_NAME(bw_read16_ahead),
};

#undef FLOOR_NAME
#undef FLOOR_V
#undef FLOOR_VH
#undef FLOOR_VU
#undef FLOOR_NV
#undef FLOOR_L
#undef FLOOR_REST
#undef FLOOR_SGD_AHEAD
#undef FLOOR_READ_AHEAD
