/*
 * replay.c - reading and writing replay files with parallel HDF5 (see replay.h for the format).
 *
 * Every rank opens the file, reads and validates the same metadata, and takes part in every
 * dataset read and write with its own selection (empty when the tensor is not in its shard):
 * collective I/O needs all ranks in each call. Errors are agreed: the lowest failing rank's
 * message is broadcast so that all ranks report the same text.
 */
#include "replay.h"
#include "h5io.h"

#include <errno.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct replay_tensor {
  int ndim;
  int64_t shape[ADAMPI_MAX_NDIM];
  int group;
} replay_tensor;

struct replay_file {
  MPI_Comm comm;
  int rank;
  hid_t file, dxpl;
  adampi_kind kind;
  int T, n, G;
  adampi_hparams *groups;
  replay_tensor *tensors;
  unsigned char *present; /* T x n: gradient of tensor i at step t exists */
  double *lr;             /* T x G, or NULL */
  float *grad_shard;
  adampi_dtype dtype; /* of the handle: the gradients are rounded to it before each step */
  void *grad_typed;   /* 16-bit types: grad_shard rounded (NULL for float32) */
  double grad_scale;  /* each step's grad_scale */
  replay_counts counts;
};

/* Record a problem with the file (FAIL) or with reaching it (FAIL_IO) and leave the function. */
#define FAIL_WITH(status, ...)           \
  do {                                   \
    snprintf(err, err_len, __VA_ARGS__); \
    rc = (status);                       \
    goto done;                           \
  } while (0)
#define FAIL(...) FAIL_WITH(ADAMPI_ERR_FORMAT, __VA_ARGS__)
#define FAIL_IO(...) FAIL_WITH(ADAMPI_ERR_IO, __VA_ARGS__)

/* Make the lowest failing rank's status and message everyone's. Collective. */
static int agree(MPI_Comm comm, int rc, char *err, size_t err_len)
{
  int rank, key, first;
  MPI_Comm_rank(comm, &rank);
  key = rc != 0 ? rank : INT_MAX;
  if (MPI_Allreduce(&key, &first, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS) {
    snprintf(err, err_len, "MPI_Allreduce failed while agreeing on errors");
    return ADAMPI_ERR_MPI;
  }
  if (first == INT_MAX) return 0;
  char msg[1024];
  int code = rc;
  snprintf(msg, sizeof msg, "%s", rank == first ? err : "");
  MPI_Bcast(&code, 1, MPI_INT, first, comm);
  MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first, comm);
  msg[sizeof msg - 1] = '\0';
  snprintf(err, err_len, "%s", msg);
  return code;
}

/* "0", "1", ... without padding, below max: the index; anything else: -1. */
static long parse_index(const char *s, long max)
{
  if (s[0] == '\0' || (s[0] == '0' && s[1] != '\0') || strlen(s) > 9) return -1;
  long v = 0;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9') return -1;
    v = v * 10 + (*p - '0');
  }
  return v < max ? v : -1;
}

static int link_count(hid_t loc, const char *name, hsize_t *n)
{
  H5G_info_t info;
  if (H5Gget_info_by_name(loc, name, &info, H5P_DEFAULT) < 0) return -1;
  *n = info.nlinks;
  return 0;
}

static int link_name(hid_t group, hsize_t k, char *buf, size_t len)
{
  ssize_t n = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, k, buf, len, H5P_DEFAULT);
  return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* Shape and element type of a dataset: float32 required (want_f64: float64). */
