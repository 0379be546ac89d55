/*
 * adampi.h - AdamP and SGDP (Heo et al., ICLR 2021) as a ZeRO-style sharded optimizer over MPI.
 *
 * The caller registers its parameter tensors (name, shape, group) in the same order on every rank
 * and commits the layout. The library lays the tensors out in one flat float32 buffer in that order,
 * gives every rank one contiguous shard {lo, hi} of it, keeps optimizer state for that shard only,
 * and updates the shard at each step exactly as the official PyTorch package `adamp` 0.3.0 does
 * (see MATHS.md), with bitwise identical results on any number of ranks.
 *
 * What this header is not: it has no I/O (checkpoints come with their own functions) and no model.
 *
 * Conventions: "Collective" functions must be called by every rank of the optimizer's communicator
 * in the same order; they return the same status on every rank. "Local" functions involve no
 * communication. Every function returning adampi_status leaves the handle usable on error, and the
 * message of the first failure is available from adampi_last_error().
 */
#ifndef ADAMPI_H
#define ADAMPI_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define ADAMPI_API __declspec(dllexport)
#elif defined(__GNUC__)
#define ADAMPI_API __attribute__((visibility("default")))
#else
#define ADAMPI_API
#endif

#define ADAMPI_VERSION_MAJOR 0
#define ADAMPI_VERSION_MINOR 2
#define ADAMPI_VERSION_PATCH 0
#define ADAMPI_VERSION_STRING "0.2.0"

/* Largest tensor rank accepted at registration. */
#define ADAMPI_MAX_NDIM 8
/* Longest tensor name, excluding the terminating NUL. */
#define ADAMPI_MAX_NAME 255

/* Status codes: X(name, value, description). One table generates the enum and adampi_strerror. */
#define ADAMPI_STATUS_TABLE(X)                                                                  \
  X(ADAMPI_OK, 0, "success")                                                                    \
  X(ADAMPI_ERR_ARG, 1, "invalid argument")                  /* NULL pointer, bad value */        \
  X(ADAMPI_ERR_HPARAM, 2, "invalid hyper-parameter")        /* out of range or non-finite */     \
  X(ADAMPI_ERR_STATE, 3, "call not valid in this state")    /* e.g. step before commit */        \
  X(ADAMPI_ERR_MISMATCH, 4, "ranks disagree")               /* registration or step inputs */    \
  X(ADAMPI_ERR_NONFINITE, 5, "non-finite value")            /* NaN/Inf in gradient or param */   \
  X(ADAMPI_ERR_NOMEM, 6, "out of memory")                   /* allocation failed */              \
  X(ADAMPI_ERR_MPI, 7, "MPI error")                         /* an MPI call failed */             \
  X(ADAMPI_ERR_IO, 8, "I/O error")                          /* file could not be read/written */ \
  X(ADAMPI_ERR_FORMAT, 9, "bad file format")                /* file content is not as expected */ \
  X(ADAMPI_ERR_PEER, 10, "another rank failed")             /* failure seen on another rank */

typedef enum adampi_status {
#define ADAMPI_X_ENUM(name, value, text) name = value,
  ADAMPI_STATUS_TABLE(ADAMPI_X_ENUM)
#undef ADAMPI_X_ENUM
} adampi_status;

/* Which optimizer a handle runs. */
typedef enum adampi_kind {
  ADAMPI_ADAMP = 0, /* AdamP: state m, v (8 bytes per shard element) */
  ADAMPI_SGDP = 1   /* SGDP: state momentum buffer (4 bytes per shard element) */
} adampi_kind;

/* What a step does when a gradient or parameter value is NaN or Inf on any rank. */
typedef enum adampi_nonfinite_policy {
  ADAMPI_NONFINITE_ERROR = 0, /* change nothing, return ADAMPI_ERR_NONFINITE on every rank */
  ADAMPI_NONFINITE_SKIP = 1   /* change nothing, return ADAMPI_OK and count a skipped step */
} adampi_nonfinite_policy;

/* Hyper-parameters of one parameter group. Fields that do not apply to the optimizer kind are
 * ignored (AdamP ignores momentum and dampening; SGDP ignores beta1 and beta2). */
