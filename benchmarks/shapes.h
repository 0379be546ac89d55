/*
 * shapes.h - parameter sets of the benchmarks: ResNet-50 (161 tensors, 25.6M elements, as
 * torchvision's resnet50), GPT-2 small (148 tensors, 124.4M, as Hugging Face's gpt2) and a
 * synthetic set of square-ish 2-d tensors of a given total size.
 */
#ifndef ADAMPI_BENCH_SHAPES_H
#define ADAMPI_BENCH_SHAPES_H

#include "adampi.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct bench_tensor {
  char name[64];
  int ndim;
  int64_t shape[4];
} bench_tensor;

static int add_t(bench_tensor *t, int n, const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d)
{
  snprintf(t[n].name, sizeof t[n].name, "%s", name);
  t[n].ndim = ndim;
  t[n].shape[0] = a, t[n].shape[1] = b, t[n].shape[2] = c, t[n].shape[3] = d;
  return n + 1;
}

/* Returns the number of tensors written to t (room for 512). */
static int shapes_resnet50(bench_tensor *t)
{
  int n = 0;
  char name[64];
  n = add_t(t, n, "conv1.weight", 4, 64, 3, 7, 7);
  n = add_t(t, n, "bn1.weight", 1, 64, 0, 0, 0);
  n = add_t(t, n, "bn1.bias", 1, 64, 0, 0, 0);
  int blocks[4] = {3, 4, 6, 3}, in = 64;
  for (int l = 0; l < 4; l++) {
    int w = 64 << l;
    for (int b = 0; b < blocks[l]; b++) {
      const int64_t convs[3][4] = {{w, in, 1, 1}, {w, w, 3, 3}, {4 * w, w, 1, 1}};
      for (int c = 0; c < 3; c++) {
        snprintf(name, sizeof name, "layer%d.%d.conv%d.weight", l + 1, b, c + 1);
        n = add_t(t, n, name, 4, convs[c][0], convs[c][1], convs[c][2], convs[c][3]);
        snprintf(name, sizeof name, "layer%d.%d.bn%d.weight", l + 1, b, c + 1);
        n = add_t(t, n, name, 1, convs[c][0], 0, 0, 0);
        snprintf(name, sizeof name, "layer%d.%d.bn%d.bias", l + 1, b, c + 1);
        n = add_t(t, n, name, 1, convs[c][0], 0, 0, 0);
      }
      if (b == 0) {
        snprintf(name, sizeof name, "layer%d.0.downsample.0.weight", l + 1);
        n = add_t(t, n, name, 4, 4 * w, in, 1, 1);
        snprintf(name, sizeof name, "layer%d.0.downsample.1.weight", l + 1);
        n = add_t(t, n, name, 1, 4 * w, 0, 0, 0);
        snprintf(name, sizeof name, "layer%d.0.downsample.1.bias", l + 1);
        n = add_t(t, n, name, 1, 4 * w, 0, 0, 0);
      }
      in = 4 * w;
    }
  }
  n = add_t(t, n, "fc.weight", 2, 1000, 2048, 0, 0);
  n = add_t(t, n, "fc.bias", 1, 1000, 0, 0, 0);
  return n;
}

