/*
 * layout.c - commit: agree on the registration across ranks, lay the tensors out in one flat
 * buffer, cut it into one contiguous shard per rank, plan the statistics exchange and allocate the
 * shard's state. Nothing here runs during a step except adampi__visit_nodes.
 *
 * Shards: rank r owns [shard_lo[r], shard_lo[r+1]). Cuts are placed as close as possible to
 * r*N/P, but only between channel rows of tensors with ndim > 1 (so each row's statistics are
 * computed whole on one rank); tensors with ndim <= 1 may be cut anywhere.
 */
#include "internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- registration agreement -------------------------------------------------------------- */

typedef struct bytes {
  unsigned char *p;
  size_t len, cap;
} bytes;

static int put(bytes *b, const void *src, size_t n)
{
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (p == NULL) return -1;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, src, n);
  b->len += n;
  return 0;
}

static int put_i64(bytes *b, int64_t v) { return put(b, &v, sizeof v); }

/* Everything that must be equal on all ranks, in a form that compares with memcmp per item. */
static int serialize(const adampi *opt, bytes *b)
{
  int rc = put_i64(b, opt->cfg.dtype);
  rc |= put_i64(b, opt->num_groups);
  for (int g = 0; g < opt->num_groups && rc == 0; g++) {
    unsigned char hp[ADAMPI_HPARAMS_BYTES];
    adampi__hparams_bytes(&opt->groups[g], hp);
    rc = put(b, hp, sizeof hp);
  }
  rc |= put_i64(b, opt->num_tensors);
  for (int i = 0; i < opt->num_tensors && rc == 0; i++) {
    const adampi__tensor *t = &opt->tensors[i];
    rc |= put_i64(b, (int64_t)strlen(t->name));
    rc |= put(b, t->name, strlen(t->name));
    rc |= put_i64(b, t->ndim);
    for (int d = 0; d < t->ndim; d++) rc |= put_i64(b, t->shape[d]);
    rc |= put_i64(b, t->group);
  }
  return rc;
}

/* A tensor as another rank registered it, read back from its serialized form. */
typedef struct remote_tensor {
  const char *name;
  int64_t name_len, ndim, shape[ADAMPI_MAX_NDIM], group;
} remote_tensor;

typedef struct reader {
  const unsigned char *p;
  size_t len, pos;
} reader;

static int get(reader *r, void *dst, size_t n)
{
  if (r->pos + n > r->len) return -1;
  memcpy(dst, r->p + r->pos, n);
  r->pos += n;
  return 0;
}

static int get_tensor(reader *r, remote_tensor *t)
{
  if (get(r, &t->name_len, 8) || t->name_len < 0 || r->pos + (size_t)t->name_len > r->len) return -1;
  t->name = (const char *)r->p + r->pos;
  r->pos += (size_t)t->name_len;
  if (get(r, &t->ndim, 8) || t->ndim < 0 || t->ndim > ADAMPI_MAX_NDIM) return -1;
  for (int64_t d = 0; d < t->ndim; d++)
    if (get(r, &t->shape[d], 8)) return -1;
  return get(r, &t->group, 8);
}

static void describe(char *out, size_t len, const char *name, int64_t name_len, int64_t ndim,
                     const int64_t *shape, int64_t group)
{
  int n = snprintf(out, len, "'%.*s' [", (int)(name_len > 64 ? 64 : name_len), name);
  for (int64_t d = 0; d < ndim && n > 0 && (size_t)n < len; d++)
    n += snprintf(out + n, len - (size_t)n, "%s%lld", d ? ", " : "", (long long)shape[d]);
  if (n > 0 && (size_t)n < len) snprintf(out + n, len - (size_t)n, "] group %lld", (long long)group);
}

/* Compare this rank's registration with rank 0's. Returns the key of the first difference
 * (-1: groups differ, i >= 0: tensor i differs or is missing on one side, INT_MAX: none) and
 * writes a description of it into msg. */
