/*
 * mlp.h - the trainer's model: Linear -> BatchNorm -> ReLU, twice, then Linear, on flat images.
 * The Linear weights before BatchNorm are scale-invariant (the case AdamP is for).
 *
 * The parameters live in adampi's flat buffer, in the order of mlp_tensors(); the BatchNorm
 * running statistics, which are model state but not parameters (no gradient, never optimized),
 * live in a buffer of their own, in the order of mlp_buffers(). The model only holds pointers into
 * the two. BatchNorm statistics of a training batch are synchronized across the ranks of a
 * communicator (a few hundred doubles per layer), so the maths is that of the global batch on any
 * number of ranks, and the running statistics are the same on every rank. Not a general
 * framework: this one network, fp32, no autograd.
 */
#ifndef ADAMPI_MLP_H
#define ADAMPI_MLP_H

#include <mpi.h>
#include <stdint.h>

/* A parameter: name (as torch's state_dict would call it), ndim, shape. Which optimizer group a
 * parameter belongs to is the trainer's choice, by name. */
typedef struct mlp_tensor {
  const char *name;
  int ndim;
  int64_t shape[2];
} mlp_tensor;

#define MLP_TENSORS 8

/* A running statistic: name and length. */
typedef struct mlp_buffer {
  const char *name;
  int64_t len;
} mlp_buffer;

#define MLP_BUFFERS 4

typedef struct mlp {
  int in, h1, h2, out;
  float *w1;       /* (h1, in) */
  float *g1, *b1;  /* (h1) BatchNorm scale and shift */
  float *w2;       /* (h2, h1) */
  float *g2, *b2;  /* (h2) */
  float *w3;       /* (out, h2) */
  float *b3;       /* (out) */
  float *rm1, *rv1, *rm2, *rv2; /* running mean and variance, (h1) and (h2), in stats */
} mlp;

/* Per-rank scratch for a local batch of up to max_batch samples (owned; mlp_work_free). */
typedef struct mlp_work mlp_work;

void mlp_tensors(int in, int h1, int h2, int out, mlp_tensor t[MLP_TENSORS]);
void mlp_buffers(int h1, int h2, mlp_buffer b[MLP_BUFFERS]);
/* Floats of all parameters (the flat buffer) and of all running statistics. */
int64_t mlp_num_params(int in, int h1, int h2, int out);
int64_t mlp_num_stats(int h1, int h2);
/* Point m's fields into the flat buffer params (laid out as mlp_tensors says) and the running
 * statistics into stats (as mlp_buffers says; NULL for a gradient view, which has none). */
void mlp_bind(mlp *m, int in, int h1, int h2, int out, float *params, float *stats);
/* Initial values (PyTorch's defaults: Kaiming-uniform weights, BatchNorm 1/0, running 0/1). */
void mlp_init(mlp *m, uint64_t seed);

mlp_work *mlp_work_new(const mlp *m, int max_batch);
void mlp_work_free(mlp_work **w);

/* The global batch is cut into this many fixed slices (see mlp.c): it must divide the global
 * batch, and the rank count must be a power of two that divides it. */
#define MLP_SLICES 8

/* One training step's forward and backward on this rank's b samples x (b x in), labels y: rank r
 * holds samples [r b, (r+1) b) of the global batch of b_global = b x ranks. grads: a flat buffer
 * laid out like the parameters; receives the gradient of the mean loss over the global batch, the
 * same bits on every rank and for every rank count. The running statistics are updated
 * identically on every rank. Returns 0, -1 if an MPI call failed, -2 if the batch and the rank count do not
 * fit MLP_SLICES. *loss_sum and *correct: this rank's sums. Collective over comm. */
int mlp_train_batch(mlp *m, mlp_work *w, const float *x, const uint8_t *y, int b, int64_t b_global,
                    float *grads_base, MPI_Comm comm, double *loss_sum, int *correct);

/* Inference with the running statistics: number of correct predictions among b samples. Local. */
int mlp_eval(const mlp *m, mlp_work *w, const float *x, const uint8_t *y, int b, double *loss_sum);

#endif