typedef struct adampi_hparams {
  double lr;           /* learning rate, >= 0 */
  double beta1;        /* AdamP: first-moment decay, in [0, 1) */
  double beta2;        /* AdamP: second-moment decay, in [0, 1) */
  double eps;          /* >= 0: Adam denominator term and norm clamp of the projection */
  double weight_decay; /* >= 0, decoupled (multiplies the weights) */
  double delta;        /* >= 0, cosine threshold of the scale-invariance test */
  double wd_ratio;     /* >= 0, weight-decay factor for projected tensors */
  double momentum;     /* SGDP: >= 0, and < 1 when weight_decay > 0 */
  double dampening;    /* SGDP: in [0, 1] */
  int nesterov;        /* 0 or 1; SGDP: only with momentum > 0 and dampening == 0 */
} adampi_hparams;

/* Element type of the model's parameters and gradients (the buffers of the step functions, of
 * adampi_alloc_step_buffers and the params of adampi_save / adampi_load). With a 16-bit type the
 * library keeps an fp32 master copy of its shard (the value it updates and checkpoints) and its
 * state in fp32; gradients are converted exactly to fp32 and reduced in fp32, and the master is
 * rounded to the type (round to nearest, ties to even, as torch's .bfloat16() / .half()). */
typedef enum adampi_dtype {
  ADAMPI_FLOAT32 = 0,  /* 4 bytes; the parameters are the master (no copy) */
  ADAMPI_BFLOAT16 = 1, /* 2 bytes: 8-bit exponent, 7-bit mantissa */
  ADAMPI_FLOAT16 = 2   /* 2 bytes: IEEE binary16 (max 65504; beyond rounds to Inf) */
} adampi_dtype;

/* Options of a handle, filled from adampi_config_defaults(). */
typedef struct adampi_config {
  adampi_kind kind;
  adampi_nonfinite_policy nonfinite; /* default ADAMPI_NONFINITE_ERROR */
  int threads; /* OpenMP threads inside a rank for the passes over the shard; default 1; 0: the
                  OpenMP default. Results are bitwise the same for any count. */
  adampi_dtype dtype;   /* default ADAMPI_FLOAT32; every rank the same (checked by adampi_commit) */
  double max_grad_norm; /* global-norm clipping (torch.nn.utils.clip_grad_norm_); 0 (default): off.
                           Finite and >= 0; changeable with adampi_set_max_grad_norm. */
} adampi_config;

/* Which view projected a tensor at the last step (MATHS.md, "The projection"). */
typedef enum adampi_view {
  ADAMPI_VIEW_NONE = 0,    /* not projected: ndim <= 1, or neither test passed */
  ADAMPI_VIEW_CHANNEL = 1, /* per output channel (rows of d0) */
  ADAMPI_VIEW_LAYER = 2    /* the whole tensor as one row */
} adampi_view;

/* Diagnostics of one tensor at the last step that updated it. */
typedef struct adampi_diag {
  int updated;        /* 1 if the tensor had a gradient at the last step, else 0 (rest unchanged) */
  adampi_view view;   /* which view projected it, if any */
  double cos_channel; /* max over rows of |cos(g_r, w_r)| (0 for ndim <= 1) */
  double cos_layer;   /* |cos(g, w)| over the whole tensor */
  double weight_norm; /* ||w|| before the update */
  double grad_norm;   /* ||g|| of the gradient the step used (averaged, unscaled, clipped) */
  int64_t step;       /* the tensor's own step counter after the update */
} adampi_diag;

/* Shape and place of one registered tensor in the flat buffer. */
typedef struct adampi_tensor_info {
  const char *name;               /* owned by the handle, valid until adampi_free */
  int ndim;                       /* 0..ADAMPI_MAX_NDIM */
  int64_t shape[ADAMPI_MAX_NDIM]; /* the first ndim entries are set */
  int group;                      /* parameter group */
  int64_t offset;                 /* first element in the flat buffer */
  int64_t numel;                  /* product of the shape (1 for 0-d) */
} adampi_tensor_info;

