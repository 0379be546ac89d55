/*
 * internal.h - what the library's files share: the handle, the layout plan, the error helpers.
 * Not installed; nothing here is part of the API.
 *
 * Vocabulary used throughout:
 *   N      elements of the flat buffer, P ranks, [lo, hi) this rank's shard;
 *   leaf   the unit a tensor's statistics are summed over: a channel row for tensors with ndim > 1
 *          (row_len = numel / d0 elements, always whole on one rank), a single element otherwise;
 *   piece  the part of a tensor inside one rank's shard (a range of whole leaves);
 *   node   a node of the fixed pairwise tree over a tensor's leaves. Every sum across leaves is the
 *          value of that tree, so it depends on leaf positions only, never on where shards cut;
 *   task   a unit of work of a pass over the shard: about ADAMPI_TASK_LEN elements of whole rows;
 *   packet one message of the pairwise exchanges: at most packet_len floats (exchange.c);
 *   step   the call (adampi_step, adampi_step_sharded); a tensor's count of the steps that
 *          updated it is its update count t (tensor->updates), and lr / (1 - beta1^t) is lr_bc1.
 */
#ifndef ADAMPI_INTERNAL_H
#define ADAMPI_INTERNAL_H

#include "adampi.h"
#include "dtype.h"
#include "exchange.h"
#include "hparams_table.h"

#include <math.h>
#include <stdarg.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdatomic.h>
#include <stdint.h>

/* A conversion of n floats into a 16-bit type (precision.c, adampi__f16_rounding). */
typedef void (*adampi__round_fn)(const float *in, uint16_t *out, int64_t n);

/* The optimizer state arrays of the shard, by kind; the checkpoint stores them in this order. */
enum { ADAMPI__EXP_AVG = 0, ADAMPI__EXP_AVG_SQ = 1, ADAMPI__MOMENTUM = 0, ADAMPI__MAX_STATE = 2 };

/* Sums over leaves that the projection test needs (MATHS.md "The projection": <g,w>, <g,g>, <w,w>). */
typedef struct adampi__sums {
  double gw, gg, ww;
} adampi__sums;

typedef struct adampi__tensor {
  char *name;
  int ndim;
  int64_t shape[ADAMPI_MAX_NDIM];
  int group;
  int64_t offset, numel;
  int64_t leaves, leaf_len; /* ndim > 1: d0 rows of numel/d0; else numel leaves of 1 */
  int projectable;          /* ndim > 1 (MATHS.md "Which tensors are projected") */
  int64_t updates;          /* t: the steps that updated this tensor (adampi_tensor_step) */
  adampi__sums sums;        /* whole-tensor sums of the last step (layer view) */
  adampi_diag diag;         /* the last step that updated the tensor (adampi_diag_get) */
  adampi_diag staged;       /* this step's statistics (decide_projection), published into diag only
                               when the step commits (apply_update): refused or skipped, it is dropped */

  /* Plan, set by commit. Ranks [first_rank, last_rank] hold the tensor's pieces. */
  int first_rank, last_rank;
  int64_t cos_slot;   /* stats buffer: one max-cosine slot per rank of the span */
  int64_t node_base;  /* index of the tensor's first tree node (all pieces, in tree order) */
  int64_t num_nodes;  /* nodes of all pieces */
  int64_t my_node0;   /* index, within the tensor's nodes, of this rank's first node */
  int64_t my_nodes;   /* nodes of this rank's piece (0 if it holds none) */
  int64_t my_leaf_lo, my_leaf_hi; /* this rank's piece, in leaves */
  int64_t my_row_base;            /* first slot of this piece in the per-row arrays */
  int64_t task_lo, task_hi;       /* this piece's tasks: opt->tasks[task_lo, task_hi) */
} adampi__tensor;

/* Coefficients of one update of one tensor, scalars rounded to float once (adamp.c, sgdp.c). */
typedef struct adampi__coef {
  float b1, omb1, b2, omb2, sqbc2, eps, lr_bc1; /* AdamP; lr_bc1 = lr / (1 - beta1^t) */
  float mom, omd, lr;                           /* SGDP */
  float decay;                                  /* weight decay factor (1 when none) */
  float gmul;                                   /* clip_grad_norm_'s factor on g (1 when not clipping) */
  int nesterov;
} adampi__coef;

/* A unit of work of a pass over the shard: rows [r0, r1) (leaves) of one tensor. The passes run
 * their tasks in any order, on any thread: each row is computed whole by one thread, so the
 * results do not depend on the thread count. */
typedef struct adampi__task {
  int tensor;
  int64_t r0, r1;
} adampi__task;

/* How a pass hands its tasks to its threads (adampi__tasks_start, adampi__task_next): thread t
 * first takes, in order, the tasks of its own contiguous range, the t-th of opt->threads ranges
 * of about equal elements (set at commit, layout.c thread_ranges), then helps the other threads at
 * their ranges' fronts. Each thread's memory streams stay
 * contiguous (handing out single tasks in order made the threads take turns, every task), and the
 * work is balanced as with single tasks (AMD EPYC, two threads, alternating every other step in
 * one process: the statistics pass 0.33-0.45 ms faster on ResNet-50 shapes and 3.1 ms on GPT-2's,
 * the update 0.4-0.75 and 2.6 ms). One cursor per thread. */
typedef struct adampi__cursor {
  _Atomic int64_t next; /* the range's next task */
  int64_t end;          /* its end; it starts at the previous range's end (0 for thread 0) */
  char pad[48];
} adampi__cursor;

struct adampi {
  MPI_Comm comm; /* our duplicate, MPI_ERRORS_RETURN */
  int rank, size;
  adampi_config cfg;
  int threads; /* resolved thread count, >= 1 */

  int num_groups, cap_groups;
  adampi_hparams *groups;
  int num_tensors, cap_tensors;
  adampi__tensor *tensors;

  int committed;
  int64_t numel;
  int64_t *shard_lo; /* size + 1 cut positions: rank r owns [shard_lo[r], shard_lo[r+1]) */
  int64_t lo, hi;

  /* Optimizer state for [lo, hi) only: AdamP state[ADAMPI__EXP_AVG] (m) and
   * state[ADAMPI__EXP_AVG_SQ] (v); SGDP state[ADAMPI__MOMENTUM] (its second is a 0-float block). */
  float *state[ADAMPI__MAX_STATE];
  float *grad_shard; /* data-parallel step: averaged gradients of the shard */
  float *packet_buf;  /* data-parallel step: one packet of another rank's gradients */
  int64_t packet_len; /* floats per message of the pairwise exchanges (exchange.c) */

  /* adampi_alloc_step_buffers (buffers.c): this rank's segment of a shared-memory object, its
   * params then its grads (numel elements of the caller's type each, each on whole pages). */
  void *step_params, *step_grads; /* NULL until allocated */
  size_t step_bytes;     /* of every rank's segment */
  void **peer_params;    /* per rank of comm on this node: its params (writable) and grads */
  void **peer_grads;     /* (read-only) mapped here; ours at our rank; NULL for other nodes */
  int all_on_node;        /* every rank on this node: the node-shared transport sends no messages */

  /* Statistics, proportional to rows and tensors, never to elements. */
  int64_t my_rows;  /* leaves of projectable tensors in this shard */
  adampi__sums *row_sums;
  double *row_wu;   /* <w,u> of each local row, filled when projecting */
  int64_t num_nodes;
  int64_t stats_len; /* doubles in the statistics exchange */
  int64_t node_area; /* first double of the node sums in stats */
  int64_t *bounds;   /* scratch: leaf bounds of a tensor's pieces (size + 1) */
  double *stats;     /* [status P][hash P][cos slots][3 per node] */
  double *wu_nodes;  /* one per node: <w,u> exchange of layer-projected tensors */
  unsigned char *view; /* decision of this step, per tensor */
  float *k_layer;      /* layer-view projection coefficient, per tensor */
  float *u_row;        /* per thread ADAMPI__U_ROWS rows of u_row_len: the directions of channel rows */
  float *g_row;        /* 16-bit handles, per thread: a row of adampi__direct_grads, widened */
  int64_t u_row_len;   /* the longest local projectable row, at most 65536 */
  adampi__task *tasks; /* the local pieces cut into tasks of about ADAMPI_TASK_LEN elements */
  int64_t num_tasks;
  double *task_cos;    /* per task of a projectable tensor: its rows' largest cosine, this step */
  adampi__cursor *cursors; /* per thread: its range of tasks in the running pass */
  adampi__coef *coefs;   /* per tensor, the coefficients of the current step */