static int shapes_gpt2(bench_tensor *t)
{
  int n = 0;
  char name[64];
  n = add_t(t, n, "wte.weight", 2, 50257, 768, 0, 0);
  n = add_t(t, n, "wpe.weight", 2, 1024, 768, 0, 0);
  for (int l = 0; l < 12; l++) {
    const struct {
      const char *what;
      int ndim;
      int64_t a, b;
    } parts[] = {{"ln_1.weight", 1, 768, 0},       {"ln_1.bias", 1, 768, 0},        {"attn.c_attn.weight", 2, 768, 2304},
                 {"attn.c_attn.bias", 1, 2304, 0}, {"attn.c_proj.weight", 2, 768, 768}, {"attn.c_proj.bias", 1, 768, 0},
                 {"ln_2.weight", 1, 768, 0},       {"ln_2.bias", 1, 768, 0},        {"mlp.c_fc.weight", 2, 768, 3072},
                 {"mlp.c_fc.bias", 1, 3072, 0},    {"mlp.c_proj.weight", 2, 3072, 768}, {"mlp.c_proj.bias", 1, 768, 0}};
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
      snprintf(name, sizeof name, "h.%d.%s", l, parts[k].what);
      n = add_t(t, n, name, parts[k].ndim, parts[k].a, parts[k].b, 0, 0);
    }
  }
  n = add_t(t, n, "ln_f.weight", 1, 768, 0, 0, 0);
  n = add_t(t, n, "ln_f.bias", 1, 768, 0, 0, 0);
  return n;
}

/* Synthetic: tensors of about 1M elements in rows of row_len (1024 x 1024 by default; the last
 * one smaller) adding up to `elements`. */
static int shapes_sweep(bench_tensor *t, int64_t elements, int64_t row_len)
{
  int n = 0;
  char name[64];
  int64_t left = elements, per = (1 << 20) / row_len > 0 ? (1 << 20) / row_len : 1;
  while (left > 0 && n < 511) {
    int64_t rows = left >= per * row_len ? per : (left + row_len - 1) / row_len;
    snprintf(name, sizeof name, "w%d", n);
    n = add_t(t, n, name, 2, rows, row_len, 0, 0);
    left -= rows * row_len;
  }
  return n;
}

/* Elements of tensor t. */
static int64_t bench_numel(const bench_tensor *t)
{
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
  return n;
}

/* The benchmarks' model: count weights and gradients for the flat positions [base, base + count)
 * of the tensors ts (laid out one after the other, as adampi_commit lays them), from a fixed
 * generator that starts at w[0] whatever base is. orthogonal: each whole row of a tensor with
 * ndim >= 2 that lies in the range gets its gradient made orthogonal to its weights, so that the
 * channel view projects. */
static void bench_fill(float *w, float *g, int64_t count, int64_t base, const bench_tensor *ts, int nt, int orthogonal)
{
  uint64_t seed = 12345;
  for (int64_t k = 0; k < count; k++) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    w[k] = (float)((seed >> 40) & 0xffff) / 65536.0f - 0.5f;
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    g[k] = ((float)((seed >> 40) & 0xffff) / 65536.0f - 0.5f) * 0.01f;
  }
  int64_t offset = 0;
  for (int i = 0; i < nt && orthogonal; offset += bench_numel(&ts[i]), i++) {
    if (ts[i].ndim < 2) continue;
    int64_t len = bench_numel(&ts[i]) / ts[i].shape[0];
    for (int64_t r = 0; r < ts[i].shape[0]; r++) {
      int64_t s = offset + r * len - base;
      if (s < 0 || s + len > count) continue;
      double gw = 0, ww = 0;
      for (int64_t k = 0; k < len; k++) gw += (double)g[s + k] * w[s + k], ww += (double)w[s + k] * w[s + k];
      for (int64_t k = 0; k < len; k++) g[s + k] = (float)(g[s + k] - w[s + k] * (gw / ww));
    }
  }
}

/* The benchmarks' hyper-parameters, set on the optimizer's defaults hp: weight decay 1e-2, SGDP's
 * momentum 0.9, delta 0 for the plain optimizers (AdamW, SGD) and 0.1 otherwise. orthogonal: a
 * learning rate small enough that the weights move little, so that the gradients (fixed) stay
 * orthogonal to them over all the steps and the projection path is what is timed. */
static inline void bench_hparams(adampi_hparams *hp, int sgd, int plain, int orthogonal)
{
  hp->weight_decay = 1e-2;
  hp->momentum = sgd ? 0.9 : 0.0;
  hp->delta = plain ? 0.0 : 0.1;
  if (orthogonal) hp->lr = sgd ? 1e-3 : 1e-7;
}

#endif
