/*
 * fuzz_checkpoint.c - libFuzzer harness for adampi_load.
 *
 * Built twice: fuzz_checkpoint_raw (the input is the file) and fuzz_checkpoint_edit (the input is
 * an edit program applied to a valid checkpoint, see fuzz_common.h). Each input is loaded into an
 * AdamP and an SGDP optimizer registered like the seed files. Invariants (a trap if broken):
 *  - the loader returns (no crash, no sanitizer report, no hang);
 *  - a refusal has a known status and a message, and leaves parameters, both state arrays, step
 *    counters, hyper-parameters and the caller area exactly as they were;
 *  - a file that is accepted leaves an optimizer that steps without error or crash.
 *
 * ADAMPI_FUZZ_WRITE_SEEDS=DIR ./fuzz_checkpoint_raw writes the seed checkpoints into DIR and exits.
 */
#include "adampi.h"
#include "fuzz_common.h"

#include <math.h>

#ifndef FUZZ_SEED_DIR
#define FUZZ_SEED_DIR "."
#endif

typedef struct reg {
  const char *name;
  int ndim;
  int64_t shape[4];
  int group;
} reg;

static const reg tensors[] = {
  {"w", 2, {6, 5}, 0}, {"conv", 4, {4, 2, 3, 3}, 0}, {"b", 1, {7}, 1}, {"s", 0, {0}, 1}, {"row", 2, {1, 40}, 0},
};
#define NT ((int)(sizeof tensors / sizeof tensors[0]))

static adampi *opts[2];
static float *params[2], *grads;
static int64_t numel;
static char scratch[256];

static adampi *make(adampi_kind kind)
{
  adampi_config cfg = adampi_config_defaults(kind);
  cfg.threads = 1;
  adampi *opt = NULL;
  char err[256];
  if (adampi_create(MPI_COMM_WORLD, &cfg, &opt, err, sizeof err) != ADAMPI_OK) return NULL;
  for (int g = 0; g < 2; g++) {
    adampi_hparams hp = kind == ADAMPI_ADAMP ? adampi_adamp_defaults() : adampi_sgdp_defaults(0.1);
    hp.weight_decay = g ? 0.0 : 0.01;
    if (kind == ADAMPI_SGDP) hp.momentum = 0.9;
    adampi_add_group(opt, &hp, NULL);
  }
  for (int i = 0; i < NT; i++) adampi_add_tensor(opt, tensors[i].name, tensors[i].ndim, tensors[i].shape, tensors[i].group, NULL);
  if (adampi_commit(opt) != ADAMPI_OK) adampi_free(&opt);
  return opt;
}

static void gradients(int t)
{
  for (int64_t k = 0; k < numel; k++) grads[k] = (float)sin(0.37 * (double)k + t) * 0.1f;
}

/* Seeds: an AdamP checkpoint after 3 steps with a caller area, and an SGDP one after 2 steps. */
static void write_seeds(const char *dir)
{
  char path[512];
  for (int k = 0; k < 2; k++) {
    for (int t = 0; t < 3 - k; t++) {
      gradients(t);
      adampi_step_sharded(opts[k], params[k], grads, NULL);
    }
    adampi_user user = {0};
    adampi_user_set(&user, "epoch", 7);
    adampi_save_options so = adampi_save_defaults();
    so.user = k == 0 ? &user : NULL;
    snprintf(path, sizeof path, "%s/%s.h5", dir, k == 0 ? "adamp" : "sgdp");
    adampi_status st = adampi_save(opts[k], path, params[k], &so);
    fprintf(stderr, "%s: %s\n", path, st == ADAMPI_OK ? "written" : adampi_last_error(opts[k]));
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc, (void)argv;
  fuzz_mpi_init();
  opts[0] = make(ADAMPI_ADAMP);
  opts[1] = make(ADAMPI_SGDP);
  if (!opts[0] || !opts[1]) {
    fprintf(stderr, "fuzz_checkpoint: cannot set up the optimizers\n");
    exit(1);
  }
  numel = adampi_numel(opts[0]);
  for (int k = 0; k < 2; k++) {
    params[k] = malloc(sizeof(float) * (size_t)numel);
    for (int64_t e = 0; e < numel; e++) params[k][e] = 0.3f * (float)cos(1.3 * (double)e);
  }
  grads = malloc(sizeof(float) * (size_t)numel);
  if (getenv("ADAMPI_FUZZ_WRITE_SEEDS")) {
    write_seeds(getenv("ADAMPI_FUZZ_WRITE_SEEDS"));
    MPI_Finalize();
    exit(0);
  }
  fuzz_scratch_path(scratch, sizeof scratch, "ckpt");
  return 0;
}

/* Everything a refused load must leave alone. */
typedef struct snapshot {
  float *w, *s0, *s1;
  int64_t steps[NT], taken, skipped;
  adampi_hparams hp[2];
  adampi_user user;
} snapshot;

static void take(adampi *opt, const float *w, const adampi_user *user, snapshot *s)
{
  size_t bytes = sizeof(float) * (size_t)numel;
  s->w = malloc(bytes), s->s0 = malloc(bytes), s->s1 = malloc(bytes);
  memcpy(s->w, w, bytes);
  const float *a = adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG), *b = adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG_SQ);
  if (a == NULL) a = adampi_state_shard(opt, ADAMPI_STATE_MOMENTUM);
  memcpy(s->s0, a, bytes);
  if (b) memcpy(s->s1, b, bytes);
  for (int i = 0; i < NT; i++) s->steps[i] = adampi_tensor_step(opt, i);
  s->taken = adampi_steps_taken(opt), s->skipped = adampi_steps_skipped(opt);
  for (int g = 0; g < 2; g++) adampi_get_hparams(opt, g, &s->hp[g]);
  s->user = *user;
}