  /* Mixed precision (precision.c). elem: bytes per element of the caller's parameters and
   * gradients. master: 16-bit types only, the fp32 parameters of [lo, hi), valid once a step,
   * adampi_set_master or adampi_load has set them. */
  size_t elem;
  float *master;
  int master_valid;
  /* The step being taken: where the update pass rounds the master to (this rank's shard of the
   * caller's parameters, 16-bit types; NULL otherwise), and the clipping factor on g. */
  void *round_out;
  float gmul;
  /* The step's gradient shard as the caller passed it, when it must be made float32 and unscaled
   * (16-bit types, or a grad_scale; NULL: g is ready as it is): into grad_shard by the statistics
   * pass, task by task, each task just before its row sums read it back from cache; except the
   * 16-bit rows of projectable tensors (adampi__direct_grads), which each pass reads itself. */
  const void *intake;
  float intake_scale;
  adampi_step_info last;

  int64_t steps_taken, steps_skipped;
  adampi_profile profile;

  int err_set;
  char errmsg[1024];
};

/* Record the first failure of the current call (later ones are ignored). Returns status. */
adampi_status adampi__fail(adampi *opt, adampi_status status, const char *file, int line,
                           const char *fmt, ...) __attribute__((format(printf, 5, 6)));
#define ADAMPI_FAIL(opt, st, ...) adampi__fail((opt), (st), __FILE__, __LINE__, __VA_ARGS__)
/* Collective: the lowest failing rank's status and message become every rank's. */
adampi_status adampi__agree(adampi *opt, adampi_status st);
/* Start a public call: forget the previous call's failure. */
void adampi__clear_error(adampi *opt);

