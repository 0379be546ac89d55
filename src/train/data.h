/*
 * data.h - Fashion-MNIST from the IDX files of Debian's dataset-fashion-mnist (gzip or plain),
 * or a synthetic stand-in when they are not installed. Images become normalized floats.
 */
#ifndef ADAMPI_DATA_H
#define ADAMPI_DATA_H

#include <stddef.h>
#include <stdint.h>

#define DATA_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

typedef struct dataset {
  int n, dim, classes;
  float *x;   /* n x dim */
  uint8_t *y; /* n */
} dataset;

/* Load split "train" or "t10k" from dir. Returns 0, or -1 with a message naming the file and the
 * problem (missing, not IDX, truncated, mismatched counts) in err. */
int data_load(const char *dir, const char *split, dataset *d, char *err, size_t err_len);
/* A synthetic 10-class task of n samples of dimension 784 (clearly not Fashion-MNIST). */
int data_synthetic(int n, uint64_t seed, dataset *d);
void data_free(dataset *d);

#endif