static int first_difference(const adampi *opt, const unsigned char *root, size_t root_len, char *msg,
                            size_t len)
{
  reader r = {root, root_len, 0};
  int64_t ng = 0, nt = 0, dtype = 0;
  if (get(&r, &dtype, 8)) return -1;
  if (dtype != (int64_t)opt->cfg.dtype) {
    snprintf(msg, len, "rank 0 uses element type %s, rank %d uses %s", adampi_dtype_name((adampi_dtype)dtype),
             opt->rank, adampi_dtype_name(opt->cfg.dtype));
    return -1;
  }
  if (get(&r, &ng, 8)) return -1;
  if (ng != opt->num_groups) {
    snprintf(msg, len, "rank 0 added %lld parameter groups, rank %d added %d", (long long)ng, opt->rank,
             opt->num_groups);
    return -1;
  }
  for (int g = 0; g < ng; g++) {
    unsigned char theirs[ADAMPI_HPARAMS_BYTES], mine[ADAMPI_HPARAMS_BYTES];
    if (get(&r, theirs, sizeof theirs)) return -1;
    adampi__hparams_bytes(&opt->groups[g], mine);
    if (memcmp(theirs, mine, sizeof mine) != 0) {
#define NAME(field, kind) #field,
      static const char *const names[ADAMPI_HPARAMS_COUNT] = {ADAMPI_HPARAMS_TABLE(NAME)};
#undef NAME
      double a[ADAMPI_HPARAMS_COUNT], b[ADAMPI_HPARAMS_COUNT];
      memcpy(a, theirs, sizeof a);
      memcpy(b, mine, sizeof b);
      int f = 0; /* the first field that differs (the bytes differ, so one does) */
      while (f < ADAMPI_HPARAMS_COUNT - 1 && memcmp(&a[f], &b[f], sizeof a[f]) == 0) f++;
      snprintf(msg, len, "hyper-parameters of group %d differ: %s = %.17g on rank 0 but %.17g on rank %d", g,
               names[f], a[f], b[f], opt->rank);
      return -1;
    }
  }
  if (get(&r, &nt, 8)) return -1;
  for (int i = 0; i < opt->num_tensors || i < nt; i++) {
    char mine[160] = "nothing", theirs[160] = "nothing";
    remote_tensor rt = {0};
    int have_root = i < nt && get_tensor(&r, &rt) == 0;
    if (i < nt && !have_root) return -1;
    const adampi__tensor *t = i < opt->num_tensors ? &opt->tensors[i] : NULL;
    if (t) describe(mine, sizeof mine, t->name, (int64_t)strlen(t->name), t->ndim, t->shape, t->group);
    if (have_root) describe(theirs, sizeof theirs, rt.name, rt.name_len, rt.ndim, rt.shape, rt.group);
    if (strcmp(mine, theirs) != 0 || (t && have_root && (rt.ndim != t->ndim ||
                                                         (size_t)rt.name_len != strlen(t->name) ||
                                                         memcmp(rt.name, t->name, (size_t)rt.name_len)))) {
      snprintf(msg, len,
               "registration differs across ranks: tensor %d is %s on rank 0 but %s on rank %d "
               "(rank 0 registered %lld tensors, rank %d registered %d)",
               i, theirs, mine, opt->rank, (long long)nt, opt->rank, opt->num_tensors);
      return i;
    }
  }
  return INT_MAX;
}