/* Optimizer state arrays of a shard. */
typedef enum adampi_state_kind {
  ADAMPI_STATE_EXP_AVG = 0,    /* AdamP m */
  ADAMPI_STATE_EXP_AVG_SQ = 1, /* AdamP v */
  ADAMPI_STATE_MOMENTUM = 2    /* SGDP momentum buffer */
} adampi_state_kind;

typedef struct adampi adampi; /* opaque handle */

/* What a params pointer holds (adampi_save, adampi_load, adampi_set_master). */
typedef enum adampi_params_form {
  ADAMPI_PARAMS_SHARD = 0, /* this rank's shard [lo, hi) only (adampi_step_sharded users) */
  ADAMPI_PARAMS_FULL = 1   /* the full flat buffer, identical on every rank (adampi_step users) */
} adampi_params_form;


/* Text of a status code; never NULL. Local. */
ADAMPI_API const char *adampi_strerror(adampi_status status);

/* Bytes per element of a type (4 or 2), or 0 for an unknown value. Local. */
ADAMPI_API size_t adampi_dtype_size(adampi_dtype dtype);
/* "float32", "bfloat16", "float16" (the names checkpoints record), or NULL for an unknown value.
 * Local. */
ADAMPI_API const char *adampi_dtype_name(adampi_dtype dtype);
/* Round n floats to the type, round to nearest, ties to even, bit for bit torch's .bfloat16() /
 * .half(): subnormals kept, float16 magnitudes past 65504 to Inf, NaN to a quiet NaN of the same
 * sign. out holds n elements of the type (for float32: a copy). Local; the same bits on every
 * machine. ADAMPI_ERR_ARG for an unknown type or a NULL pointer with n > 0. */
ADAMPI_API adampi_status adampi_round_to(adampi_dtype dtype, const float *in, void *out, int64_t n);
/* Convert n elements of the type to float32, exactly. Local. Errors as adampi_round_to. */
ADAMPI_API adampi_status adampi_widen(adampi_dtype dtype, const void *in, float *out, int64_t n);

/* AdamP defaults of MATHS.md (lr 1e-3, betas 0.9/0.999, eps 1e-8, delta 0.1, wd_ratio 0.1). Local. */
ADAMPI_API adampi_hparams adampi_adamp_defaults(void);
/* SGDP defaults of MATHS.md with the given learning rate (SGDP has no default lr). Local. */
ADAMPI_API adampi_hparams adampi_sgdp_defaults(double lr);
/* Config defaults for an optimizer kind: error policy ADAMPI_NONFINITE_ERROR, 1 thread, float32,
 * no clipping. Local. */
ADAMPI_API adampi_config adampi_config_defaults(adampi_kind kind);

/* Check hyper-parameters for an optimizer kind. Local. Returns ADAMPI_ERR_HPARAM and writes a
 * message naming the field and its value into msg (if msg != NULL, at most msg_len bytes). */
ADAMPI_API adampi_status adampi_hparams_check(adampi_kind kind, const adampi_hparams *hp, char *msg,
                                              size_t msg_len);

/* Create a handle on a duplicate of comm (errors return, never abort). Collective over comm.
 * On success *out owns the handle (free with adampi_free); on error *out is NULL and, if errbuf is
 * not NULL, the message is written there. Every rank returns the same status. */
ADAMPI_API adampi_status adampi_create(MPI_Comm comm, const adampi_config *cfg, adampi **out,
                                       char *errbuf, size_t errbuf_len);

/* Free the handle and its state and set *opt to NULL. NULL-safe. Collective (frees a communicator). */
ADAMPI_API void adampi_free(adampi **opt);

/* Message of the first failure since the last successful call (rank-prefixed where it helps). Local.
 * Never NULL; owned by the handle. */
ADAMPI_API const char *adampi_last_error(const adampi *opt);

/* Add a parameter group; *group_id receives its index (0, 1, ...). Local; must be repeated
 * identically on every rank (checked by adampi_commit). Returns ADAMPI_ERR_HPARAM on invalid values,
 * ADAMPI_ERR_STATE after commit; nothing is added on error. */
ADAMPI_API adampi_status adampi_add_group(adampi *opt, const adampi_hparams *hp, int *group_id);