static int dataset_shape(hid_t d, int want_f64, int *ndim, int64_t *shape, const char *where, char *err,
                         size_t err_len)
{
  int rc = 0;
  hid_t type = H5Dget_type(d), space = H5Dget_space(d);
  if (type < 0 || space < 0) FAIL("%s cannot be read", where);
  if (H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != (want_f64 ? 8u : 4u))
    FAIL("%s must hold %s values", where, want_f64 ? "float64" : "float32");
  int nd = H5Sget_simple_extent_ndims(space);
  if (nd < 0 || nd > ADAMPI_MAX_NDIM) FAIL("%s has %d dimensions (at most %d)", where, nd, ADAMPI_MAX_NDIM);
  if (H5Sget_simple_extent_type(space) == H5S_NULL) FAIL("%s has no dataspace", where);
  hsize_t dims[ADAMPI_MAX_NDIM];
  H5Sget_simple_extent_dims(space, dims, NULL);
  for (int k = 0; k < nd; k++) {
    if (dims[k] < 1 || dims[k] > (hsize_t)INT64_MAX / 8) FAIL("%s has an empty or absurd dimension %d", where, k);
    shape[k] = (int64_t)dims[k];
  }
  *ndim = nd;
done:
  if (space >= 0) H5Sclose(space);
  if (type >= 0) H5Tclose(type);
  return rc;
}

static void shape_text(char *buf, size_t len, int ndim, const int64_t *shape)
{
  int n = snprintf(buf, len, "[");
  for (int k = 0; k < ndim && (size_t)n < len; k++)
    n += snprintf(buf + n, len - (size_t)n, "%s%lld", k ? ", " : "", (long long)shape[k]);
  if ((size_t)n < len) snprintf(buf + n, len - (size_t)n, "]");
}

static int read_groups(replay_file *rf, char *err, size_t err_len)
{
  int rc = 0;
  hsize_t count = 0;
  hid_t g = H5I_INVALID_HID;
  if (H5Lexists(rf->file, "groups", H5P_DEFAULT) <= 0 || link_count(rf->file, "groups", &count) < 0)
    FAIL("group /groups is missing");
  if (count < 1 || count > 100000) FAIL("/groups holds %llu entries (need 1 or more)", (unsigned long long)count);
  rf->G = (int)count;
  rf->groups = calloc(count, sizeof *rf->groups);
  if (rf->groups == NULL) FAIL("out of memory");
  for (int k = 0; k < rf->G; k++) {
    char path[64], where[64];
    snprintf(path, sizeof path, "groups/%d", k);
    snprintf(where, sizeof where, "/groups/%d", k);
    if (H5Lexists(rf->file, path, H5P_DEFAULT) <= 0) FAIL("%s is missing (groups must be numbered 0..%d)", where, rf->G - 1);
    g = H5Gopen2(rf->file, path, H5P_DEFAULT);
    if (g < 0) FAIL("%s is not a group", where);
    adampi_hparams hp = {0};
    if ((rc = adampi__h5_get_hparams(g, where, &hp, err, err_len)) != 0) goto done;
    char msg[512];
    if (adampi_hparams_check(rf->kind, &hp, msg, sizeof msg) != ADAMPI_OK) FAIL("%s: %s", where, msg);
    rf->groups[k] = hp;
    H5Gclose(g);
    g = H5I_INVALID_HID;
  }
done:
  if (g >= 0) H5Gclose(g);
  return rc;
}

static int read_params_meta(replay_file *rf, char *err, size_t err_len)
{
  int rc = 0;
  hsize_t count = 0;
  hid_t d = H5I_INVALID_HID;
  if (H5Lexists(rf->file, "params", H5P_DEFAULT) <= 0 || link_count(rf->file, "params", &count) < 0)
    FAIL("group /params is missing");
  if (count < 1 || count > 10000000) FAIL("/params holds %llu entries (need 1 or more)", (unsigned long long)count);
  rf->n = (int)count;
  rf->tensors = calloc(count, sizeof *rf->tensors);
  if (rf->tensors == NULL) FAIL("out of memory");
  for (int i = 0; i < rf->n; i++) {
    char path[64];
    snprintf(path, sizeof path, "params/%d", i);
    if (H5Lexists(rf->file, path, H5P_DEFAULT) <= 0)
      FAIL("/params/%d is missing (/params holds %d entries, which must be named 0..%d)", i, rf->n, rf->n - 1);
    d = H5Dopen2(rf->file, path, H5P_DEFAULT);
    if (d < 0) FAIL("/%s is not a dataset", path);
    replay_tensor *t = &rf->tensors[i];
    char where[80];
    snprintf(where, sizeof where, "/%s", path);
    if ((rc = dataset_shape(d, 0, &t->ndim, t->shape, where, err, err_len)) != 0) goto done;
    int64_t group = 0;
    if (adampi__h5_has(d, "group") && (rc = adampi__h5_get_int(d, where, "group", &group, err, err_len)) != 0) goto done;
    if (group < 0 || group >= rf->G) FAIL("%s: group = %lld does not exist (%d groups)", where, (long long)group, rf->G);
    t->group = (int)group;
    H5Dclose(d);
    d = H5I_INVALID_HID;
  }
done:
  if (d >= 0) H5Dclose(d);
  return rc;
}