/* Collective. Every rank returns the same status and message. */
static adampi_status agree_on_registration(adampi *opt)
{
  adampi_status st = ADAMPI_OK;
  bytes b = {0};
  unsigned char *root = NULL;
  char msg[900] = "";
  long long root_len = 0;
  int key = INT_MAX;

  int bad = serialize(opt, &b) != 0;
  if (bad) snprintf(msg, sizeof msg, "rank %d: out of memory serializing the registration", opt->rank);
  else if (opt->num_tensors == 0) snprintf(msg, sizeof msg, "no tensors were registered");
  if (msg[0]) key = -2;
  if (opt->rank == 0) root_len = (long long)b.len;
  ADAMPI_MPI(opt, MPI_Bcast(&root_len, 1, MPI_LONG_LONG, 0, opt->comm));
  root = malloc(root_len > 0 ? (size_t)root_len : 1);
  if (root == NULL && key == INT_MAX) {
    key = -2;
    snprintf(msg, sizeof msg, "rank %d: out of memory for rank 0's registration", opt->rank);
  }
  /* Everyone takes part in the broadcast; a rank without a buffer receives into a scratch one. */
  if (root == NULL) {
    ADAMPI_MPI(opt, MPI_Bcast(b.p, 0, MPI_BYTE, 0, opt->comm));
  } else {
    if (opt->rank == 0 && root_len > 0) memcpy(root, b.p, (size_t)root_len);
    ADAMPI_MPI(opt, MPI_Bcast(root, (int)root_len, MPI_BYTE, 0, opt->comm));
  }
  if (key == INT_MAX) key = first_difference(opt, root, (size_t)root_len, msg, sizeof msg);

  struct {
    int key, rank;
  } mine = {key, opt->rank}, first;
  ADAMPI_MPI(opt, MPI_Allreduce(&mine, &first, 1, MPI_2INT, MPI_MINLOC, opt->comm));
  if (first.key == INT_MAX) goto done;
  ADAMPI_MPI(opt, MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first.rank, opt->comm));
  msg[sizeof msg - 1] = '\0';
  st = ADAMPI_FAIL(opt, first.key == -2 ? ADAMPI_ERR_ARG : ADAMPI_ERR_MISMATCH, "%s", msg);
done:
  free(root);
  free(b.p);
  return st;
}

/* ---- shards ---------------------------------------------------------------------------------- */

/* Index of the tensor holding element x (x < numel). */
static int tensor_at(const adampi *opt, int64_t x)
{
  int a = 0, b = opt->num_tensors - 1;
  while (a < b) {
    int mid = a + (b - a + 1) / 2;
    if (opt->tensors[mid].offset <= x) a = mid;
    else b = mid - 1;
  }
  return a;
}

/* The allowed cut nearest to x: any element boundary inside tensors with ndim <= 1, row
 * boundaries inside others (ties go down). */
static int64_t snap_cut(const adampi *opt, int64_t x)
{
  if (x <= 0 || x >= opt->numel) return x <= 0 ? 0 : opt->numel;
  const adampi__tensor *t = &opt->tensors[tensor_at(opt, x)];
  int64_t rel = x - t->offset;
  int64_t down = t->offset + rel / t->leaf_len * t->leaf_len;
  int64_t up = down + t->leaf_len;
  return (x - down <= up - x) ? down : up;
}

static void compute_shards(adampi *opt)
{
  int P = opt->size;
  opt->shard_lo[0] = 0;
  for (int r = 1; r < P; r++) {
    int64_t ideal = (int64_t)((__int128)opt->numel * r / P);
    int64_t cut = snap_cut(opt, ideal);
    opt->shard_lo[r] = cut < opt->shard_lo[r - 1] ? opt->shard_lo[r - 1] : cut;
  }
  opt->shard_lo[P] = opt->numel;
  opt->lo = opt->shard_lo[opt->rank];
  opt->hi = opt->shard_lo[opt->rank + 1];
}

void adampi__piece_of(const adampi *opt, const adampi__tensor *t, int r, int64_t *a, int64_t *b)
{
  int64_t lo = opt->shard_lo[r], hi = opt->shard_lo[r + 1];
  int64_t s = lo > t->offset ? lo : t->offset;
  int64_t e = hi < t->offset + t->numel ? hi : t->offset + t->numel;
  if (e < s) e = s;
  *a = (s - t->offset) / t->leaf_len;
  *b = (e - t->offset) / t->leaf_len;
}