/* Register a tensor of shape[0..ndim) in group; *index receives its index (NULL allowed). Local;
 * the same registrations must happen in the same order on every rank (checked by adampi_commit).
 * Errors: empty, too long or duplicate name, ndim outside 0..8, a dimension < 1, unknown group,
 * after commit. Nothing is registered on error. The name is copied. */
ADAMPI_API adampi_status adampi_add_tensor(adampi *opt, const char *name, int ndim,
                                           const int64_t *shape, int group, int *index);

/* Fix the layout: checks that every rank registered the same groups and tensors, computes the flat
 * layout and the shards, allocates and zeroes the shard's optimizer state. Collective. Every rank
 * gets the same status; on ADAMPI_ERR_MISMATCH the message names the first tensor that differs and
 * the ranks that differ. On error nothing is committed and registrations stay as they were. */
ADAMPI_API adampi_status adampi_commit(adampi *opt);

/* Number of registered tensors, elements of the flat buffer, groups. Local. */
ADAMPI_API int adampi_num_tensors(const adampi *opt);
ADAMPI_API int64_t adampi_numel(const adampi *opt);
ADAMPI_API int adampi_num_groups(const adampi *opt);

/* Shape and offset of tensor index (offset valid after commit). Local. ADAMPI_ERR_ARG if out of range. */
ADAMPI_API adampi_status adampi_tensor(const adampi *opt, int index, adampi_tensor_info *info);

/* The shard [*lo, *hi) of the flat buffer that rank `rank` (of the handle's communicator) owns.
 * Local; valid after commit. ADAMPI_ERR_STATE before commit, ADAMPI_ERR_ARG for a bad rank. */
ADAMPI_API adampi_status adampi_shard(const adampi *opt, int rank, int64_t *lo, int64_t *hi);

/* Rank of the calling process in, and size of, the handle's communicator. Local. */
ADAMPI_API int adampi_rank(const adampi *opt);
ADAMPI_API int adampi_size(const adampi *opt);

/* Read or replace the hyper-parameters of a group. Local, but every rank must make the same change
 * before the next step (the step checks and fails with ADAMPI_ERR_MISMATCH otherwise). Invalid
 * values return ADAMPI_ERR_HPARAM and change nothing. */
ADAMPI_API adampi_status adampi_get_hparams(const adampi *opt, int group, adampi_hparams *hp);
ADAMPI_API adampi_status adampi_set_hparams(adampi *opt, int group, const adampi_hparams *hp);
/* Shorthand for changing the learning rate of a group (a schedule). Same rules as set_hparams. */
ADAMPI_API adampi_status adampi_set_lr(adampi *opt, int group, double lr);

/* Change the global-norm clipping threshold (0: off) from the next step. Local, but every rank
 * must make the same change (the step checks: ADAMPI_ERR_MISMATCH otherwise). ADAMPI_ERR_HPARAM
 * for a negative or non-finite value, and nothing changes. */
ADAMPI_API adampi_status adampi_set_max_grad_norm(adampi *opt, double max_norm);

/* Data-parallel step. Collective. params: the full flat buffer (adampi_numel floats), identical on
 * every rank; grads: this rank's full local gradients. The library averages the gradients across
 * ranks (reduce-scatter into the shard), updates its shard and all-gathers, so every rank ends with
 * the same params. has_grad: one byte per tensor (0 = no gradient at this step: tensor untouched),
 * identical on every rank, or NULL for all present. grads is not modified. The buffers of
 * adampi_alloc_step_buffers make the exchanges direct loads within a node; every rank must then pass
 * them (ADAMPI_ERR_MISMATCH otherwise, with nothing changed).
 * On any error (including a NaN/Inf anywhere, under the error policy) params and optimizer state
 * are unchanged on every rank and every rank returns the same status. */
ADAMPI_API adampi_status adampi_step(adampi *opt, float *params, const float *grads,
                                     const unsigned char *has_grad);