static int read_grads_meta(replay_file *rf, char *err, size_t err_len)
{
  int rc = 0;
  hsize_t count = 0;
  hid_t g = H5I_INVALID_HID, d = H5I_INVALID_HID;
  if (H5Lexists(rf->file, "grads", H5P_DEFAULT) <= 0 || link_count(rf->file, "grads", &count) < 0)
    FAIL("group /grads is missing");
  if (count != (hsize_t)rf->T) FAIL("/grads holds %llu steps but the attribute steps is %d", (unsigned long long)count, rf->T);
  rf->present = calloc((size_t)rf->T * (size_t)rf->n + 1, 1);
  if (rf->present == NULL) FAIL("out of memory");
  for (int t = 0; t < rf->T; t++) {
    char path[64], name[64];
    snprintf(path, sizeof path, "grads/%d", t);
    if (H5Lexists(rf->file, path, H5P_DEFAULT) <= 0) FAIL("/grads/%d is missing (steps must be numbered 0..%d)", t, rf->T - 1);
    g = H5Gopen2(rf->file, path, H5P_DEFAULT);
    if (g < 0 || link_count(g, ".", &count) < 0) FAIL("/grads/%d is not a group", t);
    for (hsize_t k = 0; k < count; k++) {
      if (link_name(g, k, name, sizeof name) < 0) FAIL("/grads/%d holds an unreadable or overlong name", t);
      long i = parse_index(name, rf->n);
      if (i < 0) FAIL("/grads/%d/%s is not a tensor index 0..%d: extra dataset", t, name, rf->n - 1);
      char where[96];
      snprintf(where, sizeof where, "/grads/%d/%s", t, name);
      d = H5Dopen2(g, name, H5P_DEFAULT);
      if (d < 0) FAIL("%s is not a dataset", where);
      int ndim;
      int64_t shape[ADAMPI_MAX_NDIM];
      if ((rc = dataset_shape(d, 0, &ndim, shape, where, err, err_len)) != 0) goto done;
      const replay_tensor *p = &rf->tensors[i];
      if (ndim != p->ndim || memcmp(shape, p->shape, (size_t)ndim * sizeof *shape) != 0) {
        char a[128], b[128];
        shape_text(a, sizeof a, ndim, shape);
        shape_text(b, sizeof b, p->ndim, p->shape);
        FAIL("%s has shape %s but /params/%ld has shape %s", where, a, i, b);
      }
      rf->present[(size_t)t * rf->n + (size_t)i] = 1;
      H5Dclose(d);
      d = H5I_INVALID_HID;
    }
    H5Gclose(g);
    g = H5I_INVALID_HID;
  }
done:
  if (d >= 0) H5Dclose(d);
  if (g >= 0) H5Gclose(g);
  return rc;
}