/* ---- tree nodes ------------------------------------------------------------------------------ */

static int64_t root_size(int64_t leaves)
{
  int64_t s = 1;
  while (s < leaves) s *= 2;
  return s;
}

/* The nodes of rank r's piece [a, b) are the maximal nodes of the pairwise tree over [0, leaves)
 * that lie inside [a, b); their union is the piece, and the nodes of all pieces together, in tree
 * order, are what the combination in stats.c consumes. */
static void visit(int64_t lo, int64_t size, int64_t leaves, int64_t a, int64_t b, adampi__node_fn fn,
                  void *ctx)
{
  int64_t hi = lo + size < leaves ? lo + size : leaves;
  if (lo >= leaves || hi <= a || lo >= b) return;
  if (lo >= a && hi <= b) {
    fn(ctx, lo, size);
    return;
  }
  visit(lo, size / 2, leaves, a, b, fn, ctx);
  visit(lo + size / 2, size / 2, leaves, a, b, fn, ctx);
}

void adampi__visit_nodes(const adampi *opt, const adampi__tensor *t, int rank, adampi__node_fn fn, void *ctx)
{
  int64_t a, b;
  adampi__piece_of(opt, t, rank, &a, &b);
  if (a < b) visit(0, root_size(t->leaves), t->leaves, a, b, fn, ctx);
}

static void count_node(void *ctx, int64_t lo, int64_t size)
{
  (void)lo, (void)size;
  ++*(int64_t *)ctx;
}

static int owner_of(const adampi *opt, int64_t x)
{
  int a = 0, b = opt->size - 1; /* last rank r with shard_lo[r] <= x and a non-empty shard */
  while (a < b) {
    int mid = a + (b - a + 1) / 2;
    if (opt->shard_lo[mid] <= x) a = mid;
    else b = mid - 1;
  }
  while (a > 0 && opt->shard_lo[a] == opt->shard_lo[a + 1]) a--;
  return a;
}

static void plan_tensors(adampi *opt)
{
  int64_t cos_slots = 0, nodes = 0, rows = 0;
  for (int i = 0; i < opt->num_tensors; i++) {
    adampi__tensor *t = &opt->tensors[i];
    t->first_rank = owner_of(opt, t->offset);
    t->last_rank = owner_of(opt, t->offset + t->numel - 1);
    t->cos_slot = 2 * (int64_t)opt->size + cos_slots;
    cos_slots += t->last_rank - t->first_rank + 1;
    t->node_base = nodes;
    t->num_nodes = t->my_node0 = t->my_nodes = 0;
    for (int r = t->first_rank; r <= t->last_rank; r++) {
      int64_t count = 0;
      adampi__visit_nodes(opt, t, r, count_node, &count);
      if (r < opt->rank) t->my_node0 += count;
      if (r == opt->rank) t->my_nodes = count;
      t->num_nodes += count;
    }
    nodes += t->num_nodes;
    adampi__piece_of(opt, t, opt->rank, &t->my_leaf_lo, &t->my_leaf_hi);
    t->my_row_base = rows;
    if (t->projectable) rows += t->my_leaf_hi - t->my_leaf_lo;
    memset(&t->diag, 0, sizeof t->diag);
    t->updates = 0;
  }
  opt->num_nodes = nodes;
  opt->my_rows = rows;
  opt->node_area = 2 * (int64_t)opt->size + cos_slots;
  opt->stats_len = opt->node_area + 3 * nodes;
}

/* The local pieces cut into tasks of about ADAMPI_TASK_LEN elements, whole rows for ndim > 1;
 * each tensor's task_lo and task_hi are set. */