static void same(adampi *opt, const float *w, const adampi_user *user, const snapshot *s)
{
  size_t bytes = sizeof(float) * (size_t)numel;
  FUZZ_ASSERT(memcmp(s->w, w, bytes) == 0, "a refused load changed the parameters");
  const float *a = adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG), *b = adampi_state_shard(opt, ADAMPI_STATE_EXP_AVG_SQ);
  if (a == NULL) a = adampi_state_shard(opt, ADAMPI_STATE_MOMENTUM);
  FUZZ_ASSERT(memcmp(s->s0, a, bytes) == 0, "a refused load changed the first state array");
  FUZZ_ASSERT(b == NULL || memcmp(s->s1, b, bytes) == 0, "a refused load changed the second state array");
  for (int i = 0; i < NT; i++) FUZZ_ASSERT(s->steps[i] == adampi_tensor_step(opt, i), "a refused load changed a step counter");
  FUZZ_ASSERT(s->taken == adampi_steps_taken(opt) && s->skipped == adampi_steps_skipped(opt), "a refused load changed the step counts");
  for (int g = 0; g < 2; g++) {
    adampi_hparams hp;
    adampi_get_hparams(opt, g, &hp);
    const double x[9] = {hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay, hp.delta, hp.wd_ratio, hp.momentum, hp.dampening};
    const adampi_hparams *o = &s->hp[g];
    const double y[9] = {o->lr, o->beta1, o->beta2, o->eps, o->weight_decay, o->delta, o->wd_ratio, o->momentum, o->dampening};
    FUZZ_ASSERT(memcmp(x, y, sizeof x) == 0 && hp.nesterov == o->nesterov,
                "a refused load changed the hyper-parameters of group %d", g); /* field by field: the struct has padding */
  }
  FUZZ_ASSERT(memcmp(&s->user, user, sizeof *user) == 0, "a refused load changed the caller area");
}

static void drop(snapshot *s) { free(s->w), free(s->s0), free(s->s1); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fz in = {data, size};
  char *edited = NULL;
#ifdef FUZZ_EDIT
  char base[512];
  snprintf(base, sizeof base, "%s/%s.h5", FUZZ_SEED_DIR, fz_u8(&in) & 1 ? "sgdp" : "adamp");
  edited = base;
#endif
  if (fuzz_make_file(&in, edited, scratch) != 0) return 0;
  for (int k = 0; k < 2; k++) {
    adampi_user user = {0};
    adampi_user_set(&user, "marker", 12345);
    snapshot before;
    take(opts[k], params[k], &user, &before);
    adampi_load_options lo = adampi_load_defaults();
    lo.user = &user;
    lo.keep_hparams = (int)(size & 1);
    adampi_status st = adampi_load(opts[k], scratch, params[k], &lo);
    if (st != ADAMPI_OK) {
      FUZZ_ASSERT(fuzz_known_error(st), "unknown status %d", (int)st);
      FUZZ_ASSERT(adampi_last_error(opts[k])[0] != 0, "a refusal without a message (status %d)", (int)st);
      same(opts[k], params[k], &user, &before);
    } else {
      /* An accepted file must leave a usable optimizer: one step runs and reports honestly. */
      gradients(1);
      st = adampi_step_sharded(opts[k], params[k], grads, NULL);
      FUZZ_ASSERT(st == ADAMPI_OK || adampi_last_error(opts[k])[0] != 0, "a failed step without a message");
    }
    drop(&before);
  }
  unlink(scratch);
  return 0;
}
