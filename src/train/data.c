/*
 * data.c - IDX reader (big-endian header: magic 0x00000803 images / 0x00000801 labels, then the
 * dimensions) through zlib, which reads gzip and plain files alike; and the synthetic fallback.
 */
#include "data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define FMNIST_MEAN 0.2860f /* of the training images, scaled to [0, 1] */
#define FMNIST_STD 0.3530f

static int read_be32(gzFile f, uint32_t *v)
{
  unsigned char b[4];
  if (gzread(f, b, 4) != 4) return -1;
  *v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
  return 0;
}

/* Reads an IDX file of the expected magic; *count items of *item bytes into a new buffer. */
static unsigned char *read_idx(const char *path, uint32_t magic, uint32_t *count, uint32_t *item, char *err, size_t len)
{
  gzFile f = gzopen(path, "rb");
  if (!f) {
    snprintf(err, len, "cannot open %s (install the data set with: apt-get install dataset-fashion-mnist, or use --synthetic)", path);
    return NULL;
  }
  uint32_t m = 0, dims[3] = {0, 1, 1}, ndim = magic & 0xff;
  unsigned char *buf = NULL;
  if (read_be32(f, &m) || m != magic) {
    snprintf(err, len, "%s is not an IDX file of the expected kind (magic 0x%08x, expected 0x%08x)", path, m, magic);
    goto done;
  }
  for (uint32_t k = 0; k < ndim; k++)
    if (read_be32(f, &dims[k]) || dims[k] == 0 || dims[k] > 10000000) {
      snprintf(err, len, "%s has an invalid dimension %u", path, k);
      goto done;
    }
  *count = dims[0];
  *item = dims[1] * dims[2];
  size_t bytes = (size_t)*count * *item;
  buf = malloc(bytes ? bytes : 1);
  if (!buf || gzread(f, buf, (unsigned)bytes) != (int)bytes) {
    snprintf(err, len, "%s is truncated or corrupt (expected %zu bytes of data)", path, bytes);
    free(buf);
    buf = NULL;
  }
done:
  gzclose(f);
  return buf;
}

int data_load(const char *dir, const char *split, dataset *d, char *err, size_t len)
{
  char ip[1024], lp[1024];
  memset(d, 0, sizeof *d);
  snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, split);
  snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, split);
  uint32_t n = 0, dim = 0, nl = 0, one = 0;
  unsigned char *img = read_idx(ip, 0x00000803, &n, &dim, err, len);
  if (!img) return -1;
  unsigned char *lab = read_idx(lp, 0x00000801, &nl, &one, err, len);
  if (!lab) {
    free(img);
    return -1;
  }
  if (nl != n) {
    snprintf(err, len, "%s holds %u images but %s holds %u labels", ip, n, lp, nl);
    free(img), free(lab);
    return -1;
  }
  d->n = (int)n, d->dim = (int)dim, d->classes = 10;
  d->x = malloc((size_t)n * dim * sizeof(float));
  d->y = malloc(n);
  if (!d->x || !d->y) {
    snprintf(err, len, "out of memory for %s", ip);
    free(img), free(lab), data_free(d);
    return -1;
  }
  for (size_t i = 0; i < (size_t)n * dim; i++) d->x[i] = ((float)img[i] / 255.0f - FMNIST_MEAN) / FMNIST_STD;
  for (uint32_t i = 0; i < n; i++) {
    if (lab[i] > 9) {
      snprintf(err, len, "%s: label %u of sample %u is not a class 0..9", lp, lab[i], i);
      free(img), free(lab), data_free(d);
      return -1;
    }
    d->y[i] = lab[i];
  }
  free(img), free(lab);
  return 0;
}

int data_synthetic(int n, uint64_t seed, dataset *d)
{
  d->n = n, d->dim = 784, d->classes = 10;
  d->x = malloc((size_t)n * 784 * sizeof(float));
  d->y = malloc((size_t)n);
  if (!d->x || !d->y) return -1;
  /* class k: a noisy bump centred on one of 10 regions of the 28 x 28 image */
  for (int i = 0; i < n; i++) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    int k = (int)((seed >> 33) % 10);
    d->y[i] = (uint8_t)k;
    int cx = 5 + (k % 5) * 4, cy = 8 + (k / 5) * 12;
    for (int p = 0; p < 784; p++) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      float noise = (float)((seed >> 40) & 0xffff) / 65536.0f - 0.5f;
      int px = p % 28, py = p / 28;
      float bump = expf(-((px - cx) * (px - cx) + (py - cy) * (py - cy)) / 18.0f);
      d->x[(size_t)i * 784 + p] = 2.0f * bump + noise;
    }
  }
  return 0;
}

void data_free(dataset *d)
{
  free(d->x);
  free(d->y);
  d->x = NULL;
  d->y = NULL;
}