/* Buffers for adampi_step: *params and *grads receive adampi_numel floats each, zeroed, in memory
 * that the ranks of one node share (a POSIX shared-memory object per rank, in /dev/shm, reserved
 * up front and unlinked once mapped: nothing is left behind). Collective; after adampi_commit, at
 * most once per handle. The handle owns them: they stay valid until adampi_free, which releases
 * them. Fill them as any buffers (params identical on every rank, grads this rank's gradients).
 * When adampi_step receives exactly these two pointers on every rank, ranks on the same node read
 * each other's gradients directly and each stores its updated shard into the others' parameters,
 * instead of exchanging messages; ranks on different nodes exchange messages as before. The same
 * results bit for bit, fewer copies (see the README's performance section).
 * Errors (the same status on every rank, *params and *grads untouched, nothing left allocated):
 * ADAMPI_ERR_STATE before commit or on a second call, ADAMPI_ERR_ARG for a NULL pointer,
 * ADAMPI_ERR_NOMEM when /dev/shm or memory is short (the message names the rank and the bytes),
 * ADAMPI_ERR_IO when the shared memory cannot be created or mapped, ADAMPI_ERR_MPI. */
ADAMPI_API adampi_status adampi_alloc_step_buffers(adampi *opt, float **params, float **grads);
/* The same, for any element type: numel elements of the handle's type each. */
ADAMPI_API adampi_status adampi_alloc_step_buffers_ex(adampi *opt, void **params, void **grads);

/* Sharded step. Collective. param_shard and grad_shard hold this rank's shard [lo, hi) only
 * (hi - lo floats each; may be NULL when the shard is empty); grad_shard holds gradients already
 * averaged across ranks. Updates param_shard in place. Same has_grad and error rules as adampi_step. */
ADAMPI_API adampi_status adampi_step_sharded(adampi *opt, float *param_shard, const float *grad_shard,
                                             const unsigned char *has_grad);

/* Per-step options of adampi_step_ex and adampi_step_sharded_ex, from adampi_step_defaults(). */
typedef struct adampi_step_options {
  const unsigned char *has_grad; /* one byte per tensor (0: no gradient at this step), or NULL */
  double grad_scale; /* the gradients are divided by it before anything else (loss scale times
                        micro-batches of gradient accumulation); finite and > 0; default 1, and
                        every rank the same (the step checks) */
} adampi_step_options;

ADAMPI_API adampi_step_options adampi_step_defaults(void);

/* adampi_step with the buffers in the handle's element type and per-step options (o may be NULL:
 * the defaults). Collective; the same contract as adampi_step. With a 16-bit type each rank's
 * gradients are converted exactly to fp32 and averaged in fp32 in adampi_step's order, the fp32
 * master of the shard is updated (it starts from the parameters at the first step, unless
 * adampi_set_master or adampi_load set it), and every rank's params receive the master rounded to
 * the type. Refused before anything changes, on every rank: a grad_scale <= 0 or non-finite
 * (ADAMPI_ERR_ARG), one that differs across ranks (ADAMPI_ERR_MISMATCH). A NaN or Inf after the
 * division by grad_scale is a non-finite step (the handle's policy decides; adampi_last_step
 * tells). */
ADAMPI_API adampi_status adampi_step_ex(adampi *opt, void *params, const void *grads,
                                        const adampi_step_options *o);

/* adampi_step_sharded with the shards in the handle's element type and per-step options. Collective;
 * the same contract as adampi_step_sharded and the same option rules as adampi_step_ex. With a
 * 16-bit type param_shard receives the updated master rounded to the type. */
ADAMPI_API adampi_status adampi_step_sharded_ex(adampi *opt, void *param_shard, const void *grad_shard,
                                                const adampi_step_options *o);

/* What the last step call did, the same on every rank. */
typedef struct adampi_step_info {
  int applied;          /* 1: the step updated parameters and state */
  int skipped;          /* 1: a NaN or Inf was found and ADAMPI_NONFINITE_SKIP skipped the step
                           (lower the loss scale: see adampi_loss_scaler) */
  int nonfinite_tensor; /* index of the first tensor with a NaN or Inf (-1: none found) */
  double grad_norm;     /* global norm of the averaged, unscaled gradients of every tensor with a
                           gradient at this step, before clipping (torch's clip_grad_norm_ return);
                           NaN until a step's statistics were exchanged; Inf or NaN with bad values */
  double clip_coef;     /* the factor the gradients were multiplied by: 1 when not clipped */
} adampi_step_info;