/* Check an MPI call; on failure record it and jump to done with st = ADAMPI_ERR_MPI. */
#define ADAMPI_MPI(opt, call)                                                  \
  do {                                                                         \
    int mpi_rc_ = (call);                                                      \
    if (mpi_rc_ != MPI_SUCCESS) {                                              \
      char mpi_msg_[MPI_MAX_ERROR_STRING];                                     \
      int mpi_len_ = 0;                                                        \
      MPI_Error_string(mpi_rc_, mpi_msg_, &mpi_len_);                          \
      st = ADAMPI_FAIL((opt), ADAMPI_ERR_MPI, "%s failed: %s", #call, mpi_msg_); \
      goto done;                                                               \
    }                                                                          \
  } while (0)

/* hparams.c: the fields of a group (ADAMPI_HPARAMS_TABLE, each as a double) as bytes without struct
 * padding, for comparisons and hashes. */
#define ADAMPI_HPARAMS_BYTES (8 * ADAMPI_HPARAMS_COUNT)
void adampi__hparams_bytes(const adampi_hparams *hp, unsigned char out[ADAMPI_HPARAMS_BYTES]);
/* hparams.c: validation shared by add_group, set_hparams and the file readers. */
adampi_status adampi__hparams_check(adampi_kind kind, const adampi_hparams *hp, char *msg, size_t len);

/* precision.c: n elements of the type into float32 / float32 into the type (dtype.h's bits). */
void adampi__widen(adampi_dtype dtype, const void *in, float *out, int64_t n);
void adampi__round(adampi_dtype dtype, const float *in, void *out, int64_t n);
/* float16 rounding by the CPU's vcvtps2ph (precision.c), the same bits as adampi__to_f16, or NULL
 * where the CPU lacks it (it needs x86-64-v3) or the build is ADAMPI_NO_CLONES. adampi__round uses
 * it by itself; the rows kernels round their last row by it (step.c, cpu_rounding). Until the
 * seventeenth round the narrower clones' update wrote w in blocks of 2048 and rounded each by it,
 * from L1; the wide and x86-64-v3 sets round each 16 as they write them (adampi__round16). */
adampi__round_fn adampi__f16_rounding(void);
/* One round of the gradient reduction over n float16 terms (exchange.c's add_block, widened as
 * adampi__from_f16 widens): acc = (first ? own : acc) + in, then / ranks if last. The CPU's
 * widening (F16C, with AVX-512 or AVX2) in one pass, or NULL where the CPU lacks it or the build is
 * ADAMPI_NO_CLONES. */
typedef void (*adampi__add16_fn)(float *acc, const uint16_t *own, const uint16_t *in, int64_t n, int first, int last,
                                 float ranks);
adampi__add16_fn adampi__f16_adding(void);
/* The gradients of a step as the passes read them: out <- widen(g) / scale (g may be out for float32). */
void adampi__intake(adampi_dtype dtype, const void *g, float *out, int64_t n, float scale);
/* Does this step read t's gradients where the caller passed them (opt->intake), in every pass,
 * instead of from grad_shard? 16-bit gradients of projectable tensors whose rows fit g_row: the
 * statistics pass sums each row in place (adampi__row_sums16, where the CPU has AVX2 or AVX-512) or
 * widens it into g_row for its sums, the update's kernels widen each element as they read it
 * (adampi__span.g16: a shift for bfloat16, adampi__f16x16's integer formula 16 at a time for
 * float16), all unscaling by the gradient scale alike, to the same floats. Each pass then
 * reads 2 bytes per element, where writing grad_shard and reading it back would move 8 more (the
 * bfloat16 step took 0.78-0.91 of its time, ResNet-50 and GPT-2 shapes, AMD EPYC). float32
 * gradients with a scale are not worth a path of their own. */
static inline int adampi__direct_grads(const adampi *opt, const adampi__tensor *t)
{
  return opt->intake != NULL && opt->cfg.dtype != ADAMPI_FLOAT32 && t->projectable &&
         t->leaf_len <= opt->u_row_len;
}
/* The master from this rank's shard of the caller's parameters (16-bit types; else nothing). The
 * caller decides when it becomes valid (a step: only when it commits). */
void adampi__master_from(adampi *opt, const void *param_shard);
/* state.c: a shard array (hi - lo floats) is finite, and >= 0 when nonneg; else the failure is
 * recorded, naming the rank, what, the tensor and the element. Local. */
adampi_status adampi__check_shard(adampi *opt, const char *what, const float *x, int nonneg);

/* Elements per task (rows are never split for tensors with ndim > 1). */
#define ADAMPI_TASK_LEN ((int64_t)1 << 16)
/* The thread count for a requested one (0: OpenMP's default; 1 without OpenMP). */
int adampi__thread_count(int requested);

/* The passes' task hand-out (adampi__cursor). adampi__tasks_start: before a parallel region (not
 * inside it); adampi__task_next: in it, by thread `me`, the next task to run, or -1 when none is
 * left. */
void adampi__tasks_start(adampi *opt);
int64_t adampi__task_next(adampi *opt, int me);

/* This thread's number in the running parallel region (0 outside one, or without OpenMP). */
static inline int adampi__thread_num(void)
{
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/* memory.c: zeroed, touched, huge-page-advised allocation; free with the same byte count. */
void *adampi__alloc_zeroed(size_t bytes);
void adampi__free_zeroed(void *p, size_t bytes);

/* buffers.c: the step through the shared buffers (see there). */
void adampi__free_step_buffers(adampi *opt);
/* 1 if params and grads are this rank's step buffers. */
int adampi__direct_step(const adampi *opt, const void *params, const void *grads);
/* A full memory fence if there are step buffers (on both sides of a synchronising collective). */
void adampi__step_buffers_sync(adampi *opt);

/* layout.c */
adampi_status adampi__commit_layout(adampi *opt);
void adampi__free_layout(adampi *opt);
/* Visit the tree nodes of tensor t's piece on rank `rank`, in tree order. */
typedef void (*adampi__node_fn)(void *ctx, int64_t lo, int64_t size);
void adampi__visit_nodes(const adampi *opt, const adampi__tensor *t, int rank, adampi__node_fn fn,
                         void *ctx);
/* Leaves [*a, *b) of tensor t inside rank r's shard (empty: *a == *b). */
void adampi__piece_of(const adampi *opt, const adampi__tensor *t, int r, int64_t *a, int64_t *b);

/* stats.c: statistics pass, decision and the pairwise trees (MATHS.md "The projection"). */
/* The statistics pass (reads only): per tensor with a gradient, the row sums, the largest row
 * cosine and the tree nodes of this rank's piece, into stats for the exchange. */
void adampi__statistics_pass(adampi *opt, const float *w, const float *g, const unsigned char *has_grad);
/* After the exchange: per tensor with a gradient, sums, staged diagnostics and view. Returns the index of
 * the first tensor whose gradient (*is_param = 0) or parameters (*is_param = 1) hold NaN/Inf, or -1. */
int adampi__decide_projection(adampi *opt, const unsigned char *has_grad, int *is_param);
/* Tree nodes of <w,u> for this rank's piece of t, from row_wu, into wu_nodes. */
void adampi__wu_nodes(adampi *opt, const adampi__tensor *t);
/* <w,u> over all of t, from wu_nodes (after the exchange if t is cut). */
double adampi__combine_wu(adampi *opt, const adampi__tensor *t);

/* Row-lane sums: 16 lanes relative to the row start, combined in a fixed tree. */
#define ADAMPI_LANES 16
void adampi__row_sums_wide(const float *g, const float *w, int64_t n, adampi__sums *out);
void adampi__row_sums_narrow(const float *g, const float *w, int64_t n, adampi__sums *out);
/* The arrays one kernel call works on: n elements of the shard from one position. */
typedef struct adampi__span {
  const float *g;                  /* averaged gradients (float32; unused where g16 is set) */
  float *w;                        /* parameters */
  float *state[ADAMPI__MAX_STATE]; /* the optimizer's state arrays (NULL past its count) */
  int64_t n;
  uint16_t *w16; /* where the kernels that write w also write it rounded to dtype16, or NULL */
  int dtype16;   /* ADAMPI_BFLOAT16 or ADAMPI_FLOAT16 when w16 is set, else ADAMPI_FLOAT32 */
  /* The caller's 16-bit gradients (g16_type ADAMPI_BFLOAT16 or ADAMPI_FLOAT16), read by the
   * kernels in place of g: each widened (exactly) and divided by the step's grad_scale (1 leaves
   * every finite value as it is), as adampi__grad_scaling applies it, the floats the statistics
   * pass made of them (adampi__grad_at). NULL, with g16_type ADAMPI_FLOAT32: g. */
  const uint16_t *g16;
  int g16_type; /* with ADAMPI__GRAD_MUL where gq multiplies (adampi__grad_scaling) */
  float gq;     /* the gradient scale, or its reciprocal (ADAMPI__GRAD_MUL) */
} adampi__span;

/* The gradient scale s as every loop that unscales gradients applies it (the kernels, the intake
 * and the data-parallel reduction): x / s, or x * (1/s) where s is a power of two with s and 1/s
 * normal floats (2^-126 to 2^126). There the two are the same number, x/s rounded once, for every
 * x (no operand is subnormal, so a denormals-are-zero mode changes neither), and the
 * multiplication takes a fraction of the division's time: AdamP's update divides twice per element
 * already, and with 16-bit gradients a third division weighed on it (AMD EPYC, ResNet-50 shapes,
 * 16-bit AdamP and SGDP: the AVX2 clones' step took 0.93-0.95 of its time with the
 * multiplication, the AVX-512 clones' 0.975-0.999). Loss scalers use powers of two
 * (adampi_loss_scaler, torch's GradScaler); any other scale divides. Returns 1 and *q = 1/s for a
 * multiplication, 0 and *q = s for a division. */
static inline int adampi__grad_scaling(float s, float *q)
{
  uint32_t u = adampi__f32_bits(s), e = u >> 23; /* s > 0: the sign bit is 0 */
  if ((u & 0x7FFFFFu) == 0 && e >= 127 - 126 && e <= 127 + 126) {
    *q = adampi__bits_f32((254u - e) << 23); /* 2^-(e-127) */
    return 1;
  }
  *q = s;
  return 0;
}

/* In a kernel's gt (a gradients' type, a constant where it is inlined): gq multiplies (*q of
 * adampi__grad_scaling's 1), rather than divides. Only with the 16-bit types. */
#define ADAMPI__GRAD_MUL 4
#define ADAMPI__GRAD_TYPE(gt) ((gt) & 3)

/* X(GT), with GT the constant that equals a span's g16_type gt (a kernel's entry: every loop below
 * it is built for one gradients' type and scaling). */
#define ADAMPI__GRAD_CASES(gt, X)                                                                 \
  do {                                                                                            \
    if ((gt) == ADAMPI_BFLOAT16) X(ADAMPI_BFLOAT16);                                              \
    else if ((gt) == (ADAMPI_BFLOAT16 | ADAMPI__GRAD_MUL)) X(ADAMPI_BFLOAT16 | ADAMPI__GRAD_MUL); \
    else if ((gt) == ADAMPI_FLOAT16) X(ADAMPI_FLOAT16);                                           \
    else if ((gt) == (ADAMPI_FLOAT16 | ADAMPI__GRAD_MUL)) X(ADAMPI_FLOAT16 | ADAMPI__GRAD_MUL);   \
    else X(ADAMPI_FLOAT32);                                                                       \
  } while (0)

/* x unscaled by a kernel's gq (gt as above): a float, or a vector of floats (GCC vector
 * extensions), in the kernels' 16-bit loops. */
#define ADAMPI__UNSCALE(x, gq, gt) ((gt) & ADAMPI__GRAD_MUL ? (x) * (gq) : (x) / (gq))
static inline float adampi__unscale(float x, float gq, int gt) { return ADAMPI__UNSCALE(x, gq, gt); }

/* x[0..n) unscaled by the scale s in place, as adampi__grad_scaling says (s 1: nothing to do). */
static inline void adampi__unscale_array(float *x, int64_t n, float s)
{
  float q;
  if (s == 1.0f) return;
  if (adampi__grad_scaling(s, &q))
    for (int64_t i = 0; i < n; i++) x[i] = x[i] * q;
  else
    for (int64_t i = 0; i < n; i++) x[i] = x[i] / q;
}

/* Gradient i of a kernel's span as float32: g[i] (gt ADAMPI_FLOAT32), or g16[i] of type gt widened
 * and unscaled by gq, as adampi__intake makes it (gt a constant wherever it is inlined, so that
 * the loops vectorize). The update runs only on finite gradients, where x / 1 is x and where F16C's
 * widening (adampi__intake's, where the CPU has it) gives adampi__from_f16's bits. */
static inline __attribute__((always_inline)) float adampi__grad_at(const float *g, const uint16_t *g16, int64_t i,
                                                                  float gq, int gt)
{
  if (ADAMPI__GRAD_TYPE(gt) == ADAMPI_BFLOAT16) return adampi__unscale(adampi__from_bf16(g16[i]), gq, gt);
  if (ADAMPI__GRAD_TYPE(gt) == ADAMPI_FLOAT16) return adampi__unscale(adampi__from_f16(g16[i]), gq, gt);
  return g[i];
}

/* The element kernels are built for x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA, F16C) and the
 * baseline, chosen at load time (GCC on x86-64); every clone rounds alike (-ffp-contract=off; the
 * one contraction, in adampi__row_sums, is of exact products and rounds alike too).
 * ADAMPI_NO_CLONES builds the baseline only, for the test that compares the two; it also leaves
 * out the float16 conversions by F16C (ADAMPI__HW_CONVERSIONS, precision.c), so that the same test
 * compares them with the software ones. A helper of the kernels that GCC leaves out of line is
 * built once, for the baseline, and every clone calls it: the 16-bit conversions and gradient
 * reads are always inlined for that reason (once the rows kernels had grown, GCC left
 * adampi__grads16 out of the AVX2 clones, whose float16 update then took 2.9x its time, AMD
 * EPYC). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(ADAMPI_NO_CLONES)
#define ADAMPI__HW_CONVERSIONS 1
#if defined(ADAMPI_CLONES_AVX2)
#define ADAMPI_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ADAMPI_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define ADAMPI__WIDE_CLONES 1 /* the build has x86-64-v4 clones (adampi__wide_vectors) */
#endif
#else
#define ADAMPI_CLONES
#endif

/* The three sets of a kernel (adamp.c, sgdp.c), each built for the one target it runs on: the
 * wide set where adampi__wide_vectors is set (x86-64-v4 CPUs, in builds with such clones); the
 * x86-64-v3 set where adampi__v3_kernels is (AVX2, FMA and F16C: the narrow vectors, with float16
 * converted by the CPU inside the loops, adampi__f16x8_v3 and ADAMPI__F16_INLINE); the narrow set,
 * the baseline, elsewhere. ADAMPI__KERNEL_SET picks the one to call. (Until the seventeenth round the
 * narrow set was built as target_clones of x86-64-v3 and the baseline, so neither clone's loops
 * could use F16C, the baseline having none; before that, where both sets were ADAMPI_CLONES, half
 * of the clones were never called, and the rows kernels doubled the library's compile time.) In
 * builds with neither (ADAMPI_NO_CLONES, other compilers) only the narrow set is called. */
#if defined(ADAMPI__WIDE_CLONES)
#define ADAMPI_CLONES_WIDE __attribute__((target("arch=x86-64-v4")))
#else
#define ADAMPI_CLONES_WIDE /* never called */
#endif
#if defined(ADAMPI__HW_CONVERSIONS)
#define ADAMPI_CLONES_V3 __attribute__((target("arch=x86-64-v3")))
#else
#define ADAMPI_CLONES_V3 /* never called */
#endif
#define ADAMPI_CLONES_NARROW
#define ADAMPI__KERNEL_SET(wide, v3, narrow) (adampi__wide_vectors ? (wide) : adampi__v3_kernels ? (v3) : (narrow))

/* adampi__from_f16 on 16 finite elements at once, the same bits (GCC vector extensions, every
 * clone alike; the update, its only user, sees finite gradients alone). Normal values rebias the
 * exponent; a subnormal m * 2^-24 is 2^-14 (1 + m/1024) - 2^-14, both normal floats, so the
 * subtraction is exact and no float32 subnormal is involved (flush-to-zero modes change nothing).
 * Every finite float16 gives adampi__from_f16's bits (checked for all of them). GCC 12 widens
 * _Float16 vectors one element at a time, and the scalar formula inside the update's loops
 * vectorized poorly (45 ms against 17, ResNet-50 shapes). h is loaded through memcpy and needs no
 * alignment. */
typedef uint16_t adampi__v16h __attribute__((vector_size(32)));
typedef uint32_t adampi__v16u __attribute__((vector_size(64)));
typedef float adampi__v16f __attribute__((vector_size(64)));
static inline __attribute__((always_inline)) void adampi__f16x16(const uint16_t *h, adampi__v16f *out)
{
  adampi__v16h hv;
  memcpy(&hv, h, sizeof hv);
  adampi__v16u x = __builtin_convertvector(hv, adampi__v16u);
  adampi__v16u sign = (x & 0x8000u) << 16, sh = (x & 0x7FFFu) << 13;
  adampi__v16u normal = sh + 0x38000000u;
  adampi__v16u sub = (adampi__v16u)((adampi__v16f)(sh + 0x38800000u) - 0x1p-14f);
  adampi__v16u is_normal = (adampi__v16u)(sh >= (0x0400u << 13)); /* all ones or 0 per lane */
  *out = (adampi__v16f)(sign | (normal & is_normal) | (sub & ~is_normal));
}

/* adampi__from_bf16 on 16 elements at once (a shift), in the same vector form. */
static inline __attribute__((always_inline)) void adampi__bf16x16(const uint16_t *h, adampi__v16f *out)
{
  adampi__v16h hv;
  memcpy(&hv, h, sizeof hv);
  *out = (adampi__v16f)(__builtin_convertvector(hv, adampi__v16u) << 16);
}

/* adampi__f16x16 and adampi__bf16x16 on 8 elements, in 32-byte vectors: the narrower clones' form
 * (adampi__wide_vectors 0), the same operations lane by lane. */
typedef uint16_t adampi__v8h __attribute__((vector_size(16)));
typedef uint32_t adampi__v8u __attribute__((vector_size(32)));
typedef int32_t adampi__v8s __attribute__((vector_size(32)));
typedef float adampi__v8fn __attribute__((vector_size(32)));
static inline __attribute__((always_inline)) void adampi__f16x8(const uint16_t *h, adampi__v8fn *out)
{
  adampi__v8h hv;
  memcpy(&hv, h, sizeof hv);
  adampi__v8u x = __builtin_convertvector(hv, adampi__v8u);
  adampi__v8u sign = (x & 0x8000u) << 16, sh = (x & 0x7FFFu) << 13;
  adampi__v8u normal = sh + 0x38000000u;
  adampi__v8u sub = (adampi__v8u)((adampi__v8fn)(sh + 0x38800000u) - 0x1p-14f);
  adampi__v8u is_normal = (adampi__v8u)(sh >= (0x0400u << 13));
  *out = (adampi__v8fn)(sign | (normal & is_normal) | (sub & ~is_normal));
}
static inline __attribute__((always_inline)) void adampi__bf16x8(const uint16_t *h, adampi__v8fn *out)
{
  adampi__v8h hv;
  memcpy(&hv, h, sizeof hv);
  *out = (adampi__v8fn)(__builtin_convertvector(hv, adampi__v8u) << 16);
}

/* adampi__to_bf16 on the 16 floats at x, into out: one 64-byte vector (wide), or two 32-byte ones
 * (the narrower clones' form), the same bits for every input. The narrow form compares signed (the
 * magnitude fits) and takes each lane's upper half by one shuffle: as an unsigned compare and a
 * conversion of r >> 16, GCC 12 gave it a bias, a mask and a pack, whose constants AVX2's 16
 * registers could not hold beside the projected rows' own (they went to the stack). The projected
 * rows' second halves
 * round each chunk as they write it (adamp.c, sgdp.c): a pass over each row from cache afterwards,
 * as float16 took in the narrower clones by the CPU's conversion until the seventeenth round, made
 * the bfloat16 update 5-9% slower (AMD EPYC). */
static inline __attribute__((always_inline)) void adampi__bf16_round16(const float *x, uint16_t *out, int wide)
{
  if (wide) {
    adampi__v16u u;
    memcpy(&u, x, sizeof u);
    adampi__v16u nan = (adampi__v16u)((u & 0x7FFFFFFFu) > 0x7F800000u); /* all ones or 0 per lane */
    adampi__v16u r = ((u | 0x00400000u) & nan) | ((u + 0x7FFFu + ((u >> 16) & 1u)) & ~nan);
    adampi__v16h h = __builtin_convertvector(r >> 16, adampi__v16h);
    memcpy(out, &h, sizeof h);
    return;
  }
  for (int k = 0; k < 16; k += 8) {
    adampi__v8u u;
    memcpy(&u, x + k, sizeof u);
    adampi__v8u nan = (adampi__v8u)((adampi__v8s)(u & 0x7FFFFFFFu) > 0x7F800000);
    adampi__v8u r = ((u | 0x00400000u) & nan) | ((u + 0x7FFFu + ((u >> 16) & 1u)) & ~nan);
    adampi__v16h halves;
    memcpy(&halves, &r, sizeof halves);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    adampi__v8h h = __builtin_shufflevector(halves, halves, 1, 3, 5, 7, 9, 11, 13, 15);
#else
    adampi__v8h h = __builtin_shufflevector(halves, halves, 0, 2, 4, 6, 8, 10, 12, 14);
#endif
    memcpy(out + k, &h, sizeof h);
  }
}

/* adampi__f16x8 by the CPU (vcvtph2ps: the same value for every finite float16, subnormal ones
 * included; the update sees no other), for the x86-64-v3 set (v3, a constant: the other sets
 * never reach it), inlined there as adampi__f16_round16_v3 is (below). In builds without that set,
 * adampi__f16x8 itself. */
#if defined(ADAMPI__HW_CONVERSIONS)
#include <immintrin.h>
__attribute__((target("arch=x86-64-v3"))) static inline void adampi__f16x8_v3(const uint16_t *h, float *out)
{
  _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h)));
}
#else
static inline void adampi__f16x8_v3(const uint16_t *h, float *out)
{
  adampi__v8fn x;
  adampi__f16x8(h, &x);
  memcpy(out, &x, sizeof x);
}
#endif

