/*
 * replay.h - the replay file (a recorded trajectory of gradients) read and written with parallel
 * HDF5, each rank touching only its shard's part of every dataset (collective I/O).
 * Used by the tool adampi-replay and by the tests; not part of libadampi.
 *
 * IN: root attributes optimizer ("adamp" | "sgdp") and steps (T); /groups/<g> with the
 * hyper-parameters as attributes; /params/<i> float32 initial values (attribute group, default 0);
 * /grads/<t>/<i> float32 gradients (absent: no gradient); optional /lr_schedule float64 (T, G).
 * OUT: /params/<i> after the steps, with the same root attributes.
 * Attributes may have any of the types h5py writes (src/h5io.h lists what is accepted).
 *
 * All functions are collective over the communicator given to replay_open and return 0 or an
 * adampi_status, with the same status and message on every rank.
 */
#ifndef ADAMPI_REPLAY_H
#define ADAMPI_REPLAY_H

#include "adampi.h"

typedef struct replay_file replay_file;

/* Open and validate IN completely (names, types, shapes, hyper-parameters) before anything runs.
 * On error *out is NULL and err holds a message naming the problem. */
int replay_open(MPI_Comm comm, const char *path, replay_file **out, char *err, size_t err_len);
/* Close the file and free everything; NULL-safe. */
void replay_close(replay_file **rf);

/* Optimizer kind, step count T, tensor count n of an open file. Local. */
adampi_kind replay_kind(const replay_file *rf);
int replay_steps(const replay_file *rf);
int replay_num_tensors(const replay_file *rf);
/* Elements of all tensors together (INT64_MAX if that overflows). Local. */
int64_t replay_numel(const replay_file *rf);

/* Create an optimizer with the file's groups and tensors (tensor i registered as "<i>") and commit
 * it; *opt owns the result. cfg may be NULL for the defaults of the file's optimizer kind; its
 * kind is replaced by the file's, and its dtype is the type replay_run's parameter shard holds. */
int replay_make_optimizer(replay_file *rf, const adampi_config *cfg, adampi **opt, char *err, size_t err_len);

/* Read the initial parameters of this rank's shard into param_shard (hi - lo floats). */
int replay_read_params(replay_file *rf, adampi *opt, float *param_shard, char *err, size_t err_len);

/* Counts of the projection decisions over the steps run so far (tensor-steps with a gradient). */
typedef struct replay_counts {
  int64_t none, channel, layer;
  int64_t clipped; /* steps whose gradients clipping scaled down */
} replay_counts;
void replay_get_counts(const replay_file *rf, replay_counts *counts);

/* The scale every step divides the gradients by (the step's grad_scale; 1 unless set). Local; the
 * same value on every rank (the step checks). */
void replay_set_grad_scale(replay_file *rf, double grad_scale);

/* Run steps [t0, t1): set the scheduled learning rates, read the shard's gradients (fp32), round
 * them to the handle's type if it is a 16-bit one, step (adampi_step_sharded_ex with the grad
 * scale). param_shard: hi - lo elements of the handle's type (cfg.dtype of replay_make_optimizer). */
int replay_run(replay_file *rf, adampi *opt, void *param_shard, int t0, int t1, char *err, size_t err_len);

/* Write the shard's parameters into OUT (created under a temporary name, renamed when complete:
 * on error OUT does not exist). */
int replay_write_params(replay_file *rf, adampi *opt, const float *param_shard, const char *out_path,
                        char *err, size_t err_len);

#endif
