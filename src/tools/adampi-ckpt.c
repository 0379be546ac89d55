/*
 * adampi-ckpt - look into, check and convert adampi checkpoints.
 *
 *   adampi-ckpt info CK.h5              what the file holds, then whether the library accepts it
 *   mpirun -np N adampi-ckpt verify CK.h5   every checksum and the format, on any number of ranks
 *   adampi-ckpt export CK.h5 OUT.h5|OUT.npz the fp32 parameters by tensor name and the caller
 *                                       arrays by their names, no optimizer state
 *   adampi-ckpt latest CK.h5            the newest checkpoint among CK.h5, CK.h5.1, ... that verifies
 *
 * The checks are the library's own: the tool reads the registration the file describes (optimizer,
 * tensor names, shapes and groups, the caller arrays' names and lengths) with plain HDF5 calls,
 * creates a handle from it and calls adampi_load, asking for every caller array, which verifies the format, every dataset's checksum, shapes, step counters and
 * hyper-parameters. Nothing here recomputes a checksum. What this tool is not: an editor; it never
 * writes into a checkpoint (`latest` only renames damaged files out of the rotation's way).
 * Exit status: 0 success, 1 a damaged or unreadable checkpoint (the first problem is named), 2 usage.
 */
#include "adampi.h"
#include "h5superblock.h"

#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Longest rotation the tool looks for: CK.h5.1 .. CK.h5.MAX_KEEP. */
#define MAX_KEEP 99
#define MSG 4096

/* What the file says about itself: the registration and the root attributes, read with HDF5. */
typedef struct tensor_desc {
  char name[ADAMPI_MAX_NAME + 1];
  int ndim;
  int64_t shape[ADAMPI_MAX_NDIM];
  int64_t group, step;
} tensor_desc;

/* A caller array (/arrays/NAME): model state that is not a parameter. */
typedef struct array_desc {
  char name[ADAMPI_USER_NAME];
  int64_t len;
} array_desc;

typedef struct ckpt_desc {
  char format[64], library_version[32], optimizer[16];
  char dtype[32]; /* the model's element type; "" when absent (files of adampi 0.1: float32) */
  int64_t format_version, num_tensors, num_groups, steps_taken, steps_skipped, saved_world_size;
  tensor_desc *tensors; /* num_tensors, in registration order */
  int num_arrays;
  array_desc arrays[ADAMPI_ARRAYS_MAX]; /* in name order */
} ckpt_desc;

static int rank_, size_;

static const char *const hparam_names[10] = {"lr",    "beta1",    "beta2",    "eps",       "weight_decay",
                                             "delta", "wd_ratio", "momentum", "dampening", "nesterov"};

/* ---- reading attributes with plain HDF5 ------------------------------------------------------ */

/* A one-element attribute of class cls read as mem_type into v. 0 on success, -1 if it is absent,
 * of another class, or not exactly one element (an array under a scalar's name is refused). */
static int get_scalar(hid_t obj, const char *name, H5T_class_t cls, hid_t mem_type, void *v)
{
  int rc = -1;
  hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, s = H5I_INVALID_HID;
  if (H5Aexists(obj, name) <= 0) return -1;
  a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a < 0) goto done;
  t = H5Aget_type(a);
  s = H5Aget_space(a);
  if (t < 0 || s < 0 || H5Tget_class(t) != cls || H5Sget_simple_extent_npoints(s) != 1) goto done;
  rc = H5Aread(a, mem_type, v) < 0 ? -1 : 0;
done:
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  if (a >= 0) H5Aclose(a);
  return rc;
}

static int get_i64(hid_t obj, const char *name, int64_t *v) { return get_scalar(obj, name, H5T_INTEGER, H5T_NATIVE_INT64, v); }
static int get_f64(hid_t obj, const char *name, double *v) { return get_scalar(obj, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, v); }

/* A scalar string attribute (fixed or variable length) into out; "" when absent or not a string. */
static void get_str(hid_t obj, const char *name, char *out, size_t len)
{
  out[0] = '\0';
  if (H5Aexists(obj, name) <= 0) return;
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT), t = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
  hid_t s = a >= 0 ? H5Aget_space(a) : H5I_INVALID_HID;
  if (t >= 0 && s >= 0 && H5Tget_class(t) == H5T_STRING && H5Sget_simple_extent_npoints(s) == 1) {
    hid_t m = H5Tcopy(H5T_C_S1);
    if (H5Tis_variable_str(t) > 0) {
      char *str = NULL;
      H5Tset_size(m, H5T_VARIABLE);
      if (H5Aread(a, m, &str) >= 0 && str) snprintf(out, len, "%s", str);
      if (str) H5free_memory(str);
    } else if (H5Tget_size(t) + 1 <= len) {
      H5Tset_size(m, H5Tget_size(t) + 1);
      H5Tset_strpad(m, H5T_STR_NULLTERM);
      if (H5Aread(a, m, out) < 0) out[0] = '\0';
    }
    H5Tclose(m);
  }
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  if (a >= 0) H5Aclose(a);
}