static adampi__task *make_tasks(adampi *opt, int64_t *count)
{
  int64_t n = 0, cap = 16;
  adampi__task *c = malloc((size_t)cap * sizeof *c);
  for (int i = 0; c && i < opt->num_tensors; i++) {
    adampi__tensor *t = &opt->tensors[i];
    int64_t per = t->leaf_len >= ADAMPI_TASK_LEN ? 1 : ADAMPI_TASK_LEN / t->leaf_len;
    t->task_lo = n;
    for (int64_t r = t->my_leaf_lo; r < t->my_leaf_hi; r += per) {
      if (n == cap) {
        adampi__task *bigger = realloc(c, (size_t)(cap *= 2) * sizeof *c);
        if (bigger == NULL) {
          free(c);
          return NULL;
        }
        c = bigger;
      }
      c[n].tensor = i;
      c[n].r0 = r;
      c[n].r1 = r + per < t->my_leaf_hi ? r + per : t->my_leaf_hi;
      n++;
    }
    t->task_hi = n;
  }
  *count = n;
  return c;
}

/* Elements of task k. */
static int64_t task_numel(const adampi *opt, int64_t k)
{
  return (opt->tasks[k].r1 - opt->tasks[k].r0) * opt->tensors[opt->tasks[k].tensor].leaf_len;
}

/* Each thread's range of the tasks: the tasks in order, cut where the elements so far first reach
 * t/T of the shard's, so that the ranges hold about equal work. (Cut into equal numbers of tasks,
 * the ranges of ResNet-50's and GPT-2's shapes were uneven, as the small tensors' tasks are short:
 * the thread with less work ran out first and helped the other at its front for the rest of the
 * pass, task by task, the two taking turns. Alternating the two cuts step by step in one process,
 * two threads, AMD EPYC (benchmarks/run_ab.sh, both orders): the step 0.974x with AdamP and 0.949x
 * with SGDP on ResNet-50 shapes, 0.997x with AdamP on GPT-2's (its statistics pass 0.953x), when
 * the VM gave the second thread its bandwidth; no change when it did not.) */
static void thread_ranges(adampi *opt)
{
  int64_t n = opt->num_tasks, T = opt->threads, total = 0, q = 0, sum = 0;
  for (int64_t k = 0; k < n; k++) total += task_numel(opt, k);
  for (int64_t t = 0; t < T; t++) { /* the last range takes the rest; the others end at their share */
    while (q < n && (t == T - 1 || sum < (total / T) * (t + 1) + (total % T) * (t + 1) / T))
      sum += task_numel(opt, q++);
    opt->cursors[t].end = q;
  }
}

/* Range t starts where range t - 1 ends. */
void adampi__tasks_start(adampi *opt)
{
  for (int t = 0; t < opt->threads; t++)
    atomic_store_explicit(&opt->cursors[t].next, t ? opt->cursors[t - 1].end : 0, memory_order_relaxed);
}

int64_t adampi__task_next(adampi *opt, int me)
{
  int T = opt->threads;
  for (int i = 0; i < T; i++) { /* its own range first, then the others' */
    adampi__cursor *c = &opt->cursors[(me + i) % T];
    if (atomic_load_explicit(&c->next, memory_order_relaxed) >= c->end) continue;
    int64_t k = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
    if (k < c->end) return k;
  }
  return -1;
}

/* Zero-filled and touched now, so that no page fault happens during a step; the bytes are added
 * to *total (the profile's allocated_bytes). */
static void *alloc_zero(size_t count, size_t elem, int64_t *total)
{
  *total += (int64_t)(count * elem);
  return adampi__alloc_zeroed(count * elem);
}

/* opt->g_row's length: a row per thread where the step may read gradients in place (16-bit
 * handles: adampi__direct_grads), else none. */
static size_t g_row_floats(const adampi *opt)
{
  return opt->cfg.dtype != ADAMPI_FLOAT32 ? (size_t)opt->u_row_len * (size_t)opt->threads : 0;
}