static int read_schedule(replay_file *rf, char *err, size_t err_len)
{
  int rc = 0;
  hid_t d = H5I_INVALID_HID;
  if (H5Lexists(rf->file, "lr_schedule", H5P_DEFAULT) <= 0) return 0;
  d = H5Dopen2(rf->file, "lr_schedule", H5P_DEFAULT);
  if (d < 0) FAIL("/lr_schedule is not a dataset");
  int ndim;
  int64_t shape[ADAMPI_MAX_NDIM];
  if ((rc = dataset_shape(d, 1, &ndim, shape, "/lr_schedule", err, err_len)) != 0) goto done;
  if (ndim != 2 || shape[0] != rf->T || shape[1] != rf->G)
    FAIL("/lr_schedule must have shape [%d, %d] (steps, groups)", rf->T, rf->G);
  rf->lr = malloc((size_t)rf->T * (size_t)rf->G * sizeof(double) + 1);
  if (rf->lr == NULL) FAIL("out of memory");
  if (H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, rf->lr) < 0) FAIL("/lr_schedule cannot be read");
  for (int t = 0; t < rf->T; t++)
    for (int k = 0; k < rf->G; k++) {
      double lr = rf->lr[(size_t)t * rf->G + k];
      if (!(lr >= 0.0) || !isfinite(lr)) FAIL("/lr_schedule[%d, %d] = %g is invalid (must be finite and >= 0)", t, k, lr);
    }
done:
  if (d >= 0) H5Dclose(d);
  return rc;
}

static int check_root_names(replay_file *rf, char *err, size_t err_len)
{
  int rc = 0;
  hsize_t count = 0;
  char name[64];
  if (link_count(rf->file, "/", &count) < 0) FAIL("the root group cannot be read");
  for (hsize_t k = 0; k < count; k++) {
    if (link_name(rf->file, k, name, sizeof name) < 0) FAIL("the root group holds an overlong name");
    if (strcmp(name, "groups") && strcmp(name, "params") && strcmp(name, "grads") && strcmp(name, "lr_schedule"))
      FAIL("/%s is not part of a replay file (expected groups, params, grads, lr_schedule)", name);
  }
done:
  return rc;
}

static int open_local(replay_file *rf, const char *path, char *err, size_t err_len)
{
  int rc = 0;
  hid_t fapl = H5I_INVALID_HID;
  char kind[32] = "";
  int64_t steps = 0;
  if (access(path, R_OK) != 0) FAIL_IO("cannot read %s: %s", path, strerror(errno));
  if (H5Fis_hdf5(path) <= 0) FAIL("%s is not an HDF5 file", path);
  fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, rf->comm, MPI_INFO_NULL);
  H5Pset_all_coll_metadata_ops(fapl, 1);
  rf->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  if (rf->file < 0) FAIL("%s cannot be opened as an HDF5 file", path);
  if ((rc = adampi__h5_get_string(rf->file, "root", "optimizer", kind, sizeof kind, err, err_len)) != 0) goto done;
  if (strcmp(kind, "adamp") == 0) rf->kind = ADAMPI_ADAMP;
  else if (strcmp(kind, "sgdp") == 0) rf->kind = ADAMPI_SGDP;
  else FAIL("root attribute optimizer = '%s' is unknown (\"adamp\" or \"sgdp\")", kind);
  if ((rc = adampi__h5_get_int(rf->file, "root", "steps", &steps, err, err_len)) != 0) goto done;
  if (steps < 0 || steps > 100000000) FAIL("root attribute steps = %lld is invalid", (long long)steps);
  rf->T = (int)steps;
  if ((rc = check_root_names(rf, err, err_len)) || (rc = read_groups(rf, err, err_len)) ||
      (rc = read_params_meta(rf, err, err_len)) || (rc = read_grads_meta(rf, err, err_len)) ||
      (rc = read_schedule(rf, err, err_len)))
    goto done;
done:
  if (fapl >= 0) H5Pclose(fapl);
  return rc;
}

int replay_open(MPI_Comm comm, const char *path, replay_file **out, char *err, size_t err_len)
{
  *out = NULL;
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  replay_file *rf = calloc(1, sizeof *rf);
  if (rf == NULL) {
    snprintf(err, err_len, "out of memory");
    return agree(comm, ADAMPI_ERR_NOMEM, err, err_len);
  }
  rf->comm = comm;
  rf->file = rf->dxpl = H5I_INVALID_HID;
  rf->grad_scale = 1.0;
  MPI_Comm_rank(comm, &rf->rank);
  int rc = open_local(rf, path, err, err_len);
  if (rc == 0) {
    rf->dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(rf->dxpl, H5FD_MPIO_COLLECTIVE);
  }
  rc = agree(comm, rc, err, err_len);
  if (rc != 0) {
    replay_close(&rf);
    return rc;
  }
  *out = rf;
  return 0;
}