static void shape_text(char *buf, size_t len, int ndim, const int64_t *shape)
{
  int n = snprintf(buf, len, "[");
  for (int k = 0; k < ndim && n > 0 && (size_t)n < len; k++)
    n += snprintf(buf + n, len - (size_t)n, "%s%" PRId64, k ? ", " : "", shape[k]);
  if (n > 0 && (size_t)n < len) snprintf(buf + n, len - (size_t)n, "]");
}

/* The caller arrays of /arrays (none if there is no such group): names and lengths. 0, or -1
 * with the problem in msg. */
static int describe_arrays(hid_t f, ckpt_desc *d, char *msg, size_t len)
{
  H5G_info_t gi;
  if (H5Lexists(f, "arrays", H5P_DEFAULT) <= 0) return 0;
  hid_t g = H5Gopen2(f, "arrays", H5P_DEFAULT);
  int rc = -1;
  if (g < 0 || H5Gget_info(g, &gi) < 0 || gi.nlinks > ADAMPI_ARRAYS_MAX) {
    snprintf(msg, len, "the group /arrays cannot be read or holds more than %d arrays", ADAMPI_ARRAYS_MAX);
    goto done;
  }
  for (hsize_t k = 0; k < gi.nlinks; k++) {
    array_desc *a = &d->arrays[k];
    ssize_t nl = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, k, a->name, sizeof a->name, H5P_DEFAULT);
    hid_t ds = nl > 0 && nl < (ssize_t)sizeof a->name ? H5Dopen2(g, a->name, H5P_DEFAULT) : H5I_INVALID_HID;
    hid_t sp = ds >= 0 ? H5Dget_space(ds) : H5I_INVALID_HID;
    hsize_t dims[1] = {0};
    int ok = sp >= 0 && H5Sget_simple_extent_ndims(sp) == 1 && H5Sget_simple_extent_dims(sp, dims, NULL) == 1 &&
             dims[0] >= 1 && dims[0] <= (hsize_t)INT64_MAX;
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    if (!ok) {
      snprintf(msg, len, "entry %llu of /arrays is not a 1-d dataset with a name of at most %d characters", (unsigned long long)k,
               ADAMPI_USER_NAME - 1);
      goto done;
    }
    a->len = (int64_t)dims[0];
    d->num_arrays++;
  }
  rc = 0;
done:
  if (g >= 0) H5Gclose(g);
  return rc;
}

/* Read the file's description into d (d->tensors allocated; free with free). Local. Returns 0, or
 * -1 with the first problem in msg. Files older than superblock 2 are refused before HDF5 parses
 * them, as adampi_load does (see h5superblock.h). */