void adampi__free_layout(adampi *opt)
{
  size_t n = opt->shard_lo ? (size_t)(opt->hi - opt->lo) * sizeof(float) : 0;
  adampi__free_zeroed(opt->state[0], n);
  adampi__free_zeroed(opt->state[1], opt->cfg.kind == ADAMPI_ADAMP ? n : 0);
  adampi__free_zeroed(opt->grad_shard, n);
  adampi__free_zeroed(opt->master, opt->master ? n : 0);
  adampi__free_zeroed(opt->row_sums, (size_t)opt->my_rows * sizeof *opt->row_sums);
  adampi__free_zeroed(opt->row_wu, (size_t)opt->my_rows * sizeof(double));
  adampi__free_zeroed(opt->stats, (size_t)opt->stats_len * sizeof(double));
  adampi__free_zeroed(opt->wu_nodes, (size_t)opt->num_nodes * sizeof(double));
  adampi__free_zeroed(opt->view, (size_t)opt->num_tensors);
  adampi__free_zeroed(opt->k_layer, (size_t)opt->num_tensors * sizeof(float));
  adampi__free_zeroed(opt->bounds, ((size_t)opt->size + 1) * sizeof(int64_t));
  adampi__free_zeroed(opt->u_row, (size_t)opt->u_row_len * ADAMPI__U_ROWS * (size_t)opt->threads * sizeof(float));
  adampi__free_zeroed(opt->g_row, g_row_floats(opt) * sizeof(float));
  opt->u_row = opt->g_row = NULL;
  free(opt->tasks);
  opt->tasks = NULL;
  adampi__free_zeroed(opt->task_cos, (size_t)opt->num_tasks * sizeof(double));
  opt->task_cos = NULL;
  adampi__free_zeroed(opt->cursors, (size_t)opt->threads * sizeof(adampi__cursor));
  opt->cursors = NULL;
  adampi__free_zeroed(opt->coefs, (size_t)opt->num_tensors * sizeof(adampi__coef));
  adampi__free_zeroed(opt->packet_buf, opt->size > 1 ? (size_t)opt->packet_len * sizeof(float) : 0);
  opt->packet_buf = NULL;
  opt->coefs = NULL;
  free(opt->shard_lo);
  opt->bounds = NULL;
  opt->shard_lo = NULL;
  opt->state[0] = opt->state[1] = opt->grad_shard = opt->master = NULL;
  opt->master_valid = 0;
  opt->row_sums = NULL;
  opt->row_wu = opt->stats = opt->wu_nodes = NULL;
  opt->view = NULL;
  opt->k_layer = NULL;
  opt->committed = 0;
}