/* The 16 gradients from k into out, as adampi__grad_at gives them (gt a constant, not
 * ADAMPI_FLOAT32): bfloat16 by the shift, float16 by adampi__f16x16 (by the CPU in the x86-64-v3
 * set: v3, adampi__f16x8_v3), each then unscaled by gq, all as vectors (written element by element,
 * GCC 12 loaded bfloat16 gradients one at a time): one 64-byte vector (wide: adampi__wide_vectors,
 * a constant), or two 32-byte ones (the narrower sets, where GCC 12 keeps a 64-byte vector in
 * memory; AMD EPYC, AdamP with float16 gradients on the AVX2 clones: the update took 1.8-1.9x the
 * AVX-512 clones' time with one). */
static inline __attribute__((always_inline)) void adampi__grads16(const uint16_t *g16, int64_t k, float gq, int gt,
                                                                  float *out, int wide, int v3)
{
  if (wide) {
    adampi__v16f x;
    if (ADAMPI__GRAD_TYPE(gt) == ADAMPI_FLOAT16) adampi__f16x16(g16 + k, &x);
    else adampi__bf16x16(g16 + k, &x);
    x = ADAMPI__UNSCALE(x, gq, gt);
    memcpy(out, &x, sizeof x);
    return;
  }
  for (int h = 0; h < 2; h++) {
    adampi__v8fn x;
    if (ADAMPI__GRAD_TYPE(gt) == ADAMPI_FLOAT16 && v3) {
      float t[8];
      adampi__f16x8_v3(g16 + k + 8 * h, t);
      memcpy(&x, t, sizeof x);
    } else if (ADAMPI__GRAD_TYPE(gt) == ADAMPI_FLOAT16) adampi__f16x8(g16 + k + 8 * h, &x);
    else adampi__bf16x8(g16 + k + 8 * h, &x);
    x = ADAMPI__UNSCALE(x, gq, gt);
    memcpy(out + 8 * h, &x, sizeof x);
  }
}