static int describe(const char *path, ckpt_desc *d, char *msg, size_t len)
{
  int rc = -1;
  hid_t f = H5I_INVALID_HID, ts = H5I_INVALID_HID;
  memset(d, 0, sizeof *d);
  int sb = adampi_h5_superblock_version(path);
  if (sb == -2) return snprintf(msg, len, "cannot read the file (missing, or no permission)"), -1;
  if (sb == -1) return snprintf(msg, len, "not an HDF5 file"), -1;
  if (sb < 2) return snprintf(msg, len, "HDF5 superblock version %d: not written by adampi (it writes 2 or later)", sb), -1;
  f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) {
    snprintf(msg, len, "HDF5 cannot open it (truncated or damaged)");
    goto done;
  }
  get_str(f, "format", d->format, sizeof d->format);
  get_str(f, "library_version", d->library_version, sizeof d->library_version);
  get_str(f, "optimizer", d->optimizer, sizeof d->optimizer);
  get_str(f, "dtype", d->dtype, sizeof d->dtype);
  if (d->dtype[0] == '\0' && H5Aexists(f, "dtype") > 0) snprintf(d->dtype, sizeof d->dtype, "(not a short string)");
  if (strcmp(d->format, "adampi-checkpoint") != 0) {
    snprintf(msg, len, "root attribute format is '%s', not 'adampi-checkpoint'", d->format);
    goto done;
  }
  if (strcmp(d->optimizer, "adamp") != 0 && strcmp(d->optimizer, "sgdp") != 0) {
    snprintf(msg, len, "root attribute optimizer is '%s', neither 'adamp' nor 'sgdp'", d->optimizer);
    goto done;
  }
  const char *need[6] = {"format_version", "num_tensors", "num_groups", "steps_taken", "steps_skipped", "saved_world_size"};
  int64_t *into[6] = {&d->format_version, &d->num_tensors, &d->num_groups, &d->steps_taken, &d->steps_skipped, &d->saved_world_size};
  for (int k = 0; k < 6; k++)
    if (get_i64(f, need[k], into[k]) != 0) {
      snprintf(msg, len, "root attribute %s is missing or not one integer", need[k]);
      goto done;
    }
  H5G_info_t gi;
  if (H5Lexists(f, "tensors", H5P_DEFAULT) <= 0 || (ts = H5Gopen2(f, "tensors", H5P_DEFAULT)) < 0 || H5Gget_info(ts, &gi) < 0) {
    snprintf(msg, len, "the group /tensors is missing");
    goto done;
  }
  if (d->num_tensors < 0 || (hsize_t)d->num_tensors != gi.nlinks) {
    snprintf(msg, len, "num_tensors is %" PRId64 " but /tensors holds %llu entries", d->num_tensors, (unsigned long long)gi.nlinks);
    goto done;
  }
  if (d->num_groups < 1 || d->num_groups > 1 << 20) {
    snprintf(msg, len, "num_groups is %" PRId64, d->num_groups);
    goto done;
  }
  d->tensors = calloc((size_t)d->num_tensors + 1, sizeof *d->tensors);
  if (!d->tensors) {
    snprintf(msg, len, "out of memory for %" PRId64 " tensors", d->num_tensors);
    goto done;
  }
  for (int64_t i = 0; i < d->num_tensors; i++) d->tensors[i].group = -1;
  for (hsize_t k = 0; k < gi.nlinks; k++) {
    char name[ADAMPI_MAX_NAME + 2];
    ssize_t nl = H5Lget_name_by_idx(ts, ".", H5_INDEX_NAME, H5_ITER_INC, k, name, sizeof name, H5P_DEFAULT);
    if (nl < 0 || nl > ADAMPI_MAX_NAME) {
      snprintf(msg, len, "entry %llu of /tensors has no readable name of at most %d characters", (unsigned long long)k, ADAMPI_MAX_NAME);
      goto done;
    }
    hid_t g = H5Gopen2(ts, name, H5P_DEFAULT), p = g >= 0 ? H5Dopen2(g, "param", H5P_DEFAULT) : H5I_INVALID_HID;
    hid_t sp = p >= 0 ? H5Dget_space(p) : H5I_INVALID_HID;
    int64_t index = -1, group = -1, step = -1;
    int ndim = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    hsize_t dims[ADAMPI_MAX_NDIM];
    int bad = g < 0 || get_i64(g, "index", &index) || get_i64(g, "group", &group) || get_i64(g, "step", &step);
    int bad_shape = ndim < 0 || ndim > ADAMPI_MAX_NDIM || H5Sget_simple_extent_dims(sp, dims, NULL) < 0;
    if (sp >= 0) H5Sclose(sp);
    if (p >= 0) H5Dclose(p);
    if (g >= 0) H5Gclose(g);
    if (bad) {
      snprintf(msg, len, "tensor '%s': attributes index, group and step must each be one integer", name);
      goto done;
    }
    if (bad_shape) {
      snprintf(msg, len, "tensor '%s': no dataset param with at most %d dimensions", name, ADAMPI_MAX_NDIM);
      goto done;
    }
    if (index < 0 || index >= d->num_tensors || d->tensors[index].name[0]) {
      snprintf(msg, len, "tensor '%s': index %" PRId64 " is out of range or taken twice", name, index);
      goto done;
    }
    tensor_desc *t = &d->tensors[index];
    memcpy(t->name, name, (size_t)nl + 1);
    t->ndim = ndim, t->group = group, t->step = step;
    for (int j = 0; j < ndim; j++) t->shape[j] = dims[j] > (hsize_t)INT64_MAX ? -1 : (int64_t)dims[j];
  }
  rc = describe_arrays(f, d, msg, len);
done:
  if (rc != 0) free(d->tensors), d->tensors = NULL;
  if (ts >= 0) H5Gclose(ts);
  if (f >= 0) H5Fclose(f);
  return rc;
}

/* ---- loading through the library ------------------------------------------------------------- */

/* Describe path on every rank, then create a handle from the description and adampi_load it with
 * every caller array (the library's checks). Collective over MPI_COMM_WORLD; every rank returns
 * the same value. On 0, *out owns the loaded handle; with full != NULL, *full receives the full
 * parameters (ADAMPI_PARAMS_FULL), else only the shard is loaded; with arrays != NULL, *arrays
 * receives the caller arrays one after the other, in d->arrays' order (free both with free).
 * user (may be NULL) receives the caller area. On -1, msg names the first problem and nothing is
 * allocated. */