/* The last step call's outcome. Local. ADAMPI_ERR_ARG for NULL. After a failed call, applied and
 * skipped are 0 and the rest is what was known before the failure. */
ADAMPI_API adampi_status adampi_last_step(const adampi *opt, adampi_step_info *info);

/* ---- Mixed precision: the fp32 master of a 16-bit handle ------------------------------------ */

/* Set the fp32 master (for a model initialised in fp32): values hold the full flat buffer
 * (ADAMPI_PARAMS_FULL, identical on every rank) or this rank's shard (ADAMPI_PARAMS_SHARD);
 * params, if not NULL, receives them rounded to the handle's type, in the same form. With float32
 * the parameters are the master, and this copies values into params. Collective; after commit.
 * Refused on every rank with nothing changed: NULL values where the shard is not empty
 * (ADAMPI_ERR_ARG), NaN or Inf (ADAMPI_ERR_NONFINITE, naming the tensor). Ownership stays with
 * the caller. */
ADAMPI_API adampi_status adampi_set_master(adampi *opt, const float *values, adampi_params_form form,
                                           void *params);

/* This rank's shard of the fp32 master (hi - lo floats, owned by the handle): NULL for float32
 * handles (the parameters are the master), before the master exists (no step, adampi_set_master
 * or adampi_load yet), or when the shard is empty. Local. Gather it with adampi_allgather. */
ADAMPI_API const float *adampi_master_shard(const adampi *opt);

/* Dynamic loss scaling with torch.cuda.amp.GradScaler's rules: start at 2^16, multiply by
 * backoff_factor (0.5) after a skipped step, by growth_factor (2) after growth_interval (2000)
 * applied steps in a row. Pass scale as the step's grad_scale (times accumulation micro-batches). */
typedef struct adampi_loss_scaler {
  double scale;
  double growth_factor, backoff_factor;
  int64_t growth_interval;
  int64_t good_steps; /* applied steps since the last change of scale */
} adampi_loss_scaler;

ADAMPI_API adampi_loss_scaler adampi_loss_scaler_defaults(void);
/* After a step: skipped = adampi_step_info.skipped. Local; NULL-safe. The scale never grows to Inf. */
ADAMPI_API void adampi_loss_scaler_update(adampi_loss_scaler *s, int skipped);

/* Diagnostics of tensor index after the last step (the same on every rank). Local. */
ADAMPI_API adampi_status adampi_diag_get(const adampi *opt, int index, adampi_diag *diag);

/* Steps taken (updates applied) and steps skipped under ADAMPI_NONFINITE_SKIP. Local. */
ADAMPI_API int64_t adampi_steps_taken(const adampi *opt);
ADAMPI_API int64_t adampi_steps_skipped(const adampi *opt);

/* Step counter of tensor index (number of steps at which it had a gradient). Local; -1 if out of range. */
ADAMPI_API int64_t adampi_tensor_step(const adampi *opt, int index);

/* Where the last step's time went on this rank, and what the library holds. */
typedef enum adampi_phase {
  ADAMPI_PHASE_REDUCE_SCATTER = 0, /* data-parallel step: gradient reduce-scatter and mean */
  ADAMPI_PHASE_STATS = 1,          /* statistics pass (reads gradients and parameters) */
  ADAMPI_PHASE_EXCHANGE = 2,       /* the statistics collective(s) and the decisions */
  ADAMPI_PHASE_UPDATE = 3,         /* update pass (writes parameters and state) */
  ADAMPI_PHASE_ALLGATHER = 4,      /* data-parallel step: parameter all-gather */
  ADAMPI_NUM_PHASES = 5
} adampi_phase;

typedef struct adampi_profile {
  double seconds[ADAMPI_NUM_PHASES]; /* wall time of each phase of the last step on this rank */
  int64_t exchange_bytes;            /* bytes this rank contributed to the statistics exchange(s) */
  int64_t gradient_bytes;            /* bytes of gradients this rank reduced (data-parallel step) */
  int64_t allocated_bytes;           /* memory the library allocated on this rank for the layout: every
                                      * buffer adampi_commit made (state, gradient shard, master, statistics,
                                      * row scratch, tasks, exchange packet), in the bytes asked for */
  int64_t buffer_bytes;              /* adampi_alloc_step_buffers' params and grads on this rank, whole pages (0 if none) */
  int64_t master_bytes;              /* the fp32 master of a 16-bit handle (in allocated_bytes too) */
} adampi_profile;