adampi_status adampi__commit_layout(adampi *opt)
{
  adampi_status st = agree_on_registration(opt);
  if (st != ADAMPI_OK) return st;

  int64_t off = 0;
  for (int i = 0; i < opt->num_tensors; i++) {
    opt->tensors[i].offset = off;
    off += opt->tensors[i].numel;
  }
  opt->numel = off;

  int local_fail = 0, any_fail = 0;
  /* Every allocation of the layout is counted in allocated_bytes as it is made. */
  memset(&opt->profile, 0, sizeof opt->profile);
  int64_t *counted = &opt->profile.allocated_bytes;
  opt->shard_lo = malloc(((size_t)opt->size + 1) * sizeof *opt->shard_lo);
  *counted += ((int64_t)opt->size + 1) * (int64_t)sizeof *opt->shard_lo;
  if (opt->shard_lo) {
    compute_shards(opt);
    plan_tensors(opt);
    size_t n = (size_t)(opt->hi - opt->lo);
    opt->state[0] = alloc_zero(n, sizeof(float), counted);
    opt->state[1] = alloc_zero(opt->cfg.kind == ADAMPI_ADAMP ? n : 0, sizeof(float), counted);
    opt->grad_shard = alloc_zero(n, sizeof(float), counted);
    if (opt->cfg.dtype != ADAMPI_FLOAT32) local_fail |= (opt->master = alloc_zero(n, sizeof(float), counted)) == NULL;
    opt->row_sums = alloc_zero((size_t)opt->my_rows, sizeof *opt->row_sums, counted);
    opt->row_wu = alloc_zero((size_t)opt->my_rows, sizeof(double), counted);
    opt->stats = alloc_zero((size_t)opt->stats_len, sizeof(double), counted);
    opt->wu_nodes = alloc_zero((size_t)opt->num_nodes, sizeof(double), counted);
    opt->view = alloc_zero((size_t)opt->num_tensors, 1, counted);
    opt->k_layer = alloc_zero((size_t)opt->num_tensors, sizeof(float), counted);
    opt->bounds = alloc_zero((size_t)opt->size + 1, sizeof(int64_t), counted);
    opt->u_row_len = 0;
    for (int i = 0; i < opt->num_tensors; i++) {
      const adampi__tensor *t = &opt->tensors[i];
      if (t->projectable && t->my_leaf_hi > t->my_leaf_lo && t->leaf_len > opt->u_row_len) opt->u_row_len = t->leaf_len;
    }
    if (opt->u_row_len > 65536) opt->u_row_len = 65536;
    opt->u_row = alloc_zero((size_t)opt->u_row_len * ADAMPI__U_ROWS * (size_t)opt->threads, sizeof(float), counted);
    opt->g_row = alloc_zero(g_row_floats(opt), sizeof(float), counted);
    opt->num_tasks = 0; /* where make_tasks fails */
    opt->tasks = make_tasks(opt, &opt->num_tasks);
    *counted += opt->num_tasks * (int64_t)sizeof(adampi__task);
    opt->task_cos = alloc_zero((size_t)opt->num_tasks, sizeof(double), counted);
    opt->cursors = alloc_zero((size_t)opt->threads, sizeof(adampi__cursor), counted);
    if (opt->cursors && opt->tasks) thread_ranges(opt);
    opt->coefs = alloc_zero((size_t)opt->num_tensors, sizeof(adampi__coef), counted);
    opt->packet_len = (int64_t)1 << 20; /* 4 MiB packets of the pairwise exchanges */
    opt->packet_buf = alloc_zero(opt->size > 1 ? (size_t)opt->packet_len : 0, sizeof(float), counted);
    local_fail |= !opt->packet_buf || !opt->bounds || !opt->u_row || !opt->g_row || !opt->tasks || !opt->task_cos ||
                 !opt->cursors || !opt->coefs ||
                 !opt->state[0] || !opt->state[1] || !opt->grad_shard || !opt->row_sums || !opt->row_wu ||
                 !opt->stats || !opt->wu_nodes || !opt->view || !opt->k_layer;
  } else {
    local_fail = 1;
  }
  opt->profile.master_bytes = opt->cfg.dtype != ADAMPI_FLOAT32 ? (opt->hi - opt->lo) * (int64_t)sizeof(float) : 0;
  if (local_fail)
    ADAMPI_FAIL(opt, ADAMPI_ERR_NOMEM, "rank %d: no memory for the state of its shard (%lld elements)", opt->rank,
                (long long)(opt->hi - opt->lo));
  ADAMPI_MPI(opt, MPI_Allreduce(&local_fail, &any_fail, 1, MPI_INT, MPI_MAX, opt->comm));
  if (any_fail && !local_fail)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_PEER, "another rank could not allocate the state of its shard");
  else if (any_fail)
    st = ADAMPI_ERR_NOMEM;
done:
  if (st != ADAMPI_OK) {
    adampi__free_layout(opt);
    return st;
  }
  opt->committed = 1;
  return ADAMPI_OK;
}

adampi_status adampi_commit(adampi *opt)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  if (opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "the layout is already committed");
  return adampi__commit_layout(opt);
}