/* The kernels' software prefetch: the line `ahead` bytes past p, for reading or for writing. A
 * channel-projected row is two passes, and the second (from cache) stops the memory streams of the
 * first: prefetching ahead in the first pass has the next row's first lines on their way when its
 * pass begins (AMD EPYC: the projected rows' update took 0.67-0.96 of its time with it, the least in
 * the VM's slow phases; the unprojected update, prefetching too, 0.9). ADAMPI__AHEAD, 2 KiB, for
 * every kernel but one: SGDP's unprojected update (apply) in the sets other than the wide one
 * prefetches 512 bytes ahead (ADAMPI__SGD_APPLY_AHEAD). On AMD EPYC (Zen 3) that update took
 * 0.92-0.96 of its time with 512 bytes (float32, ResNet-50 and GPT-2 shapes), where the same
 * distance took SGDP's projected tensors to 1.15x theirs (their next row's first lines come later)
 * and AdamP's update to 0.99-1.02x (run_ab.sh, same bits): SGD's unprojected update is the pattern alone,
 * AdamP's also waits for its divisions. The wide set keeps 2 KiB, measured on AVX-512 CPUs. A hint:
 * past the end of an array it does nothing, and it changes no result. */
#define ADAMPI__AHEAD 2048
#define ADAMPI__SGD_APPLY_AHEAD(wide) ((wide) ? ADAMPI__AHEAD : 512)
static inline void adampi__prefetch_read(const void *p, int ahead)
{
  __builtin_prefetch((const void *)((uintptr_t)p + (uintptr_t)ahead), 0);
}
static inline void adampi__prefetch_write(const void *p, int ahead)
{
  __builtin_prefetch((const void *)((uintptr_t)p + (uintptr_t)ahead), 1);
}

/* The gradients' stream prefetched at element k of a kernel's span (gt as in adampi__grad_at, a
 * constant): g's line, or g16's at every 32nd element (32 per line). */
static inline void adampi__prefetch_grads(const float *g, const uint16_t *g16, int64_t k, int gt, int ahead)
{
  if (!gt) adampi__prefetch_read(g + k, ahead);
  else if ((k & 31) == 0) adampi__prefetch_read(g16 + k, ahead);
}

/* The 16-bit parameters of a channel-projected row (NULL: none), prefetched for writing by its
 * first pass as it reaches them (k a multiple of 16; one line per 32 elements): the second pass
 * writes them, and without this its stores waited for their lines (AMD EPYC, ResNet-50 shapes:
 * the bfloat16 update 0.4-0.9 ms faster, the float16 one 1.0-2.2 ms, three alternating pairs each;
 * prefetching 2 KiB ahead instead gained no more). */
static inline void adampi__prefetch_w16(const uint16_t *w16, int64_t k)
{
  if (w16 && (k & 31) == 0) __builtin_prefetch(w16 + k, 1);
}

/* The 16 floats at w rounded into float16 at w16 by the CPU (vcvtps2ph, to nearest even: the bits
 * of adampi__to_f16 for every float, as adampi__f16_rounding's; test_mixed checks all 2^32): in one
 * 64-byte vector for the wide kernels (x86-64-v4 CPUs all have F16C), in two 32-byte ones for the
 * x86-64-v3 set. Not always_inline: an always_inline function with a target of its own cannot sit
 * in the kernels' shared helpers, which every set inlines; GCC inlines each into the set whose
 * target it shares (nm shows no copy out of line), and the other sets never reach it (a constant
 * test). ADAMPI__F16_INLINE: whether a kernel of the wide set (wide) or of the x86-64-v3 set (v3;
 * both constants) rounds float16 parameters (dt) so, 16 at a time as it writes them. In builds
 * without such sets it is 0, and the functions the software rounding (adampi__f16_round16_soft). */