/* Profile of the last step. Local. ADAMPI_ERR_ARG for NULL, ADAMPI_ERR_STATE before commit. */
ADAMPI_API adampi_status adampi_get_profile(const adampi *opt, adampi_profile *profile);

/* This rank's shard of a state array (hi - lo floats, owned by the handle), or NULL if the kind
 * does not apply to the optimizer, before commit, or when the shard is empty. Local. */
ADAMPI_API const float *adampi_state_shard(const adampi *opt, adampi_state_kind kind);

/* ---- State from and to the caller (front ends such as adampi.torch's state_dict) ------------ */

/* Optimizer state of this rank's shard, as the caller hands it in. The arrays hold hi - lo floats
 * each (this rank's shard [lo, hi) of adampi_shard) and may be NULL only when the shard is empty;
 * the ones that do not apply to the optimizer kind must be NULL. */
typedef struct adampi_state_in {
  const float *exp_avg;        /* AdamP m: finite */
  const float *exp_avg_sq;     /* AdamP v: finite and >= 0 */
  const float *momentum;       /* SGDP momentum buffer: finite */
  const int64_t *tensor_steps; /* adampi_num_tensors counters, 0..2^53, identical on every rank */
  int64_t steps_taken;         /* the handle's counters, 0..2^53, identical on every rank */
  int64_t steps_skipped;
} adampi_state_in;

/* Replace the optimizer state (this rank's shard of the state arrays, every tensor's step counter
 * and the handle's step counters) with the caller's values, which are copied. Collective; after
 * adampi_commit. Validated like adampi_load: a NULL array where the shard is not empty (or one
 * that does not apply to the kind), a NaN or Inf, a negative exp_avg_sq, a counter outside
 * 0..2^53, or counters that differ across ranks make every rank return the same status
 * (ADAMPI_ERR_ARG, ADAMPI_ERR_NONFINITE or ADAMPI_ERR_MISMATCH) with a message naming the tensor,
 * and change nothing on any rank. ADAMPI_ERR_NOMEM if the staging copy cannot be allocated.
 * Diagnostics are reset as by adampi_load. Ownership of in and its arrays stays with the caller. */
ADAMPI_API adampi_status adampi_set_state(adampi *opt, const adampi_state_in *in);

/* Share the shards of a flat buffer: on return every rank's full (adampi_numel floats) holds, in
 * every rank r's shard [lo_r, hi_r), the values that rank r had there. The parameter all-gather of
 * adampi_step, for callers of adampi_step_sharded and for gathering a state array (copy
 * adampi_state_shard into full[lo, hi) first). Collective; after adampi_commit; pairwise rounds
 * of bounded messages, so any size works. full may be this rank's step-buffer params. On error
 * (ADAMPI_ERR_ARG for a NULL full on any rank, ADAMPI_ERR_STATE before commit, ADAMPI_ERR_MPI)
 * every rank returns the same status; after an MPI failure full may be partly updated. */
ADAMPI_API adampi_status adampi_allgather(adampi *opt, float *full);

/* ---- Checkpoints (one self-describing HDF5 file; see the README for its layout) ---------------- */

/* Caller area of a checkpoint: small named integers (epoch, data position, RNG seed), stored as
 * attributes of /user and returned verbatim. Names: 1..47 characters, no '/'. */
#define ADAMPI_USER_MAX 32
#define ADAMPI_USER_NAME 48
typedef struct adampi_user {
  int count;
  char name[ADAMPI_USER_MAX][ADAMPI_USER_NAME];
  int64_t value[ADAMPI_USER_MAX];
} adampi_user;

/* Set (add or replace) or get a named value. Local. ADAMPI_ERR_ARG for a bad name, a full area,
 * or (get) a name that is not there; nothing changes on error. */
ADAMPI_API adampi_status adampi_user_set(adampi_user *user, const char *name, int64_t value);
ADAMPI_API adampi_status adampi_user_get(const adampi_user *user, const char *name, int64_t *value);