static int load(const char *path, ckpt_desc *d, adampi **out, float **full, float **arrays, adampi_user *user, char *msg,
                size_t len)
{
  char err[MSG] = "";
  adampi *opt = NULL;
  float *params = NULL, *values = NULL;
  adampi_array list[ADAMPI_ARRAYS_MAX];
  *out = NULL;
  int bad = describe(path, d, msg, len) != 0, any = 0;
  MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
  if (any) {
    if (!bad) snprintf(msg, len, "another rank could not read the file's description");
    return -1;
  }
  adampi_kind kind = strcmp(d->optimizer, "sgdp") == 0 ? ADAMPI_SGDP : ADAMPI_ADAMP;
  adampi_config cfg = adampi_config_defaults(kind);
  if (adampi_create(MPI_COMM_WORLD, &cfg, &opt, err, sizeof err) != ADAMPI_OK) {
    snprintf(msg, len, "%s", err);
    return -1;
  }
  /* The groups start with valid defaults: adampi_load replaces them with the file's and checks those. */
  adampi_hparams hp = kind == ADAMPI_SGDP ? adampi_sgdp_defaults(0.1) : adampi_adamp_defaults();
  adampi_status st = ADAMPI_OK;
  for (int64_t g = 0; g < d->num_groups && st == ADAMPI_OK; g++) st = adampi_add_group(opt, &hp, NULL);
  for (int64_t i = 0; i < d->num_tensors && st == ADAMPI_OK; i++) {
    const tensor_desc *t = &d->tensors[i];
    st = adampi_add_tensor(opt, t->name, t->ndim, t->shape, t->group < 0 || t->group > INT32_MAX ? -1 : (int)t->group, NULL);
  }
  int mine = st != ADAMPI_OK, all = 0; /* registration is local: agree before the collective commit */
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
  if (all && st == ADAMPI_OK) {
    snprintf(msg, len, "another rank could not register the file's tensors");
    goto fail;
  }
  if (st == ADAMPI_OK) st = adampi_commit(opt);
  if (st == ADAMPI_OK) {
    int64_t lo = 0, hi = 0, n = adampi_numel(opt);
    adampi_shard(opt, rank_, &lo, &hi);
    size_t count = (size_t)(full ? n : hi - lo), values_count = 0;
    for (int k = 0; k < d->num_arrays; k++) values_count += (size_t)d->arrays[k].len;
    params = malloc((count ? count : 1) * sizeof(float));
    values = malloc((values_count ? values_count : 1) * sizeof(float));
    int nomem = params == NULL || values == NULL, anynomem = 0;
    MPI_Allreduce(&nomem, &anynomem, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    if (anynomem) {
      snprintf(msg, len, "out of memory for %zu parameters and %zu array values", count, values_count);
      goto fail;
    }
    float *at = values;
    for (int k = 0; k < d->num_arrays; k++) list[k] = (adampi_array){d->arrays[k].name, at, d->arrays[k].len}, at += d->arrays[k].len;
    adampi_load_options lo_opt = adampi_load_defaults();
    lo_opt.params = full ? ADAMPI_PARAMS_FULL : ADAMPI_PARAMS_SHARD;
    lo_opt.user = user;
    lo_opt.arrays = list;
    lo_opt.num_arrays = d->num_arrays;
    st = adampi_load(opt, path, params, &lo_opt);
  }
  if (st != ADAMPI_OK) {
    snprintf(msg, len, "%s", adampi_last_error(opt));
    goto fail;
  }
  if (full) *full = params;
  else free(params);
  if (arrays) *arrays = values;
  else free(values);
  *out = opt;
  return 0;
fail:
  free(params);
  free(values);
  adampi_free(&opt);
  return -1;
}

/* ---- info ------------------------------------------------------------------------------------- */

static const char *buf_g(double v, int digits)
{
  static char buf[64];
  snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

static void print_groups(const char *path, int64_t num_groups)
{
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  for (int64_t g = 0; f >= 0 && g < num_groups; g++) {
    char name[64];
    snprintf(name, sizeof name, "groups/%" PRId64, g);
    hid_t h = H5Lexists(f, "groups", H5P_DEFAULT) > 0 && H5Lexists(f, name, H5P_DEFAULT) > 0 ? H5Gopen2(f, name, H5P_DEFAULT) : -1;
    printf("  group %" PRId64 ":", g);
    for (int k = 0; k < 10; k++) {
      double v;
      int64_t i;
      if (k == 9 && h >= 0 && get_i64(h, hparam_names[k], &i) == 0) printf(" %s=%" PRId64, hparam_names[k], i);
      else if (k < 9 && h >= 0 && get_f64(h, hparam_names[k], &v) == 0) /* shortest text that reads back exactly */
        printf(" %s=%.*g", hparam_names[k], strtod(buf_g(v, 15), NULL) == v ? 15 : 17, v);
      else printf(" %s=(missing)", hparam_names[k]);
    }
    printf("\n");
    if (h >= 0) H5Gclose(h);
  }
  if (f >= 0) H5Fclose(f);
}

/* The caller area: the int64 attributes of /user, in name order. */
static void print_user(const char *path)
{
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t u = f >= 0 && H5Lexists(f, "user", H5P_DEFAULT) > 0 ? H5Gopen2(f, "user", H5P_DEFAULT) : H5I_INVALID_HID;
  H5O_info_t oi;
  int n = u >= 0 && H5Oget_info(u, &oi) >= 0 ? (int)oi.num_attrs : 0;
  printf("caller values: %d\n", n);
  for (int k = 0; k < n; k++) {
    char name[ADAMPI_USER_NAME + 1];
    int64_t v;
    ssize_t nl = H5Aget_name_by_idx(u, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)k, name, sizeof name, H5P_DEFAULT);
    if (nl < 0 || nl >= (ssize_t)sizeof name) printf("  (attribute %d: unreadable name)\n", k);
    else if (get_i64(u, name, &v) != 0) printf("  %s = (not one integer)\n", name);
    else printf("  %s = %" PRId64 "\n", name, v);
  }
  if (u >= 0) H5Gclose(u);
  if (f >= 0) H5Fclose(f);
}

/* What the file says, then the library's verdict. Rank 0 prints. */
static int cmd_info(const char *path)
{
  ckpt_desc d;
  char msg[MSG] = "";
  adampi *opt = NULL;
  int rc = load(path, &d, &opt, NULL, NULL, NULL, msg, sizeof msg);
  if (rank_ == 0 && d.tensors) {
    int64_t total = 0;
    printf("%s: %s format %" PRId64 ", written by adampi %s\n", path, d.format, d.format_version, d.library_version);
    printf("optimizer: %s\nsteps: %" PRId64 " taken, %" PRId64 " skipped\nsaved on: %" PRId64 " ranks\n", d.optimizer,
           d.steps_taken, d.steps_skipped, d.saved_world_size);
    if (d.dtype[0] == '\0') printf("element type: float32 (no dtype attribute: written before adampi 0.2)\n");
    else if (strcmp(d.dtype, "float32") == 0) printf("element type: float32\n");
    else printf("element type: %s (the parameters are its fp32 master)\n", d.dtype);
    printf("groups: %" PRId64 "\n", d.num_groups);
    print_groups(path, d.num_groups);
    printf("tensors: %" PRId64 "\n", d.num_tensors);
    for (int64_t i = 0; i < d.num_tensors; i++) {
      char shape[256];
      int64_t numel = 1;
      for (int j = 0; j < d.tensors[i].ndim; j++) numel *= d.tensors[i].shape[j];
      total += numel;
      shape_text(shape, sizeof shape, d.tensors[i].ndim, d.tensors[i].shape);
      printf("  %3" PRId64 " %-24s %-16s group %" PRId64 "  step %" PRId64 "\n", i, d.tensors[i].name, shape,
             d.tensors[i].group, d.tensors[i].step);
    }
    printf("elements: %" PRId64 " (%.1f MB of fp32 parameters)\n", total, total * 4.0 / 1e6);
    printf("caller arrays: %d\n", d.num_arrays);
    for (int k = 0; k < d.num_arrays; k++) printf("  %-28s [%" PRId64 "]\n", d.arrays[k].name, d.arrays[k].len);
    print_user(path);
  }
  if (rank_ == 0) {
    if (rc == 0) printf("verified: every checksum, the format and the registration (adampi_load on %d rank%s)\n", size_, size_ > 1 ? "s" : "");
    else fprintf(stderr, "adampi-ckpt: %s: not valid: %s\n", path, msg);
  }
  free(d.tensors);
  adampi_free(&opt);
  return rc ? 1 : 0;
}

/* ---- verify ----------------------------------------------------------------------------------- */

/* 0 if path loads, else 1 with the problem in msg. Collective. */
static int check(const char *path, char *msg, size_t len, ckpt_desc *d)
{
  adampi *opt = NULL;
  int rc = load(path, d, &opt, NULL, NULL, NULL, msg, len);
  adampi_free(&opt);
  return rc ? 1 : 0;
}

static int cmd_verify(const char *path)
{
  ckpt_desc d;
  char msg[MSG] = "";
  int rc = check(path, msg, sizeof msg, &d);
  if (rank_ == 0) {
    if (rc == 0)
      printf("%s: ok: %s, %" PRId64 " tensors, %d caller arrays, step %" PRId64 ", saved on %" PRId64 " ranks, verified on %d\n",
             path, d.optimizer, d.num_tensors, d.num_arrays, d.steps_taken, d.saved_world_size, size_);
    else fprintf(stderr, "adampi-ckpt: %s: not valid: %s\n", path, msg);
  }
  free(d.tensors);
  return rc;
}

/* ---- export ------------------------------------------------------------------------------------ */

/* CRC-32 (IEEE 802.3, as zip needs), bit by bit: export is not a hot path. */
static uint32_t crc32_update(uint32_t crc, const unsigned char *p, size_t n)
{
  crc = ~crc;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++) crc = crc >> 1 ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

static void le16(unsigned char *p, unsigned v) { p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8); }
static void le32(unsigned char *p, uint32_t v) { le16(p, v & 0xffff), le16(p + 2, v >> 16); }