void replay_close(replay_file **rfp)
{
  if (rfp == NULL || *rfp == NULL) return;
  replay_file *rf = *rfp;
  if (rf->dxpl >= 0) H5Pclose(rf->dxpl);
  if (rf->file >= 0) H5Fclose(rf->file);
  free(rf->groups);
  free(rf->tensors);
  free(rf->present);
  free(rf->lr);
  free(rf->grad_shard);
  free(rf->grad_typed);
  free(rf);
  *rfp = NULL;
}

adampi_kind replay_kind(const replay_file *rf) { return rf->kind; }
int replay_steps(const replay_file *rf) { return rf->T; }
void replay_get_counts(const replay_file *rf, replay_counts *counts) { *counts = rf->counts; }
void replay_set_grad_scale(replay_file *rf, double grad_scale) { rf->grad_scale = grad_scale; }
int replay_num_tensors(const replay_file *rf) { return rf->n; }

int64_t replay_numel(const replay_file *rf)
{
  int64_t total = 0;
  for (int i = 0; i < rf->n; i++) {
    int64_t numel = 1;
    for (int k = 0; k < rf->tensors[i].ndim; k++)
      numel = numel > INT64_MAX / rf->tensors[i].shape[k] ? INT64_MAX : numel * rf->tensors[i].shape[k];
    total = total > INT64_MAX - numel ? INT64_MAX : total + numel;
  }
  return total;
}

int replay_make_optimizer(replay_file *rf, const adampi_config *cfg, adampi **opt, char *err, size_t err_len)
{
  adampi_config c = cfg ? *cfg : adampi_config_defaults(rf->kind);
  c.kind = rf->kind;
  int rc = adampi_create(rf->comm, &c, opt, err, err_len);
  if (rc != 0) return rc;
  for (int k = 0; k < rf->G && rc == 0; k++) rc = adampi_add_group(*opt, &rf->groups[k], NULL);
  for (int i = 0; i < rf->n && rc == 0; i++) {
    char name[32];
    snprintf(name, sizeof name, "%d", i);
    rc = adampi_add_tensor(*opt, name, rf->tensors[i].ndim, rf->tensors[i].shape, rf->tensors[i].group, NULL);
  }
  if (rc != 0) snprintf(err, err_len, "%s", adampi_last_error(*opt));
  /* Registration is local and identical everywhere; commit agrees on its own. */
  int crc = adampi_commit(*opt);
  if (rc == 0 && crc != 0) snprintf(err, err_len, "%s", adampi_last_error(*opt)), rc = crc;
  rc = agree(rf->comm, rc, err, err_len);
  if (rc == 0) {
    int64_t lo, hi;
    adampi_shard(*opt, adampi_rank(*opt), &lo, &hi);
    rf->dtype = c.dtype;
    rf->grad_shard = calloc((size_t)(hi - lo) + 1, sizeof(float));
    if (c.dtype != ADAMPI_FLOAT32) rf->grad_typed = calloc((size_t)(hi - lo) + 1, adampi_dtype_size(c.dtype));
    if (rf->grad_shard == NULL || (c.dtype != ADAMPI_FLOAT32 && rf->grad_typed == NULL))
      snprintf(err, err_len, "out of memory for the gradient shard"), rc = ADAMPI_ERR_NOMEM;
    rc = agree(rf->comm, rc, err, err_len);
  }
  if (rc != 0) adampi_free(opt);
  return rc;
}