static inline void adampi__f16_round16_soft(const float *w, uint16_t *w16)
{
  for (int j = 0; j < 16; j++) w16[j] = adampi__to_f16(w[j]);
}
#if defined(ADAMPI__HW_CONVERSIONS)
#include <immintrin.h>
__attribute__((target("arch=x86-64-v3"))) static inline void adampi__f16_round16_v3(const float *w, uint16_t *w16)
{
  for (int h = 0; h < 16; h += 8)
    _mm_storeu_si128((__m128i *)(w16 + h),
                     _mm256_cvtps_ph(_mm256_loadu_ps(w + h), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
#define ADAMPI__F16_V3(v3) (v3)
#else
#define adampi__f16_round16_v3 adampi__f16_round16_soft
#define ADAMPI__F16_V3(v3) 0
#endif
#if defined(ADAMPI__WIDE_CLONES)
__attribute__((target("arch=x86-64-v4"))) static inline void adampi__f16_round16_wide(const float *w, uint16_t *w16)
{
  __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(w), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  _mm256_storeu_si256((__m256i *)w16, h);
}
#define ADAMPI__F16_WIDE(wide) (wide)
#else
#define adampi__f16_round16_wide adampi__f16_round16_soft
#define ADAMPI__F16_WIDE(wide) 0
#endif
#define ADAMPI__F16_INLINE(wide, v3, dt) ((ADAMPI__F16_WIDE(wide) || ADAMPI__F16_V3(v3)) && (dt) == ADAMPI_FLOAT16)

/* The 16 floats at w rounded into the 16-bit type dt at w16 (a constant: bfloat16 in either
 * vector form, float16 in the wide set and the x86-64-v3 one, ADAMPI__F16_INLINE), where a kernel
 * writes w as float32 and then rounds each 16 while they are in registers or L1.
 * ADAMPI__ROUNDS16: whether the unprojected update of the set (wide, v3: constants) does so (it then
 * writes no 16-bit value element by element): the wide set for both types, the x86-64-v3 set for
 * float16 (its bfloat16 parameters take the plain loop, adampi__update_blocks). Elsewhere the
 * update rounds element by element. */
#define ADAMPI__ROUNDS16(wide, v3, dt) (((wide) && (dt) == ADAMPI_BFLOAT16) || ADAMPI__F16_INLINE(wide, v3, dt))
static inline __attribute__((always_inline)) void adampi__round16(const float *w, uint16_t *w16, int dt, int wide)
{
  if (dt == ADAMPI_BFLOAT16) adampi__bf16_round16(w, w16, wide);
  else if (wide) adampi__f16_round16_wide(w, w16);
  else adampi__f16_round16_v3(w, w16);
}

/* Whether the unprojected update goes 16 elements at a time, prefetching ahead
 * (adampi__grads_ahead16): for float16 gradients, and for float32 ones where w is not rounded to
 * bfloat16 in the same loop; blocks (a constant) for all of them (SGDP's wide set, which rounds
 * bfloat16 parameters by adampi__round16: AMD EPYC, ResNet-50 shapes, bfloat16 gradients, its
 * update took 0.87-0.92 of the plain loop's time; AdamP's 1.06, so AdamP passes 0). The plain loop
 * vectorizes better for the others (AMD EPYC: with bfloat16 gradients the update took 1.6x as long
 * in the blocked form, with float32 ones and bfloat16 parameters 1.2-1.3x, each rounding element
 * by element). gt and dt as in the kernels' apply. */
static inline int adampi__update_blocks(int gt, int dt, int blocks)
{
  return blocks || ADAMPI__GRAD_TYPE(gt) == ADAMPI_FLOAT16 || (gt == ADAMPI_FLOAT32 && dt != ADAMPI_BFLOAT16);
}

/* One block of the unprojected update's gradients, the 16 from k as adampi__grad_at gives them,
 * their stream prefetched ahead: widened into buf (16-bit); copied into buf (float32, wide: the
 * AVX-512 clones, adampi__wide_vectors, whose update ran 2% faster with the copy than with g + k);
 * or g + k itself (float32 in the narrower clones: there GCC 12 copies 64 bytes in 16-byte pieces,
 * the loop read each 32-byte half back before those stores had reached the cache, and the AVX2
 * clones' update took 3.2-3.5x the AVX-512 clones' time on unprojected rows, AMD EPYC). wide and
 * v3 (adampi__grads16) are constants where this is inlined; ahead as in adampi__prefetch_read. */
static inline __attribute__((always_inline)) const float *adampi__grads_ahead16(const float *g, const uint16_t *g16,
                                                                                int64_t k, float gq, int gt,
                                                                                float *buf, int wide, int v3,
                                                                                int ahead)
{
  adampi__prefetch_grads(g, g16, k, gt, ahead);
  if (gt) adampi__grads16(g16, k, gq, gt, buf, wide, v3);
  else if (wide) memcpy(buf, g + k, 16 * sizeof *buf);
  else return g + k;
  return buf;
}

/* w[i] = x and, when the step rounds into 16-bit parameters (dt: ADAMPI_BFLOAT16 or
 * ADAMPI_FLOAT16, else none; a constant wherever it is inlined, so that the loops vectorize), its
 * rounding: the update writes the caller's 16-bit parameters in the loop that computes them,
 * instead of a second pass over each task. */
static inline void adampi__store_w(float *w, uint16_t *w16, int64_t i, float x, int dt)
{
  w[i] = x;
  if (dt == ADAMPI_BFLOAT16) w16[i] = adampi__to_bf16(x);
  else if (dt == ADAMPI_FLOAT16) w16[i] = adampi__to_f16(x);
}

/* k such that u - w*k removes the radial part of u: <w,u> / (||w|| + eps)^2 (MATHS.md "The
 * radial coefficient"). */
static inline float adampi__radial_coefficient(double wu, double ww, double eps)
{
  double norm = sqrt(ww) + eps;
  return (float)(wu / (norm * norm));
}

/* w[0..n) rounded into w16 as adampi__store_w rounds each element (dt ADAMPI_BFLOAT16 or
 * ADAMPI_FLOAT16, a constant where it is inlined): the rounding of a row of w the kernels wrote
 * as float32, from cache. Always inlined, as what follows, so that each clone vectorizes it. */
static inline __attribute__((always_inline)) void adampi__round_w(const float *restrict w, uint16_t *restrict w16,
                                                                 int64_t n, int dt)
{
  for (int64_t i = 0; i < n; i++) w16[i] = dt == ADAMPI_BFLOAT16 ? adampi__to_bf16(w[i]) : adampi__to_f16(w[i]);
}

/* Rows of u_row_len floats in each thread's u_row: the kernel tables' rows keep the directions of
 * a row and of the row before it. */
#define ADAMPI__U_ROWS 2

/* The previous row of a task's channel-projected rows (the kernel tables' rows), whose second half
 * (w from its directions u and its k) the kernels do alongside the next row's first half, element
 * by element: its own first half and k are done, and the two touch different elements. The rows'
 * memory streams then never stop for a second half. */
typedef struct adampi__prev_row {
  float *w;
  uint16_t *w16; /* its 16-bit parameters, or NULL */
  float *u;      /* SGDP without nesterov: its buffer, which the second half projects */
  float k;
} adampi__prev_row;

/* The rounding of a finished row p of a task's channel-projected rows (the kernel tables' rows),
 * from cache: by round16 where it is set, else as the parameters' type dt says (float32: none). */
static inline __attribute__((always_inline)) void adampi__round_row(const adampi__prev_row *p, int64_t len, int dt,
                                                                   adampi__round_fn round16)
{
  if (round16) round16(p->w, p->w16, len);
  else if (dt == ADAMPI_BFLOAT16) adampi__round_w(p->w, p->w16, len, ADAMPI_BFLOAT16);
  else if (dt == ADAMPI_FLOAT16) adampi__round_w(p->w, p->w16, len, ADAMPI_FLOAT16);
}

/* An optimizer's update kernels, per MATHS.md (adamp.c, sgdp.c): the one table the update pass
 * (step.c, update_task) dispatches on. A new optimizer or element type is one more table. */
typedef struct adampi__kernels {
  int num_state; /* state arrays it keeps */
  /* Coefficients of update number t (from 1), weight decay scaled by wd_factor. */
  adampi__coef (*coef)(const adampi_hparams *hp, int64_t t, double wd_factor);
  /* <w, u> with the state as this step will make it; writes nothing. */
  double (*wu)(const adampi__span *s, const adampi__coef *c);
  /* The whole update; proj != 0 applies u <- u - w*k. apply and rows, the kernels that write w,
   * also write s->w16 when it is set. */
  void (*apply)(const adampi__span *s, const adampi__coef *c, int proj, float k);
  /* The channel-projected rows of s, s->n / len rows of len elements (len at most u's), row r's
   * <w,w> at ww[r].ww; the same bits as apply with proj, row by row, with the row's k. Each row
   * in two halves: the state stored and the directions written to u (this thread's scratch,
   * ADAMPI__U_ROWS rows of len floats) while <w, u> is summed; then w from u and w alone, once k
   * is known (adampi__radial_coefficient), alongside the next row's first half
   * (adampi__prev_row). round16: NULL, or the CPU's float16 rounding (float16 parameters,
   * adampi__f16_rounding), which then rounds each row from cache into s->w16 once it is final
   * (the wide and x86-64-v3 sets round each chunk as they write it, adampi__round16, and the last
   * row so).
   * All the rows of a task in one call, not a call per row through this table and the clones'
   * dispatch (AMD EPYC, AdamP, the update with projected rows: 0.58-0.66 of the time on rows of
   * 64, 0.96 on ResNet-50 shapes, 0.92 on GPT-2's). */
  void (*rows)(const adampi__span *s, int64_t len, const adampi__sums *ww, double eps, float *u,
               adampi__round_fn round16, const adampi__coef *c);
} adampi__kernels;
extern const adampi__kernels adampi__adamp_kernels, adampi__sgdp_kernels;

/* 16 lanes as two vectors of 8 doubles (GCC vector extensions): every target clone performs the
 * same additions per lane, whatever its register width. */
typedef float adampi__v8f __attribute__((vector_size(32), aligned(4)));
typedef double adampi__v8d __attribute__((vector_size(64)));

/* The 16 lanes of acc as doubles. */
static inline void adampi__lanes_store(const adampi__v8d acc[2], double *l)
{
  for (int j = 0; j < 8; j++) l[j] = acc[0][j], l[j + 8] = acc[1][j];
}

/* Lane-tree combination shared by all 16-lane reductions. */
static inline double adampi__lanes_sum(const double *l)
{
  double a[8], b[4];
  for (int j = 0; j < 8; j++) a[j] = l[j] + l[j + 8];
  for (int j = 0; j < 4; j++) b[j] = a[j] + a[j + 4];
  return (b[0] + b[2]) + (b[1] + b[3]);
}

/* The sum of the 16 lanes of acc, by the lane tree. */
static inline double adampi__lanes_total(const adampi__v8d acc[2])
{
  double l[ADAMPI_LANES];
  adampi__lanes_store(acc, l);
  return adampi__lanes_sum(l);
}

/* <w,u> of a row, built while u is computed (adamp.c, sgdp.c). The row goes in blocks of 256
 * elements from its start; inside a block, 16 float lanes (lane j takes the products of elements
 * j, j + 16, ... of the block, a float multiply and add each, as PyTorch's own sum is), and each
 * block's lanes are then added to the row's 16 double lanes, which the lane tree finishes. The
 * order is fixed by the position in the row, so the result does not depend on the shards, the
 * thread count or the vector width. A kernel computes u 16 elements at a time and adds them while
 * they are in registers (adampi__lanes_add16; the row's last, partial chunk element by element,
 * adampi__lanes_add1): one loop over g, the state and w, as the unprojected update is (a separate
 * pass over each block's u and w cost the projected rows 20-30%, measured on AMD EPYC). */
typedef struct adampi__block_lanes {
  adampi__v16f l; /* lane j: element j of the vector */
} adampi__block_lanes;

/* The products of the 16 weights from w and the 16 directions from u, one to a lane. Both are
 * read whole, as one vector each, so that where this is inlined u stays in a register (read in two
 * halves, GCC 12 stored it to the stack and loaded it back at every step). Not a vector by value:
 * where this is not inlined, as in a build without optimization, the target clones would pass it
 * each by its own ABI, and this function, built once, would read another's; and through memcpy,
 * since u may have a float's alignment only. */
static inline void adampi__lanes_add16(adampi__block_lanes *b, const float *w, const float *u)
{
  adampi__v16f wv, uv;
  memcpy(&wv, w, sizeof wv);
  memcpy(&uv, u, sizeof uv);
  b->l += wv * uv;
}

/* Lane j of the block gets the product p (j < 16). */
static inline void adampi__lanes_add1(adampi__block_lanes *b, int j, float p) { b->l[j] += p; }

/* The end of a block: its float lanes into the row's double lanes. */
static inline void adampi__lanes_fold(adampi__v8d acc[2], const adampi__block_lanes *b)
{
  adampi__v8d lo = {b->l[0], b->l[1], b->l[2], b->l[3], b->l[4], b->l[5], b->l[6], b->l[7]};
  adampi__v8d hi = {b->l[8], b->l[9], b->l[10], b->l[11], b->l[12], b->l[13], b->l[14], b->l[15]};
  acc[0] += lo;
  acc[1] += hi;
}

/* Where the kernels run as their x86-64-v4 clones, 1: AVX-512's 64-byte vectors live in registers
 * there. Elsewhere (the x86-64-v3 clones, AVX2, and the baseline) GCC 12 keeps a 64-byte vector in
 * memory and moves it piece by piece, so the kernels that hold 16 lanes in one (the row sums, the
 * projected rows' <w,u> lanes, SGDP's first pass, the 16-bit widening) hold them in 32-byte vectors
 * there instead: the same operations on the same lanes, the same bits. (AMD EPYC, the AVX2 clones
 * with 64-byte vectors: the row-sum loop at 0.23-0.28 of a read-only pass against 0.81-0.98,
 * benchmarks/bench_stats.c; the step 2.2-8.3x the AVX-512 clones', benchmarks/run_widths.sh.)
 * Set once, when the library is loaded (stats.c), as the dispatcher chooses the clones; the kernels
 * come in a wide and a narrow set of clones (adamp.c, sgdp.c), and the kernel tables call the set
 * this says. */
extern int adampi__wide_vectors;

/* 1 where the kernels of adamp.c and sgdp.c run as their x86-64-v3 set (ADAMPI__KERNEL_SET): the
 * CPU has x86-64-v3 and adampi__wide_vectors is 0, in builds with the CPU's float16 conversions
 * (ADAMPI__HW_CONVERSIONS). Set once, when the library is loaded (stats.c). */
extern int adampi__v3_kernels;

/* The statistics pass's row sums (stats.c): the clones of the form adampi__wide_vectors says. */
static inline void adampi__row_sums(const float *g, const float *w, int64_t n, adampi__sums *out)
{
  if (adampi__wide_vectors) adampi__row_sums_wide(g, w, n, out);
  else adampi__row_sums_narrow(g, w, n, out);
}

/* The same from a row of 16-bit gradients g16 read in place (gt ADAMPI_BFLOAT16 or ADAMPI_FLOAT16,
 * with ADAMPI__GRAD_MUL where gq multiplies: adampi__grad_scaling), widened and unscaled in
 * registers: the floats, and so the bits, of adampi__intake into a row buffer and adampi__row_sums
 * over it, without that buffer (stats.c). Set when the library is loaded, to the loop of the width
 * the kernels run at (x86-64-v4 or x86-64-v3); NULL where the CPU or the build has neither. */
extern void (*adampi__row_sums16)(const uint16_t *g16, float gq, int gt, const float *w, int64_t n,
                                  adampi__sums *out);

typedef double adampi__v4d __attribute__((vector_size(32)));

/* The narrow form of the lanes above (adampi__wide_vectors 0: the AVX2 and baseline clones): the
 * same 16 float lanes of a block, lane j element j % 8 of h[j / 8], and the row's 16 double lanes
 * in four 32-byte vectors, lane j element j % 4 of acc[j / 4]; the same additions in the same order,
 * so the same bits (with the 64-byte form, GCC 12 kept the lanes in memory in the AVX2 clones). */
typedef float adampi__v8fa __attribute__((vector_size(32)));
typedef struct adampi__block_lanes8 {
  adampi__v8fa h[2];
} adampi__block_lanes8;

static inline void adampi__lanes8_add16(adampi__block_lanes8 *b, const float *w, const float *u)
{
  adampi__v8fa w0, w1, u0, u1;
  memcpy(&w0, w, sizeof w0), memcpy(&w1, w + 8, sizeof w1);
  memcpy(&u0, u, sizeof u0), memcpy(&u1, u + 8, sizeof u1);
  b->h[0] += w0 * u0;
  b->h[1] += w1 * u1;
}

static inline void adampi__lanes8_add1(adampi__block_lanes8 *b, int j, float p) { b->h[j >> 3][j & 7] += p; }

static inline void adampi__lanes8_fold(adampi__v4d acc[4], const adampi__block_lanes8 *b)
{
  acc[0] += (adampi__v4d){b->h[0][0], b->h[0][1], b->h[0][2], b->h[0][3]};
  acc[1] += (adampi__v4d){b->h[0][4], b->h[0][5], b->h[0][6], b->h[0][7]};
  acc[2] += (adampi__v4d){b->h[1][0], b->h[1][1], b->h[1][2], b->h[1][3]};
  acc[3] += (adampi__v4d){b->h[1][4], b->h[1][5], b->h[1][6], b->h[1][7]};
}

static inline double adampi__lanes8_total(const adampi__v4d acc[4])
{
  double l[ADAMPI_LANES];
  for (int j = 0; j < 4; j++) l[j] = acc[0][j], l[j + 4] = acc[1][j], l[j + 8] = acc[2][j], l[j + 12] = acc[3][j];
  return adampi__lanes_sum(l);
}

/* 8 (4) floats as doubles (exact), element by element: GCC 12 makes one vcvtps2pd zmm of this in
 * the AVX-512 clone, where its __builtin_convertvector of 8 floats takes two 256-bit conversions, an
 * extract and an insert (the pass ran 6% faster with this, measured on AMD EPYC). */
#define ADAMPI__WIDEN8(p) ((adampi__v8d){(p)[0], (p)[1], (p)[2], (p)[3], (p)[4], (p)[5], (p)[6], (p)[7]})
#define ADAMPI__WIDEN4(p) ((adampi__v4d){(p)[0], (p)[1], (p)[2], (p)[3]})

/* The statistics pass's software prefetch distance, in elements, for its narrow loops (the AVX2
 * clones' and the baseline's, float32 and 16-bit; adampi__prefetch_read, once per 16 elements of
 * each stream). Short of the update's 2 KiB: on AMD EPYC (Zen 3) the AVX2 float32 loop on rows of
 * 147 to 3072 ran at 0.89-0.99 of the read-only kernel with it, 0.82-0.93 with 2 KiB and 0.78-0.90
 * without (bench_stats, two runs), and the 16-bit pass in the step took 0.89-0.93 of its time
 * (run_ab.sh). The loops' multiply-adds and conversions per 64 bytes leave fewer of their own loads
 * in flight than the read-only kernel's. */
#define ADAMPI__STATS_AHEAD 192

/* The wide form's lanes of the row sums: <g,w>, <g,g>, <w,w>, 16 double lanes each, lane j
 * element j % 8 of [j / 8]. */
typedef struct adampi__row_acc {
  adampi__v8d gw[2], gg[2], ww[2];
} adampi__row_acc;

/* 16 gradients (g0 lanes 0-7, g1 lanes 8-15, each float as a double) and the 16 weights from w
 * added to a's lanes: products of floats are exact in double. Always inlined, as the vectors it
 * takes are passed in registers of the caller's width. */
static inline __attribute__((always_inline)) void adampi__row_acc_add(adampi__row_acc *a, adampi__v8d g0,
                                                                      adampi__v8d g1, const float *w)
{
  adampi__v8d w0 = ADAMPI__WIDEN8(w), w1 = ADAMPI__WIDEN8(w + 8);
  a->gw[0] += g0 * w0, a->gw[1] += g1 * w1;
  a->gg[0] += g0 * g0, a->gg[1] += g1 * g1;
  a->ww[0] += w0 * w0, a->ww[1] += w1 * w1;
}

/* a's lanes into gw, gg, ww. */
static inline __attribute__((always_inline)) void adampi__row_acc_lanes(const adampi__row_acc *a, double *gw,
                                                                        double *gg, double *ww)
{
  memcpy(gw, a->gw, sizeof a->gw);
  memcpy(gg, a->gg, sizeof a->gg);
  memcpy(ww, a->ww, sizeof a->ww);
}

/* The row sums' main loop over the whole blocks of 16 float32 gradients g and weights w, with the
 * 16 lanes in two 64-byte vectors per sum (wide: adampi__row_acc) or four 32-byte ones; the lanes
 * into gw, gg, ww; prefetching ahead elements on in each stream (0: none; a constant where this is
 * inlined: the library's narrow loop ADAMPI__STATS_AHEAD, its wide loop 0). Returns where it stopped.
 * (adampi__row_sums16's wide loop, over 16-bit rows,
 * goes through the same adampi__row_acc_add; its narrow loop is its own, in stats.c.) */
static inline __attribute__((always_inline)) int64_t adampi__row_lanes(const float *g, const float *w, int64_t n,
                                                                      double *gw, double *gg, double *ww, int wide,
                                                                      int ahead)
{
  int64_t i = 0;
  if (wide) {
    adampi__row_acc a = {{{0}}, {{0}}, {{0}}};
    for (; i + ADAMPI_LANES <= n; i += ADAMPI_LANES) {
      if (ahead) adampi__prefetch_read(g + i, 4 * ahead), adampi__prefetch_read(w + i, 4 * ahead);
      adampi__row_acc_add(&a, ADAMPI__WIDEN8(g + i), ADAMPI__WIDEN8(g + i + 8), w + i);
    }
    adampi__row_acc_lanes(&a, gw, gg, ww);
    return i;
  }
  adampi__v4d gw0 = {0}, gw1 = {0}, gw2 = {0}, gw3 = {0}, gg0 = {0}, gg1 = {0}, gg2 = {0}, gg3 = {0};
  adampi__v4d ww0 = {0}, ww1 = {0}, ww2 = {0}, ww3 = {0};
  for (; i + ADAMPI_LANES <= n; i += ADAMPI_LANES) {
    if (ahead) adampi__prefetch_read(g + i, 4 * ahead), adampi__prefetch_read(w + i, 4 * ahead);
    adampi__v4d g0 = ADAMPI__WIDEN4(g + i), w0 = ADAMPI__WIDEN4(w + i);
    gw0 += g0 * w0, gg0 += g0 * g0, ww0 += w0 * w0;
    adampi__v4d g1 = ADAMPI__WIDEN4(g + i + 4), w1 = ADAMPI__WIDEN4(w + i + 4);
    gw1 += g1 * w1, gg1 += g1 * g1, ww1 += w1 * w1;
    adampi__v4d g2 = ADAMPI__WIDEN4(g + i + 8), w2 = ADAMPI__WIDEN4(w + i + 8);
    gw2 += g2 * w2, gg2 += g2 * g2, ww2 += w2 * w2;
    adampi__v4d g3 = ADAMPI__WIDEN4(g + i + 12), w3 = ADAMPI__WIDEN4(w + i + 12);
    gw3 += g3 * w3, gg3 += g3 * g3, ww3 += w3 * w3;
  }
  for (int j = 0; j < 4; j++) {
    gw[j] = gw0[j], gw[j + 4] = gw1[j], gw[j + 8] = gw2[j], gw[j + 12] = gw3[j];
    gg[j] = gg0[j], gg[j + 4] = gg1[j], gg[j + 8] = gg2[j], gg[j + 12] = gg3[j];
    ww[j] = ww0[j], ww[j + 4] = ww1[j], ww[j + 8] = ww2[j], ww[j + 12] = ww3[j];
  }
  return i;
}

/* The end of a row's sums: elements i..n (fewer than 16) into lanes 0.. of gw, gg, ww, each
 * gradient as adampi__grad_at gives it (gt a constant where this is inlined), then the lane tree
 * into out. */
static inline __attribute__((always_inline)) void adampi__row_finish(const float *g, const uint16_t *g16, float gq,
                                                                     int gt, const float *w, int64_t i, int64_t n,
                                                                     double *gw, double *gg, double *ww,
                                                                     adampi__sums *out)
{
  for (int j = 0; i + j < n; j++) {
    double gj = adampi__grad_at(g, g16, i + j, gq, gt), wj = w[i + j];
    gw[j] += gj * wj;
    gg[j] += gj * gj;
    ww[j] += wj * wj;
  }
  out->gw = adampi__lanes_sum(gw);
  out->gg = adampi__lanes_sum(gg);
  out->ww = adampi__lanes_sum(ww);
}

/* The row sums of the statistics pass (adampi__row_sums, stats.c): <g,w>, <g,g>, <w,w> over n
 * elements in ADAMPI_LANES double lanes (lane j takes elements j, j + 16, ... from g and w, each
 * product of two floats exact in double), then the lane tree. The same bits wherever it is
 * inlined, with or without contraction into fused multiply-adds, wide or not (a constant where it
 * is inlined: adampi__wide_vectors), at any vector width and prefetch distance (ahead, as in
 * adampi__row_lanes); here so that benchmarks/bench_stats.c times this very loop for each vector
 * width and distance. */
static inline __attribute__((always_inline)) void adampi__row_sums_body(const float *g, const float *w, int64_t n,
                                                                        adampi__sums *out, int wide, int ahead)
{
  double gw[ADAMPI_LANES], gg[ADAMPI_LANES], ww[ADAMPI_LANES];
  int64_t i = adampi__row_lanes(g, w, n, gw, gg, ww, wide, ahead);
  adampi__row_finish(g, NULL, 1.0f, ADAMPI_FLOAT32, w, i, n, gw, gg, ww, out);
}

#endif /* ADAMPI_INTERNAL_H */