/* The .npy header of a little-endian float32 array of the given shape (version 1.0, padded so the
 * data start at a multiple of 64). Returns its length. */
static size_t npy_header(unsigned char *h, const tensor_desc *t)
{
  char dict[512];
  int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
  for (int j = 0; j < t->ndim; j++) n += snprintf(dict + n, sizeof dict - (size_t)n, "%" PRId64 "%s", t->shape[j], t->ndim == 1 ? "," : j + 1 < t->ndim ? ", " : "");
  n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
  size_t total = ((size_t)10 + (size_t)n + 1 + 63) / 64 * 64;
  memcpy(h, "\x93NUMPY\x01\x00", 8);
  le16(h + 8, (unsigned)(total - 10));
  memset(h + 10, ' ', total - 10);
  memcpy(h + 10, dict, (size_t)n);
  h[total - 1] = '\n';
  return total;
}

/* An uncompressed zip of NAME.npy entries (what numpy.savez writes). -1 on a write error or an
 * entry past zip's 4 GiB limit (export to .h5 then). */
static int write_npz(const char *out, const ckpt_desc *d, const float *params, char *msg, size_t len)
{
  FILE *f = fopen(out, "wb");
  if (!f) return snprintf(msg, len, "cannot create %.1024s", out), -1;
  unsigned char *central = calloc((size_t)d->num_tensors, 46 + ADAMPI_MAX_NAME + 4);
  size_t clen = 0;
  uint64_t at = 0, offset = 0;
  int bad = central == NULL;
  for (int64_t i = 0; i < d->num_tensors && !bad; i++) {
    const tensor_desc *t = &d->tensors[i];
    unsigned char hdr[576], local[30];
    char fname[ADAMPI_MAX_NAME + 8];
    uint64_t numel = 1;
    for (int j = 0; j < t->ndim; j++) numel *= (uint64_t)t->shape[j];
    size_t hl = npy_header(hdr, t);
    uint64_t size = hl + numel * 4;
    if (size > 0xffffffffu || at > 0xffffffffu) {
      snprintf(msg, len, "tensor '%s' does not fit a zip without zip64: export to .h5", t->name);
      bad = 1;
      break;
    }
    int fl = snprintf(fname, sizeof fname, "%s.npy", t->name);
    const unsigned char *data = (const unsigned char *)(params + offset);
    uint32_t crc = crc32_update(crc32_update(0, hdr, hl), data, numel * 4);
    memset(local, 0, sizeof local);
    le32(local, 0x04034b50), le16(local + 4, 20), le32(local + 14, crc), le32(local + 18, (uint32_t)size);
    le32(local + 22, (uint32_t)size), le16(local + 26, (unsigned)fl);
    unsigned char *c = central + clen;
    le32(c, 0x02014b50), le16(c + 4, 20), le16(c + 6, 20), le16(c + 8, 0), le16(c + 10, 0), le32(c + 12, 0);
    le32(c + 16, crc), le32(c + 20, (uint32_t)size), le32(c + 24, (uint32_t)size), le16(c + 28, (unsigned)fl);
    le32(c + 42, (uint32_t)at);
    memcpy(c + 46, fname, (size_t)fl);
    clen += 46 + (size_t)fl;
    bad = fwrite(local, 1, 30, f) != 30 || fwrite(fname, 1, (size_t)fl, f) != (size_t)fl || fwrite(hdr, 1, hl, f) != hl ||
          fwrite(data, 4, numel, f) != numel;
    at += 30 + (uint64_t)fl + size;
    offset += numel;
  }
  if (!bad && (at > 0xffffffffu || d->num_tensors > 0xffff)) {
    snprintf(msg, len, "the model does not fit a zip without zip64: export to .h5");
    bad = 1;
  }
  unsigned char end[22] = {0};
  le32(end, 0x06054b50), le16(end + 8, (unsigned)d->num_tensors), le16(end + 10, (unsigned)d->num_tensors);
  le32(end + 12, (uint32_t)clen), le32(end + 16, (uint32_t)at);
  if (!bad) bad = fwrite(central, 1, clen, f) != clen || fwrite(end, 1, 22, f) != 22;
  free(central);
  if (fclose(f) != 0) bad = 1;
  if (bad && !msg[0]) snprintf(msg, len, "write error on %.1024s", out);
  return bad ? -1 : 0;
}