/* Read (or write) this rank's part of tensor i from (into) dataset d. Collective. */
static int shard_io(replay_file *rf, adampi *opt, hid_t d, int i, float *shard, int write)
{
  adampi_tensor_info info;
  int64_t lo, hi;
  adampi_tensor(opt, i, &info);
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  int64_t a = (lo > info.offset ? lo : info.offset) - info.offset;
  int64_t b = (hi < info.offset + info.numel ? hi : info.offset + info.numel) - info.offset;
  if (b < a) b = a;
  hid_t fspace = H5Dget_space(d), mspace;
  if (b == a || info.ndim == 0) {
    hsize_t one = 1;
    mspace = info.ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &one, NULL);
    if (b == a) H5Sselect_none(fspace), H5Sselect_none(mspace);
  } else {
    /* cuts fall on rows (ndim > 1) or anywhere (1-d): a block of whole rows of dimension 0, and a
     * memory space of the same shape so that HDF5 copies by blocks, not element by element */
    int64_t row = info.numel / info.shape[0];
    hsize_t start[ADAMPI_MAX_NDIM] = {0}, count[ADAMPI_MAX_NDIM];
    for (int k = 0; k < info.ndim; k++) count[k] = (hsize_t)info.shape[k];
    start[0] = (hsize_t)(a / row);
    count[0] = (hsize_t)((b - a) / row);
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
    mspace = H5Screate_simple(info.ndim, count, NULL);
  }
  float dummy = 0.0f;
  float *buf = b > a ? shard + (info.offset + a - lo) : &dummy;
  herr_t e = write ? H5Dwrite(d, H5T_NATIVE_FLOAT, mspace, fspace, rf->dxpl, buf)
                   : H5Dread(d, H5T_NATIVE_FLOAT, mspace, fspace, rf->dxpl, buf);
  H5Sclose(mspace);
  H5Sclose(fspace);
  return e < 0 ? -1 : 0;
}

static int read_tensor(replay_file *rf, adampi *opt, const char *path, int i, float *shard, char *err, size_t err_len)
{
  int rc = 0;
  hid_t d = H5Dopen2(rf->file, path, H5P_DEFAULT);
  if (d < 0 || shard_io(rf, opt, d, i, shard, 0) < 0) FAIL("/%s cannot be read", path);
done:
  if (d >= 0) H5Dclose(d);
  return rc;
}

int replay_read_params(replay_file *rf, adampi *opt, float *param_shard, char *err, size_t err_len)
{
  int rc = 0;
  for (int i = 0; i < rf->n && rc == 0; i++) {
    char path[64];
    snprintf(path, sizeof path, "params/%d", i);
    rc = read_tensor(rf, opt, path, i, param_shard, err, err_len);
  }
  return agree(rf->comm, rc, err, err_len);
}

int replay_run(replay_file *rf, adampi *opt, void *param_shard, int t0, int t1, char *err, size_t err_len)
{
  int rc = 0;
  unsigned char *has = malloc((size_t)rf->n);
  if (has == NULL) {
    snprintf(err, err_len, "out of memory");
    return agree(rf->comm, ADAMPI_ERR_NOMEM, err, err_len);
  }
  for (int t = t0; t < t1 && rc == 0; t++) {
    for (int k = 0; k < rf->G && rf->lr && rc == 0; k++)
      if ((rc = adampi_set_lr(opt, k, rf->lr[(size_t)t * rf->G + k])) != 0)
        snprintf(err, err_len, "step %d: %s", t, adampi_last_error(opt));
    for (int i = 0; i < rf->n && rc == 0; i++) {
      has[i] = rf->present[(size_t)t * rf->n + (size_t)i];
      if (!has[i]) continue;
      char path[64];
      snprintf(path, sizeof path, "grads/%d/%d", t, i);
      rc = read_tensor(rf, opt, path, i, rf->grad_shard, err, err_len);
    }
    rc = agree(rf->comm, rc, err, err_len);
    if (rc != 0) break;
    /* A 16-bit model's gradients arrive in its type: the file's, rounded as torch's .bfloat16()
     * or .half() would (absent ones included: the step does not read them). */
    int64_t lo, hi;
    adampi_shard(opt, adampi_rank(opt), &lo, &hi);
    if (rf->grad_typed) adampi_round_to(rf->dtype, rf->grad_shard, rf->grad_typed, hi - lo);
    adampi_step_options o = adampi_step_defaults();
    o.has_grad = has;
    o.grad_scale = rf->grad_scale;
    rc = adampi_step_sharded_ex(opt, param_shard, rf->grad_typed ? rf->grad_typed : rf->grad_shard, &o);
    if (rc != 0) snprintf(err, err_len, "step %d: %s", t, adampi_last_error(opt));
    adampi_step_info info;
    if (rc == 0 && adampi_last_step(opt, &info) == ADAMPI_OK && info.applied && info.clip_coef < 1.0) rf->counts.clipped++;
    for (int i = 0; i < rf->n && rc == 0; i++) {
      adampi_diag d;
      adampi_diag_get(opt, i, &d);
      if (!d.updated) continue;
      if (d.view == ADAMPI_VIEW_CHANNEL) rf->counts.channel++;
      else if (d.view == ADAMPI_VIEW_LAYER) rf->counts.layer++;
      else rf->counts.none++;
    }
    rc = agree(rf->comm, rc, err, err_len);
  }
  free(has);
  return rc;
}