/* Caller arrays of a checkpoint: named float32 arrays that are not parameters but belong to the
 * model's state and must be saved and restored with it (BatchNorm running mean and variance, an
 * exponential average of the weights, ...). The optimizer never updates them. They are
 * replicated: every rank holds the same values (adampi_save checks it). Each is stored whole as
 * the 1-d float32 dataset /arrays/NAME with a checksum like every other dataset. Names follow the
 * caller area's rules (1..47 characters, no '/') and are unique within a list; every rank passes
 * the same list (names and lengths, in the same order). */
#define ADAMPI_ARRAYS_MAX 64
typedef struct adampi_array {
  const char *name; /* owned by the caller */
  float *data;      /* len floats, owned by the caller: adampi_save reads them, adampi_load writes
                       them (only when the whole load succeeds) */
  int64_t len;      /* >= 1 */
} adampi_array;

typedef struct adampi_save_options {
  adampi_params_form params;  /* default ADAMPI_PARAMS_SHARD */
  int keep_last;              /* also keep the K previous checkpoints as PATH.1 .. PATH.K; 0: none */
  const adampi_user *user;    /* caller area to store, or NULL */
  const adampi_array *arrays; /* num_arrays caller arrays to store (0..ADAMPI_ARRAYS_MAX), or NULL */
  int num_arrays;
} adampi_save_options;

typedef struct adampi_load_options {
  adampi_params_form params;  /* default ADAMPI_PARAMS_SHARD */
  int keep_hparams;           /* 1: keep this handle's hyper-parameters; 0 (default): take the file's */
  adampi_user *user;          /* receives the caller area, or NULL */
  const adampi_array *arrays; /* num_arrays caller arrays to read into their data, or NULL; the
                                 file's other arrays are ignored */
  int num_arrays;
} adampi_load_options;

ADAMPI_API adampi_save_options adampi_save_defaults(void);
ADAMPI_API adampi_load_options adampi_load_defaults(void);

/* Save parameters, optimizer state, step counters, hyper-parameters, the caller area and the
 * caller arrays to path.
 * params holds elements of the handle's type; with a 16-bit type the fp32 master is saved as the
 * parameters (params is read only if no step, adampi_set_master or adampi_load made the master
 * yet) and the file records the type.
 * Collective; parallel HDF5 with collective I/O, each rank writing only its shard's part.
 * Atomic: the file is written as PATH.adampi-tmp in the same directory, flushed and fsynced, then
 * renamed over PATH (and the directory fsynced), so a crash at any moment leaves the previous file
 * at PATH intact. On error PATH and the optimizer are unchanged and every rank returns the same
 * status. params and the caller arrays (ownership stays with the caller) are read only; rank 0
 * writes the arrays. Caller arrays are refused before anything is written: ADAMPI_ERR_ARG for
 * more than ADAMPI_ARRAYS_MAX, a bad or repeated name, len < 1 or NULL data; ADAMPI_ERR_MISMATCH
 * (naming the array) when ranks pass different lists or hold different values. */
ADAMPI_API adampi_status adampi_save(adampi *opt, const char *path, const void *params,
                                     const adampi_save_options *options);

/* Load a checkpoint saved on any number of ranks into this committed optimizer (its registration
 * must match: names, shapes, optimizer kind). A checkpoint of any element type loads into a handle
 * of any type: the file's fp32 parameters become the master, and params (elements of the handle's
 * type) receives them rounded to the type. Collective; each rank reads only its shard's part.
 * Every dataset's checksum is verified. Each caller array of options->arrays must be in the file
 * with exactly len float32 elements and an intact checksum, else ADAMPI_ERR_FORMAT naming it (a
 * file saved without arrays loads when none are asked for). On any error (missing or corrupt
 * file, mismatch, newer format) the optimizer, params, options->user and the arrays' data are
 * unchanged and every rank returns the same status with a message naming the problem (and the
 * tensor or array, for theirs). */
ADAMPI_API adampi_status adampi_load(adampi *opt, const char *path, void *params,
                                     const adampi_load_options *options);

#ifdef __cplusplus
}
#endif
#endif /* ADAMPI_H */