/* One float32 dataset per tensor, named by the tensor, at the root of a new HDF5 file. */
static int write_h5(const char *out, const ckpt_desc *d, const float *params, char *msg, size_t len)
{
  hid_t f = H5Fcreate(out, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) return snprintf(msg, len, "cannot create %.1024s", out), -1;
  int bad = 0;
  uint64_t offset = 0;
  for (int64_t i = 0; i < d->num_tensors && !bad; i++) {
    const tensor_desc *t = &d->tensors[i];
    hsize_t dims[ADAMPI_MAX_NDIM];
    uint64_t numel = 1;
    for (int j = 0; j < t->ndim; j++) dims[j] = (hsize_t)t->shape[j], numel *= (uint64_t)t->shape[j];
    hid_t s = t->ndim ? H5Screate_simple(t->ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t ds = s >= 0 ? H5Dcreate2(f, t->name, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : H5I_INVALID_HID;
    bad = ds < 0 || H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, params + offset) < 0;
    if (ds >= 0) H5Dclose(ds);
    if (s >= 0) H5Sclose(s);
    offset += numel;
    if (bad) snprintf(msg, len, "cannot write tensor '%s' into %.1024s", t->name, out);
  }
  if (H5Fclose(f) < 0 && !bad) bad = 1, snprintf(msg, len, "cannot close %.1024s", out);
  return bad ? -1 : 0;
}

static int ends_with(const char *s, const char *tail)
{
  size_t a = strlen(s), b = strlen(tail);
  return a >= b && strcmp(s + a - b, tail) == 0;
}

/* The caller arrays appended to the tensors, as 1-d entries named by the array, their values after
 * the parameters (*params grows): the writers then walk one list, the way torch's state_dict holds
 * parameters and buffers under one set of names. Local. 0, or -1 with the problem in msg. */
static int append_arrays(ckpt_desc *d, float **params, const float *values, char *msg, size_t len)
{
  int64_t numel = 0, extra = 0;
  for (int64_t i = 0; i < d->num_tensors; i++) {
    int64_t n = 1;
    for (int j = 0; j < d->tensors[i].ndim; j++) n *= d->tensors[i].shape[j];
    numel += n;
    for (int k = 0; k < d->num_arrays; k++)
      if (strcmp(d->tensors[i].name, d->arrays[k].name) == 0)
        return snprintf(msg, len, "caller array '%s' has the name of a tensor: one export file cannot hold both", d->arrays[k].name), -1;
  }
  for (int k = 0; k < d->num_arrays; k++) extra += d->arrays[k].len;
  tensor_desc *t = realloc(d->tensors, (size_t)(d->num_tensors + d->num_arrays + 1) * sizeof *t);
  if (t) d->tensors = t;
  float *p = t ? realloc(*params, (size_t)(numel + extra + 1) * sizeof(float)) : NULL;
  if (!p) return snprintf(msg, len, "out of memory for the caller arrays"), -1;
  *params = p;
  memcpy(p + numel, values, (size_t)extra * sizeof(float));
  for (int k = 0; k < d->num_arrays; k++) {
    tensor_desc *e = &d->tensors[d->num_tensors + k];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", d->arrays[k].name);
    e->ndim = 1, e->shape[0] = d->arrays[k].len, e->group = -1;
  }
  d->num_tensors += d->num_arrays;
  return 0;
}

/* Load with the library's checks (full parameters and caller arrays), then rank 0 writes OUT.tmp
 * and renames it. */
static int cmd_export(const char *path, const char *out)
{
  int npz = ends_with(out, ".npz"), h5 = ends_with(out, ".h5") || ends_with(out, ".hdf5");
  if (!npz && !h5) {
    if (rank_ == 0) fprintf(stderr, "adampi-ckpt: export: the output must end in .h5, .hdf5 or .npz: %s\n", out);
    return 2;
  }
  ckpt_desc d;
  char msg[MSG] = "", tmp[4200];
  adampi *opt = NULL;
  float *params = NULL, *values = NULL;
  int rc = load(path, &d, &opt, &params, &values, NULL, msg, sizeof msg);
  if (rc == 0 && rank_ == 0) {
    int64_t tensors = d.num_tensors;
    snprintf(tmp, sizeof tmp, "%s.adampi-tmp", out);
    rc = append_arrays(&d, &params, values, msg, sizeof msg);
    if (rc == 0) rc = npz ? write_npz(tmp, &d, params, msg, sizeof msg) : write_h5(tmp, &d, params, msg, sizeof msg);
    if (rc == 0 && rename(tmp, out) != 0) rc = -1, snprintf(msg, sizeof msg, "cannot rename %.1100s to %.1024s", tmp, out);
    if (rc != 0) unlink(tmp);
    if (rc == 0)
      printf("%s: %" PRId64 " tensors and %d caller arrays, fp32, no optimizer state, written to %s\n", path, tensors,
             d.num_arrays, out);
    else fprintf(stderr, "adampi-ckpt: export: %s\n", msg);
  } else if (rc != 0 && rank_ == 0) {
    fprintf(stderr, "adampi-ckpt: %s: not valid: %s\n", path, msg);
  }
  MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
  free(params);
  free(values);
  free(d.tensors);
  adampi_free(&opt);
  return rc ? 1 : 0;
}

/* ---- latest ----------------------------------------------------------------------------------- */

/* Name of the k-th checkpoint of the rotation: PATH for k = 0, else PATH.k (paths are at most 1024
 * characters, checked in main). */
static void candidate(char *buf, size_t len, const char *path, int k)
{
  if (k == 0) snprintf(buf, len, "%s", path);
  else snprintf(buf, len, "%s.%d", path, k);
}

/* The newest of PATH, PATH.1, ..., PATH.MAX_KEEP (adampi_save's keep_last rotation) that verifies,
 * printed on stdout. Damaged files newer than it are renamed PATH[.k].damaged[.n]: the next save's
 * rotation would otherwise move a damaged PATH over the good PATH.1. No file at all: nothing
 * printed, exit 0 (start from scratch). Files but none valid: exit 1, nothing renamed. */
static int cmd_latest(const char *path)
{
  char cand[1100], msg[MSG];
  int damaged[MAX_KEEP + 1], found = 0, chosen = -1;
  for (int k = 0; k <= MAX_KEEP; k++) {
    candidate(cand, sizeof cand, path, k);
    int here = access(cand, F_OK) == 0, all = 0;
    MPI_Allreduce(&here, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD); /* a shared file system: all see it */
    damaged[k] = 0;
    if (!all) continue;
    found++;
    ckpt_desc d;
    msg[0] = '\0';
    int bad = check(cand, msg, sizeof msg, &d);
    free(d.tensors);
    if (!bad) {
      chosen = k;
      break;
    }
    damaged[k] = 1;
    if (rank_ == 0) fprintf(stderr, "adampi-ckpt: %s is damaged: %s\n", cand, msg);
  }
  if (chosen < 0) {
    if (rank_ == 0 && found) fprintf(stderr, "adampi-ckpt: none of the %d checkpoints at %s[.k] is valid: not choosing one\n", found, path);
    if (rank_ == 0 && !found) fprintf(stderr, "adampi-ckpt: no checkpoint at %s: start from scratch\n", path);
    return found ? 1 : 0;
  }
  int rc = 0;
  if (rank_ == 0) {
    for (int k = 0; k < chosen; k++) {
      if (!damaged[k]) continue;
      char aside[1200];
      candidate(cand, sizeof cand, path, k);
      snprintf(aside, sizeof aside, "%s.damaged", cand);
      for (int n = 1; access(aside, F_OK) == 0 && n < 1000; n++) snprintf(aside, sizeof aside, "%s.damaged.%d", cand, n);
      if (rename(cand, aside) != 0) {
        fprintf(stderr, "adampi-ckpt: cannot move the damaged %s aside: not choosing a checkpoint\n", cand);
        rc = 1;
        break;
      }
      fprintf(stderr, "adampi-ckpt: moved the damaged %s to %s (kept for inspection; out of the rotation)\n", cand, aside);
    }
    candidate(cand, sizeof cand, path, chosen);
    if (rc == 0 && chosen > 0) fprintf(stderr, "adampi-ckpt: falling back to %s\n", cand);
    if (rc == 0) printf("%s\n", cand);
  }
  MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return rc;
}

static void usage(FILE *f)
{
  fprintf(f, "usage: adampi-ckpt info CK.h5        optimizer, steps, ranks at save, groups, tensors, caller arrays and values\n"
             "       adampi-ckpt verify CK.h5      every checksum and the format (mpirun -np N: any N, 1 included)\n"
             "       adampi-ckpt export CK.h5 OUT  fp32 parameters and caller arrays by name; OUT ends in .h5 or .npz\n"
             "       adampi-ckpt latest CK.h5      print the newest valid one of CK.h5, CK.h5.1, ...; move damaged newer ones aside\n"
             "exit status: 0 ok, 1 damaged or unreadable (the first problem is named), 2 usage\n");
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* problems are reported by name, not as HDF5 stacks */
  int rc = 2;
  const char *cmd = argc > 1 ? argv[1] : "";
  for (int i = 2; i < argc; i++)
    if (strlen(argv[i]) > 1024) cmd = "(a path longer than 1024 characters)";
  if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
    if (rank_ == 0) usage(stdout);
    rc = 0;
  } else if (argc == 3 && !strcmp(cmd, "info")) rc = cmd_info(argv[2]);
  else if (argc == 3 && !strcmp(cmd, "verify")) rc = cmd_verify(argv[2]);
  else if (argc == 4 && !strcmp(cmd, "export")) rc = cmd_export(argv[2], argv[3]);
  else if (argc == 3 && !strcmp(cmd, "latest")) rc = cmd_latest(argv[2]);
  else if (rank_ == 0) usage(stderr);
  MPI_Finalize();
  return rc;
}