int replay_write_params(replay_file *rf, adampi *opt, const float *param_shard, const char *out_path, char *err,
                        size_t err_len)
{
  int rc = 0;
  char tmp[4096];
  hid_t fapl = H5I_INVALID_HID, file = H5I_INVALID_HID, grp = H5I_INVALID_HID;
  snprintf(tmp, sizeof tmp, "%s.adampi-tmp", out_path);
  fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, rf->comm, MPI_INFO_NULL);
  H5Pset_coll_metadata_write(fapl, 1);
  file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  if (file < 0) FAIL("cannot create %s", tmp);
  if (adampi__h5_put_string(file, "optimizer", rf->kind == ADAMPI_ADAMP ? "adamp" : "sgdp") != 0 ||
      adampi__h5_put_int(file, "steps", rf->T) != 0)
    FAIL("cannot write the attributes of %s", tmp);
  grp = H5Gcreate2(file, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (grp < 0) FAIL("cannot create /params in %s", tmp);
  for (int i = 0; i < rf->n; i++) {
    const replay_tensor *t = &rf->tensors[i];
    hsize_t dims[ADAMPI_MAX_NDIM];
    for (int k = 0; k < t->ndim; k++) dims[k] = (hsize_t)t->shape[k];
    hid_t space = t->ndim ? H5Screate_simple(t->ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    char name[32];
    snprintf(name, sizeof name, "%d", i);
    hid_t d = H5Dcreate2(grp, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Sclose(space);
    int bad = d < 0 || shard_io(rf, opt, d, i, (float *)param_shard, 1) < 0;
    if (d >= 0) {
      bad |= adampi__h5_put_int(d, "group", t->group) != 0;
      H5Dclose(d);
    }
    if (bad) FAIL("cannot write /params/%d of %s", i, tmp);
  }
done:
  if (grp >= 0) H5Gclose(grp);
  if (file >= 0 && H5Fclose(file) < 0 && rc == 0) snprintf(err, err_len, "cannot close %s", tmp), rc = ADAMPI_ERR_IO;
  if (fapl >= 0) H5Pclose(fapl);
  if (rc == ADAMPI_ERR_FORMAT) rc = ADAMPI_ERR_IO;
  rc = agree(rf->comm, rc, err, err_len);
  /* Only a complete file takes the name OUT. */
  int rename_rc = 0;
  if (rf->rank == 0) {
    if (rc == 0 && rename(tmp, out_path) != 0) {
      snprintf(err, err_len, "cannot rename %s to %s", tmp, out_path);
      rename_rc = ADAMPI_ERR_IO;
    }
    if (rc != 0 || rename_rc != 0) unlink(tmp);
  }
  if (rc != 0) return rc;
  return agree(rf->comm, rename_rc, err, err_len);
}
