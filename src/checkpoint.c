/*
 * checkpoint.c - save and load the optimizer as one self-describing HDF5 file, with parallel HDF5
 * and collective I/O: each rank writes and reads only its shard's part of every dataset, so a
 * file saved on N ranks loads on any M. This file holds the format and the save and load; the
 * atomic-file mechanics are in ckpt_file.c, the dataset checksum in ckpt_digest.c, the caller area
 * in ckpt_user.c, the caller arrays in ckpt_arrays.c (checkpoint.h), and attributes are read and written by h5attr.c (h5io.h), by the
 * same rules as replay files, so a checkpoint edited with h5py still loads.
 *
 * Layout (format "adampi-checkpoint", version 1; documented in the README):
 *   /                       attributes: format, format_version, library_version, optimizer,
 *                           dtype, num_tensors, num_groups, steps_taken, steps_skipped,
 *                           saved_world_size, saved_shard_starts, description
 *   /groups/<g>             attributes: the hyper-parameters of group g (lr is the current one)
 *   /tensors/<name>         attributes: index, group, step; datasets param and the state
 *                           (exp_avg, exp_avg_sq for AdamP; momentum for SGDP), float32 in the
 *                           tensor's shape, contiguous, with a 64-bit checksum attribute;
 *                           param is the fp32 master for a 16-bit model (dtype says which type
 *                           the model had; files without dtype are float32 ones)
 *                           (ckpt_digest.c: a sum over elements, so every rank adds its
 *                           own part and the total does not depend on the sharding)
 *   /user                   attributes: the caller's named integers
 *   /arrays/<name>          the caller's arrays (only if any): float32, 1-d, checksum attribute
 *
 * Atomicity: written as PATH.adampi-tmp with its blocks reserved first, fsynced by every rank,
 * checked, renamed over PATH, directory fsynced. Every failure is agreed across ranks before it is
 * returned, and every rank keeps taking part in the collective HDF5 calls after a local failure so
 * that no rank waits for another.
 */
#define _GNU_SOURCE /* fsync, link, O_DIRECTORY, fallocate */
#include "checkpoint.h"
#include "h5superblock.h"

#include <errno.h>
#include <hdf5.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FORMAT_NAME "adampi-checkpoint"
#define FORMAT_VERSION 1
#define DESCRIPTION                                                                                   \
  "Optimizer checkpoint written by adampi (AdamP/SGDP over MPI). /tensors/<name>/param holds the "    \
  "parameters and the other datasets the optimizer state, in each tensor's own shape; attribute "    \
  "step is the tensor's step counter. /groups/<g> holds the hyper-parameters of group g, /user "    \
  "the caller's values. saved_shard_starts (the layout at save) is for information only. Each "     \
  "dataset's attribute checksum is computed as root attribute checksum_algorithm says. dtype is "   \
  "the model's element type; param is float32 whatever it is (for 16-bit models, the fp32 master)."
adampi_save_options adampi_save_defaults(void)
{
  adampi_save_options o = {ADAMPI_PARAMS_SHARD, 0, NULL, NULL, 0};
  return o;
}

adampi_load_options adampi_load_defaults(void)
{
  adampi_load_options o = {ADAMPI_PARAMS_SHARD, 0, NULL, NULL, 0};
  return o;
}

/* Step counters a file may hold: exact in a double (the bias corrections use pow(beta, t)), and
 * far from overflowing int64 at the next step (found by the fuzzer: INT64_MAX was accepted). */
#define MAX_STEPS ((int64_t)1 << 53)

static void shape_text(char *buf, size_t len, int ndim, const int64_t *shape)
{
  int n = snprintf(buf, len, "[");
  for (int k = 0; k < ndim && n > 0 && (size_t)n < len; k++)
    n += snprintf(buf + n, len - (size_t)n, "%s%lld", k ? ", " : "", (long long)shape[k]);
  if (n > 0 && (size_t)n < len) snprintf(buf + n, len - (size_t)n, "]");
}

/* ---- what is stored per tensor -------------------------------------------------------------- */

static const char *state_name(const adampi *opt, int s)
{
  if (opt->cfg.kind == ADAMPI_SGDP) return "momentum";
  return s == 0 ? "exp_avg" : "exp_avg_sq";
}

/* Elements of tensor t in this rank's shard: shard offset *first, count *n (0 if none). */
static void local_part(const adampi *opt, const adampi__tensor *t, int64_t *first, int64_t *n)
{
  *first = t->offset + t->my_leaf_lo * t->leaf_len - opt->lo;
  *n = (t->my_leaf_hi - t->my_leaf_lo) * t->leaf_len;
}

/* Select this rank's rows of tensor t in a dataspace of t's shape (none if it holds none), and
 * make a memory space of the same shape as the selection: with equal shapes HDF5 copies by
 * blocks instead of visiting every element. */
static void select_part(const adampi__tensor *t, hid_t fspace, hid_t *mspace)
{
  int64_t rows = t->my_leaf_hi - t->my_leaf_lo; /* leaves are rows (ndim > 1) or elements (1-d) */
  if (rows == 0 || t->ndim == 0) {
    hsize_t one = 1;
    *mspace = t->ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &one, NULL);
    if (rows == 0) {
      H5Sselect_none(fspace);
      H5Sselect_none(*mspace);
    }
    return;
  }
  hsize_t start[ADAMPI_MAX_NDIM] = {0}, count[ADAMPI_MAX_NDIM];
  for (int k = 0; k < t->ndim; k++) count[k] = (hsize_t)t->shape[k];
  start[0] = (hsize_t)t->my_leaf_lo;
  count[0] = (hsize_t)rows;
  H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
  *mspace = H5Screate_simple(t->ndim, count, NULL);
}

static hid_t create_dataset(hid_t loc, const char *name, const adampi__tensor *t)
{
  hsize_t dims[ADAMPI_MAX_NDIM];
  for (int k = 0; k < t->ndim; k++) dims[k] = (hsize_t)t->shape[k];
  hid_t space = t->ndim ? H5Screate_simple(t->ndim, dims, NULL) : H5Screate(H5S_SCALAR);
  hid_t d = H5Dcreate2(loc, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Sclose(space);
  return d;
}

/* This rank's checksums of every dataset it holds part of, summed over ranks (one collective):
 * out[3 i + s] for tensor i, dataset s (0 param, 1.. state). */
static adampi_status dataset_digests(adampi *opt, const float *const src[1 + MAX_STATE], uint64_t *out)
{
  adampi_status st = ADAMPI_OK;
  memset(out, 0, (size_t)opt->num_tensors * (1 + MAX_STATE) * sizeof *out);
  for (int i = 0; i < opt->num_tensors; i++) {
    const adampi__tensor *t = &opt->tensors[i];
    int64_t first, n;
    local_part(opt, t, &first, &n);
    for (int s = 0; s <= adampi__ckpt_state_count(opt) && n > 0; s++)
      out[i * (1 + MAX_STATE) + s] = adampi__ckpt_digest(src[s] + first, n, t->my_leaf_lo * t->leaf_len);
  }
  ADAMPI_MPI(opt, MPI_Allreduce(MPI_IN_PLACE, out, opt->num_tensors * (1 + MAX_STATE), MPI_UINT64_T, MPI_SUM, opt->comm));
done:
  return st;
}

/* ---- save ----------------------------------------------------------------------------------- */

static int write_root(adampi__writer *w, hid_t f)
{
  const adampi *opt = w->opt;
  int bad = ADAMPI_H5(w, adampi__h5_put_string(f, "format", FORMAT_NAME));
  bad |= ADAMPI_H5(w, adampi__h5_put_int(f, "format_version", FORMAT_VERSION));
  bad |= ADAMPI_H5(w, adampi__h5_put_string(f, "library_version", ADAMPI_VERSION_STRING));
  bad |= ADAMPI_H5(w, adampi__h5_put_string(f, "optimizer", opt->cfg.kind == ADAMPI_ADAMP ? "adamp" : "sgdp"));
  bad |= ADAMPI_H5(w, adampi__h5_put_string(f, "dtype", adampi_dtype_name(opt->cfg.dtype)));
  bad |= ADAMPI_H5(w, adampi__h5_put_int(f, "num_tensors", opt->num_tensors));
  bad |= ADAMPI_H5(w, adampi__h5_put_int(f, "num_groups", opt->num_groups));
  bad |= ADAMPI_H5(w, adampi__h5_put_int(f, "steps_taken", opt->steps_taken));
  bad |= ADAMPI_H5(w, adampi__h5_put_int(f, "steps_skipped", opt->steps_skipped));
  bad |= ADAMPI_H5(w, adampi__h5_put_int(f, "saved_world_size", opt->size));
  bad |= ADAMPI_H5(w, adampi__h5_put(f, "saved_shard_starts", H5T_STD_I64LE, H5T_NATIVE_INT64, (hsize_t)opt->size + 1,
                                     opt->shard_lo));
  bad |= ADAMPI_H5(w, adampi__h5_put_string(f, "checksum_algorithm", adampi__ckpt_digest_text));
  bad |= ADAMPI_H5(w, adampi__h5_put_string(f, "description", DESCRIPTION));
  return bad;
}

static int write_groups(adampi__writer *w, hid_t f)
{
  hid_t gs = adampi__ckpt_make_group(f, "groups");
  int bad = ADAMPI_H5(w, gs);
  for (int g = 0; g < w->opt->num_groups && !bad; g++) {
    char name[32];
    snprintf(name, sizeof name, "%d", g);
    hid_t h = adampi__ckpt_make_group(gs, name);
    bad |= ADAMPI_H5(w, h) || ADAMPI_H5(w, adampi__h5_put_hparams(h, &w->opt->groups[g]));
    if (h >= 0) H5Gclose(h);
  }
  if (gs >= 0) H5Gclose(gs);
  return bad;
}

/* Every tensor's group, attributes and datasets. Keeps taking part in every collective call
 * after a failure; returns the index of the first tensor that failed, or -1. */
static int write_tensors(adampi__writer *w, hid_t f, hid_t dxpl, const float *params, const uint64_t *digests)
{
  const adampi *opt = w->opt;
  int first_bad = -1;
  hid_t ts = adampi__ckpt_make_group(f, "tensors");
  if (ADAMPI_H5(w, ts)) first_bad = 0;
  for (int i = 0; i < opt->num_tensors; i++) {
    const adampi__tensor *t = &opt->tensors[i];
    w->tensor = t->name;
    hid_t g = adampi__ckpt_make_group(ts, t->name);
    int bad = ADAMPI_H5(w, g) || ADAMPI_H5(w, adampi__h5_put_int(g, "index", i)) ||
              ADAMPI_H5(w, adampi__h5_put_int(g, "group", t->group)) || ADAMPI_H5(w, adampi__h5_put_int(g, "step", t->updates));
    int64_t first, n;
    local_part(opt, t, &first, &n);
    const float *src[1 + MAX_STATE] = {params, opt->state[0], opt->state[1]};
    for (int s = 0; s <= adampi__ckpt_state_count(opt); s++) {
      hid_t d = create_dataset(g, s == 0 ? "param" : state_name(opt, s - 1), t);
      hid_t fspace = d >= 0 ? H5Dget_space(d) : H5I_INVALID_HID, mspace = H5I_INVALID_HID;
      bad |= ADAMPI_H5(w, d);
      if (d >= 0) {
        select_part(t, fspace, &mspace);
        float dummy = 0.0f;
        const float *buf = n > 0 ? src[s] + first : &dummy;
        bad |= ADAMPI_H5(w, H5Dwrite(d, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, buf));
        bad |= ADAMPI_H5(w, adampi__h5_put(d, "checksum", H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, &digests[i * (1 + MAX_STATE) + s]));
        H5Sclose(mspace);
        H5Sclose(fspace);
        bad |= ADAMPI_H5(w, H5Dclose(d));
      }
    }
    if (g >= 0) H5Gclose(g);
    if (bad && first_bad < 0) first_bad = i;
  }
  w->tensor = NULL;
  if (ts >= 0) H5Gclose(ts);
  return first_bad;
}

adampi_status adampi_save(adampi *opt, const char *path, const void *params, const adampi_save_options *options)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  adampi_status st = ADAMPI_OK;
  adampi_save_options o = options ? *options : adampi_save_defaults();
  char tmp[4200];
  hid_t fapl = H5I_INVALID_HID, dxpl = H5I_INVALID_HID, f = H5I_INVALID_HID;
  uint64_t *digests = NULL;
  adampi__h5_quiet quiet = {0};

  if (!opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "save before adampi_commit");
  if (path == NULL || path[0] == '\0' || strlen(path) > 4000)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "the checkpoint path is NULL, empty or too long");
  else if (params == NULL && opt->hi > opt->lo)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: params is NULL", opt->rank);
  else if (o.params != ADAMPI_PARAMS_SHARD && o.params != ADAMPI_PARAMS_FULL)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "options->params = %d is not a known form", (int)o.params);
  else if (o.keep_last < 0 || o.keep_last > 1000)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "options->keep_last = %d is outside 0..1000", o.keep_last);
  for (int i = 0; st == ADAMPI_OK && o.user && i < o.user->count; i++)
    if (o.user->count > ADAMPI_USER_MAX || !adampi__ckpt_valid_user_name(o.user->name[i]))
      st = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "caller value %d has an invalid name or count", i);
  if (st == ADAMPI_OK) st = adampi__ckpt_arrays_check(opt, o.arrays, o.num_arrays);
  digests = calloc((size_t)opt->num_tensors * (1 + MAX_STATE), sizeof *digests);
  if (digests == NULL && st == ADAMPI_OK) st = ADAMPI_FAIL(opt, ADAMPI_ERR_NOMEM, "no memory");
  if (st == ADAMPI_OK && opt->rank == 0) st = adampi__ckpt_check_space(opt, path);
  st = adampi__agree(opt, st);
  if (st != ADAMPI_OK) goto done;
  uint64_t array_digests[ADAMPI_ARRAYS_MAX];
  if ((st = adampi__ckpt_arrays_agree(opt, o.arrays, o.num_arrays, array_digests)) != ADAMPI_OK) goto done;

  /* The fp32 parameters of the shard: the caller's, or a 16-bit handle's master, made from the
   * caller's shard if no step, adampi_set_master or adampi_load made it yet (the value the first
   * step would take; it becomes valid only if the save succeeds). */
  const void *mine = params && o.params == ADAMPI_PARAMS_FULL ? (const char *)params + (size_t)opt->lo * opt->elem : (const void *)params;
  const float *w = mine;
  if (opt->master) {
    if (!opt->master_valid) adampi__master_from(opt, mine);
    w = opt->master;
  }
  const float *src[1 + MAX_STATE] = {w, opt->state[0], opt->state[1]};
  st = dataset_digests(opt, src, digests);
  if ((st = adampi__agree(opt, st)) != ADAMPI_OK) goto done;

  snprintf(tmp, sizeof tmp, "%s.adampi-tmp", path);
  adampi__h5_quiet_begin(&quiet); /* the application's HDF5 error handler is restored at done */
  adampi__writer wr = {opt, tmp, NULL};
  int setup_bad = ADAMPI_H5(&wr, fapl = H5Pcreate(H5P_FILE_ACCESS)) ||
                  ADAMPI_H5(&wr, H5Pset_fapl_mpio(fapl, opt->comm, MPI_INFO_NULL)) ||       /* required: parallel access */
                  ADAMPI_H5(&wr, H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST)) || /* checksummed metadata */
                  ADAMPI_H5(&wr, dxpl = H5Pcreate(H5P_DATASET_XFER));
  if (!setup_bad) {
    H5Pset_coll_metadata_write(fapl, 1);          /* optional: fewer small writes */
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE); /* optional: fewer, larger writes */
  }
  if ((st = adampi__agree(opt, setup_bad ? ADAMPI_ERR_IO : ADAMPI_OK)) != ADAMPI_OK) goto done;
  hid_t fcpl = adampi__ckpt_compact_plist(H5P_FILE_CREATE); /* the root group's links and attributes */
  f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);
  H5Pclose(fcpl);
  if (f < 0) {
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot create %s (%s)", tmp, strerror(errno));
    st = adampi__agree(opt, st);
    goto done;
  }
  if (opt->rank == 0) st = adampi__ckpt_reserve_space(opt, tmp);
  if ((st = adampi__agree(opt, st)) != ADAMPI_OK) goto done;
  int bad = write_root(&wr, f) | write_groups(&wr, f) | adampi__ckpt_write_user(&wr, f, o.user);
  bad |= adampi__ckpt_write_arrays(&wr, f, dxpl, o.arrays, o.num_arrays, array_digests);
  int bad_tensor = write_tensors(&wr, f, dxpl, w, digests);
  /* No H5Fflush: after a local write error HDF5 may leave it early on one rank and wait in it on
   * the others. Close, then every rank fsyncs what it wrote (no collective involved). */
  if (ADAMPI_H5(&wr, H5Fclose(f))) bad = 1;
  f = H5I_INVALID_HID;
  if (!bad && bad_tensor < 0 && adampi__ckpt_fsync_path(tmp, 0) != 0)
    bad = 1, ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot fsync %s: %s", tmp, strerror(errno));
  if (bad_tensor >= 0)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot write tensor '%s' to %s (disk full or I/O error?)",
                     opt->tensors[bad_tensor].name, tmp);
  else if (bad)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot write %s (disk full or I/O error?)", tmp);
  st = adampi__agree(opt, st);
  if (st == ADAMPI_OK && opt->rank == 0) {
    char dir[4200];
    struct stat sb;
    snprintf(dir, sizeof dir, "%s", path);
    /* Last line of defence before the old file is replaced: the new one must at least be HDF5
     * and hold the data. */
    if (H5Fis_hdf5(tmp) <= 0 || stat(tmp, &sb) != 0 || (double)sb.st_size < 4.0 * (double)opt->numel * (1 + adampi__ckpt_state_count(opt)))
      st = ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "the new checkpoint %s is incomplete (disk full or I/O error?)", tmp);
    else if (truncate(tmp, sb.st_size) != 0) /* releases the reserved blocks past the end */
      st = ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot trim %s: %s", tmp, strerror(errno));
    else if (o.keep_last > 0 && adampi__ckpt_rotate(path, o.keep_last) != 0)
      st = ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot rotate the previous checkpoints of %s: %s", path, strerror(errno));
    else if (rename(tmp, path) != 0)
      st = ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    else if (adampi__ckpt_fsync_path(dirname(dir), 1) != 0)
      st = ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot fsync the directory of %s: %s", path, strerror(errno));
  }
  st = adampi__agree(opt, st);
  if (st == ADAMPI_OK && opt->master) opt->master_valid = 1;
done:
  if (f >= 0) H5Fclose(f);
  if (dxpl >= 0) H5Pclose(dxpl);
  if (fapl >= 0) H5Pclose(fapl);
  adampi__h5_quiet_end(&quiet);
  if (st != ADAMPI_OK && opt->rank == 0 && path) {
    snprintf(tmp, sizeof tmp, "%s.adampi-tmp", path);
    unlink(tmp);
  }
  free(digests);
  return st;
}

/* ---- load ----------------------------------------------------------------------------------- */

/* What a load reads before anything changes. */
typedef struct staged {
  float *w, *s0, *s1;
  int64_t *steps;
  uint64_t *digests; /* stored checksums, 3 per tensor */
  uint64_t *sums;    /* checksums of what was read */
  adampi_hparams *groups;
  adampi_user user;
  int64_t taken, skipped;
  adampi_dtype dtype; /* the model's type when saved (information: any type loads into any) */
} staged;

static adampi_status check_root(adampi *opt, hid_t f, const char *path, staged *sg)
{
  char format[64], kind[32], msg[512];
  int64_t version = 0, n = 0;
  if (adampi__h5_get_string(f, "root", "format", format, sizeof format, msg, sizeof msg) != ADAMPI_OK)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s is not an adampi checkpoint (%s)", path, msg);
  if (strcmp(format, FORMAT_NAME) != 0)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s is not an adampi checkpoint (root attribute format is '%s')", path, format);
  if (adampi__h5_get_int(f, "root", "format_version", &version, msg, sizeof msg) != ADAMPI_OK)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s has no valid format_version (%s)", path, msg);
  if (version < 1) return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s has no valid format_version (%lld)", path, (long long)version);
  if (version > FORMAT_VERSION)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT,
                       "%s was written by a newer adampi (format version %lld; this build reads up to %d): "
                       "load it with a newer adampi",
                       path, (long long)version, FORMAT_VERSION);
  if (adampi__h5_get_string(f, "root", "optimizer", kind, sizeof kind, msg, sizeof msg) != ADAMPI_OK)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: %s", path, msg);
  const char *mine = opt->cfg.kind == ADAMPI_ADAMP ? "adamp" : "sgdp";
  if (strcmp(kind, mine) != 0)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_MISMATCH, "%s holds '%s' state but this optimizer is '%s'", path, kind, mine);
  /* Files of adampi 0.1 have no dtype: they are float32 models. */
  sg->dtype = ADAMPI_FLOAT32;
  if (adampi__h5_has(f, "dtype")) {
    char dtype[32];
    if (adampi__h5_get_string(f, "root", "dtype", dtype, sizeof dtype, msg, sizeof msg) != ADAMPI_OK)
      return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: %s", path, msg);
    adampi_dtype known[] = {ADAMPI_FLOAT32, ADAMPI_BFLOAT16, ADAMPI_FLOAT16};
    int k = 0;
    while (k < 3 && strcmp(dtype, adampi_dtype_name(known[k])) != 0) k++;
    if (k == 3)
      return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT,
                         "%s: root attribute dtype = '%s' is not an element type this adampi knows (float32, "
                         "bfloat16, float16)",
                         path, dtype);
    sg->dtype = known[k];
  }
  if (adampi__h5_get_int(f, "root", "num_tensors", &n, msg, sizeof msg) != ADAMPI_OK)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: %s", path, msg);
  if (n != opt->num_tensors)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_MISMATCH, "%s holds %lld tensors but %d are registered", path, (long long)n,
                       opt->num_tensors);
  if (adampi__h5_get_int(f, "root", "num_groups", &n, msg, sizeof msg) != ADAMPI_OK)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: %s", path, msg);
  if (n != opt->num_groups)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_MISMATCH, "%s holds %lld parameter groups but %d were added", path, (long long)n,
                       opt->num_groups);
  msg[0] = '\0';
  if (adampi__h5_get_int(f, "root", "steps_taken", &sg->taken, msg, sizeof msg) != ADAMPI_OK ||
      adampi__h5_get_int(f, "root", "steps_skipped", &sg->skipped, msg, sizeof msg) != ADAMPI_OK || sg->taken < 0 ||
      sg->skipped < 0 || sg->taken > MAX_STEPS || sg->skipped > MAX_STEPS)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: root attributes steps_taken/steps_skipped are missing or invalid%s%s%s", path,
                       msg[0] ? " (" : "", msg, msg[0] ? ")" : "");
  return ADAMPI_OK;
}

static adampi_status read_groups(adampi *opt, hid_t f, const char *path, staged *sg)
{
  for (int g = 0; g < opt->num_groups; g++) {
    char name[32], where[40], msg[512];
    snprintf(name, sizeof name, "groups/%d", g);
    snprintf(where, sizeof where, "/%s", name);
    if (H5Lexists(f, "groups", H5P_DEFAULT) <= 0 || H5Lexists(f, name, H5P_DEFAULT) <= 0)
      return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: /%s is missing", path, name);
    hid_t h = H5Gopen2(f, name, H5P_DEFAULT);
    if (h < 0) return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: /%s cannot be opened as a group (H5Gopen2 failed)", path, name);
    adampi_hparams hp = {0};
    adampi_status st = adampi__h5_get_hparams(h, where, &hp, msg, sizeof msg);
    H5Gclose(h);
    if (st != ADAMPI_OK) return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: %s", path, msg);
    if (adampi__hparams_check(opt->cfg.kind, &hp, msg, sizeof msg) != ADAMPI_OK)
      return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: /%s: %s", path, name, msg);
    sg->groups[g] = hp;
  }
  return ADAMPI_OK;
}

/* Names, groups, step counters, types and shapes of every tensor; nothing is read yet. */
static adampi_status check_tensors(adampi *opt, hid_t f, const char *path, staged *sg)
{
  hsize_t count = 0;
  H5G_info_t info;
  if (H5Lexists(f, "tensors", H5P_DEFAULT) <= 0 || H5Gget_info_by_name(f, "tensors", &info, H5P_DEFAULT) < 0)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: /tensors is missing", path);
  count = info.nlinks;
  if (count != (hsize_t)opt->num_tensors)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_MISMATCH, "%s: /tensors holds %llu tensors but %d are registered", path,
                       (unsigned long long)count, opt->num_tensors);
  for (int i = 0; i < opt->num_tensors; i++) {
    const adampi__tensor *t = &opt->tensors[i];
    char gpath[400];
    snprintf(gpath, sizeof gpath, "tensors/%s", t->name);
    if (H5Lexists(f, gpath, H5P_DEFAULT) <= 0)
      return ADAMPI_FAIL(opt, ADAMPI_ERR_MISMATCH, "%s: tensor '%s' is not in the checkpoint", path, t->name);
    hid_t g = H5Gopen2(f, gpath, H5P_DEFAULT);
    int64_t group = -1, step = -1;
    char where[440], msg[600] = "";
    snprintf(where, sizeof where, "/%s", gpath);
    int bad = g < 0 || adampi__h5_get_int(g, where, "group", &group, msg, sizeof msg) != ADAMPI_OK ||
              adampi__h5_get_int(g, where, "step", &step, msg, sizeof msg) != ADAMPI_OK || step < 0 || step > MAX_STEPS;
    if (!bad && group != t->group) {
      H5Gclose(g);
      return ADAMPI_FAIL(opt, ADAMPI_ERR_MISMATCH, "%s: tensor '%s' is in group %lld in the checkpoint but in group %d here",
                         path, t->name, (long long)group, t->group);
    }
    sg->steps[i] = step;
    for (int s = 0; s <= adampi__ckpt_state_count(opt) && !bad; s++) {
      const char *dname = s == 0 ? "param" : state_name(opt, s - 1);
      if (H5Lexists(g, dname, H5P_DEFAULT) <= 0) {
        H5Gclose(g);
        return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: tensor '%s' has no dataset '%s'", path, t->name, dname);
      }
      hid_t d = H5Dopen2(g, dname, H5P_DEFAULT);
      hid_t type = d >= 0 ? H5Dget_type(d) : H5I_INVALID_HID, space = d >= 0 ? H5Dget_space(d) : H5I_INVALID_HID;
      int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
      hsize_t dims[ADAMPI_MAX_NDIM] = {0};
      int64_t shape[ADAMPI_MAX_NDIM] = {0};
      int typed = type >= 0 && H5Tget_class(type) == H5T_FLOAT && H5Tget_size(type) == 4;
      int same = nd == t->ndim;
      if (nd >= 0 && nd <= ADAMPI_MAX_NDIM) {
        H5Sget_simple_extent_dims(space, dims, NULL);
        for (int k = 0; k < nd; k++) shape[k] = (int64_t)dims[k], same &= shape[k] == t->shape[k];
      }
      uint64_t *sum = &sg->digests[i * (1 + MAX_STATE) + s];
      char sum_msg[600] = "", dwhere[460];
      snprintf(dwhere, sizeof dwhere, "/%s/%s", gpath, dname);
      int summed = d >= 0 && adampi__h5_get_uint(d, dwhere, "checksum", sum, sum_msg, sizeof sum_msg) == ADAMPI_OK;
      if (type >= 0) H5Tclose(type);
      if (space >= 0) H5Sclose(space);
      if (d >= 0) H5Dclose(d);
      if (d < 0 || !typed) {
        H5Gclose(g);
        return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: tensor '%s': dataset '%s' is not float32", path, t->name, dname);
      }
      if (!same) {
        char a[160] = "[?]", b[160];
        if (nd >= 0 && nd <= ADAMPI_MAX_NDIM) shape_text(a, sizeof a, nd, shape);
        shape_text(b, sizeof b, t->ndim, t->shape);
        H5Gclose(g);
        return ADAMPI_FAIL(opt, ADAMPI_ERR_MISMATCH, "%s: tensor '%s': checkpoint shape %s, registered shape %s", path,
                           t->name, a, b);
      }
      if (d >= 0 && !summed) {
        H5Gclose(g);
        return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: tensor '%s': dataset '%s' has no valid checksum attribute (%s)", path,
                           t->name, dname, sum_msg);
      }
    }
    if (g >= 0) H5Gclose(g);
    if (bad)
      return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: tensor '%s' lacks valid group/step attributes (step must be 0..2^53)%s%s%s",
                         path, t->name, msg[0] ? " (" : "", msg, msg[0] ? ")" : "");
  }
  return ADAMPI_OK;
}

/* Read every tensor's shard part into the staging buffers, then compare the checksums (one
 * collective). Takes part in every call even after a failure; returns the first failure. */
static adampi_status read_tensors(adampi *opt, hid_t f, hid_t dxpl, const char *path, staged *sg)
{
  adampi_status st = ADAMPI_OK;
  float *dst[1 + MAX_STATE] = {sg->w, sg->s0, sg->s1};
  uint64_t *sums = sg->sums;
  for (int i = 0; i < opt->num_tensors; i++) {
    const adampi__tensor *t = &opt->tensors[i];
    int64_t first, n;
    local_part(opt, t, &first, &n);
    for (int s = 0; s <= adampi__ckpt_state_count(opt); s++) {
      const char *dname = s == 0 ? "param" : state_name(opt, s - 1);
      char dpath[400];
      snprintf(dpath, sizeof dpath, "tensors/%s/%s", t->name, dname);
      hid_t d = H5Dopen2(f, dpath, H5P_DEFAULT);
      hid_t fspace = d >= 0 ? H5Dget_space(d) : H5I_INVALID_HID, mspace = H5I_INVALID_HID;
      float dummy = 0.0f;
      int bad = d < 0;
      if (d >= 0) {
        select_part(t, fspace, &mspace);
        bad = H5Dread(d, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, n > 0 ? dst[s] + first : &dummy) < 0;
        /* the checksum of the piece while it is still in cache */
        if (!bad && n > 0) sums[i * (1 + MAX_STATE) + s] = adampi__ckpt_digest(dst[s] + first, n, t->my_leaf_lo * t->leaf_len);
        H5Sclose(mspace);
        H5Sclose(fspace);
        H5Dclose(d);
      }
      if (bad && st == ADAMPI_OK)
        st = ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "%s: tensor '%s', dataset '%s' cannot be read", path, t->name, dname);
    }
  }
  ADAMPI_MPI(opt, MPI_Allreduce(MPI_IN_PLACE, sums, opt->num_tensors * (1 + MAX_STATE), MPI_UINT64_T, MPI_SUM, opt->comm));
  for (int i = 0; i < opt->num_tensors && st == ADAMPI_OK; i++)
    for (int s = 0; s <= adampi__ckpt_state_count(opt) && st == ADAMPI_OK; s++)
      if (sums[i * (1 + MAX_STATE) + s] != sg->digests[i * (1 + MAX_STATE) + s])
        st = ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: tensor '%s', dataset '%s': checksum mismatch (the file is corrupt)",
                         path, opt->tensors[i].name, s == 0 ? "param" : state_name(opt, s - 1));
done:
  return st;
}

static void free_staged(const adampi *opt, staged *sg)
{
  size_t n = (size_t)(opt->hi - opt->lo) * sizeof(float);
  adampi__free_zeroed(sg->s0, n);
  adampi__free_zeroed(sg->s1, opt->cfg.kind == ADAMPI_ADAMP ? n : 0);
  free(sg->steps);
  free(sg->digests);
  free(sg->sums);
  free(sg->groups);
}

adampi_status adampi_load(adampi *opt, const char *path, void *params, const adampi_load_options *options)
{
  if (opt == NULL) return ADAMPI_ERR_ARG;
  adampi__clear_error(opt);
  if (!opt->committed) return ADAMPI_FAIL(opt, ADAMPI_ERR_STATE, "load before adampi_commit");
  adampi_status st = ADAMPI_OK;
  adampi_load_options o = options ? *options : adampi_load_defaults();
  hid_t fapl = H5I_INVALID_HID, dxpl = H5I_INVALID_HID, f = H5I_INVALID_HID;
  size_t n = (size_t)(opt->hi - opt->lo);
  staged sg = {0};
  float *arrays = NULL; /* the caller arrays, staged */
  adampi__h5_quiet quiet = {0};

  if (path == NULL || path[0] == '\0') st = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "the checkpoint path is NULL or empty");
  else if (params == NULL && n > 0) st = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "rank %d: params is NULL", opt->rank);
  else if (o.params != ADAMPI_PARAMS_SHARD && o.params != ADAMPI_PARAMS_FULL)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "options->params = %d is not a known form", (int)o.params);
  else if (access(path, R_OK) != 0)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot read %s: %s", path, strerror(errno));
  else st = adampi__ckpt_arrays_check(opt, o.arrays, o.num_arrays);
  if (st == ADAMPI_OK && (arrays = adampi__ckpt_arrays_stage(o.arrays, o.num_arrays)) == NULL)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_NOMEM, "rank %d: no memory to stage the caller arrays", opt->rank);
  if (st == ADAMPI_OK) {
    sg.w = opt->grad_shard; /* scratch between steps, already touched: stages the parameters */
    sg.s0 = adampi__alloc_zeroed(n * sizeof(float));
    sg.s1 = adampi__alloc_zeroed((opt->cfg.kind == ADAMPI_ADAMP ? n : 0) * sizeof(float));
    sg.steps = calloc((size_t)opt->num_tensors, sizeof *sg.steps);
    sg.digests = calloc((size_t)opt->num_tensors * (1 + MAX_STATE), sizeof *sg.digests);
    sg.sums = calloc((size_t)opt->num_tensors * (1 + MAX_STATE), sizeof *sg.sums);
    sg.groups = calloc((size_t)opt->num_groups, sizeof *sg.groups);
    if (!sg.s0 || !sg.s1 || !sg.steps || !sg.digests || !sg.sums || !sg.groups)
      st = ADAMPI_FAIL(opt, ADAMPI_ERR_NOMEM, "rank %d: no memory to stage its shard", opt->rank);
  }
  adampi__h5_quiet_begin(&quiet); /* the application's HDF5 error handler is restored at done */
  int superblock = st == ADAMPI_OK ? adampi_h5_superblock_version(path) : 0;
  if (st == ADAMPI_OK && (superblock == -1 || H5Fis_hdf5(path) <= 0))
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s is not an HDF5 file (empty, truncated or another kind of file)", path);
  else if (st == ADAMPI_OK && superblock == -2)
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot read %s: %s", path, strerror(errno));
  else if (st == ADAMPI_OK && superblock < 2) /* adampi writes 2 or later: see h5superblock.h */
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s is not an adampi checkpoint (HDF5 superblock version %d, without metadata checksums)",
                     path, superblock);
  if ((st = adampi__agree(opt, st)) != ADAMPI_OK) goto done;
  /* The same list everywhere, before the metadata reads that every rank makes together. */
  if ((st = adampi__ckpt_arrays_agree(opt, o.arrays, o.num_arrays, NULL)) != ADAMPI_OK) goto done;

  /* Reads are independent: each rank reads only its own rows, straight into its buffers. */
  const char *failed = (fapl = H5Pcreate(H5P_FILE_ACCESS)) < 0                         ? "H5Pcreate(H5P_FILE_ACCESS)"
                       : H5Pset_fapl_mpio(fapl, opt->comm, MPI_INFO_NULL) < 0           ? "H5Pset_fapl_mpio" /* required */
                       : (dxpl = H5Pcreate(H5P_DATASET_XFER)) < 0                       ? "H5Pcreate(H5P_DATASET_XFER)"
                       : H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_INDEPENDENT) < 0              ? "H5Pset_dxpl_mpio" /* required */
                                                                                        : NULL;
  if (failed) st = ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot read %s: %s failed", path, failed);
  if ((st = adampi__agree(opt, st)) != ADAMPI_OK) goto done;
  H5Pset_all_coll_metadata_ops(fapl, 1); /* optional: one rank reads metadata */
  f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  if (f < 0) st = ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s cannot be opened: truncated or corrupt HDF5 file", path);
  if (st == ADAMPI_OK) st = check_root(opt, f, path, &sg);
  if (st == ADAMPI_OK) st = read_groups(opt, f, path, &sg);
  if (st == ADAMPI_OK) st = check_tensors(opt, f, path, &sg);
  if (st == ADAMPI_OK) st = adampi__ckpt_read_user(opt, f, path, &sg.user);
  if (st == ADAMPI_OK) st = adampi__ckpt_read_arrays(opt, f, path, o.arrays, o.num_arrays, arrays);
  /* All ranks read the same metadata, but agree before the collective reads all the same. */
  if ((st = adampi__agree(opt, st)) != ADAMPI_OK) goto done;
  st = read_tensors(opt, f, dxpl, path, &sg);
  if ((st = adampi__agree(opt, st)) != ADAMPI_OK) goto done;

  /* Everything is read and agreed: now, and only now, change the caller's data and the optimizer.
   * The full parameters first: their all-gather is the one step left that involves the other
   * ranks (pairwise rounds of chunks, so no count overflows past 2^31 elements; MPI_Allgatherv's
   * int counts refused such models before). If it fails, every rank returns the error with the
   * optimizer as it was; the caller's parameters may then be part old, part new (an MPI failure,
   * which the default error handler would have made fatal anyway). */
  /* The file's parameters are fp32 whatever the model's type was (sg.dtype): they become a 16-bit
   * handle's master, and the caller's parameters receive them rounded to the handle's type. */
  if (o.params == ADAMPI_PARAMS_SHARD) {
    adampi__round(opt->cfg.dtype, sg.w, params, (int64_t)n);
  } else {
    adampi__round(opt->cfg.dtype, sg.w, (char *)params + (size_t)opt->lo * opt->elem, (int64_t)n);
    st = adampi__allgather_params(opt, params);
    if ((st = adampi__agree(opt, st)) != ADAMPI_OK) goto done;
  }
  if (opt->master) {
    if (n > 0) memcpy(opt->master, sg.w, n * sizeof(float));
    opt->master_valid = 1;
  }
  /* The staged state becomes the state (a swap, not a copy); the old buffers are freed below. */
  float *old0 = opt->state[0], *old1 = opt->state[1];
  opt->state[0] = sg.s0, sg.s0 = old0;
  if (opt->cfg.kind == ADAMPI_ADAMP) opt->state[1] = sg.s1, sg.s1 = old1;
  for (int i = 0; i < opt->num_tensors; i++) {
    opt->tensors[i].updates = sg.steps[i];
    memset(&opt->tensors[i].diag, 0, sizeof opt->tensors[i].diag);
  }
  if (!o.keep_hparams) memcpy(opt->groups, sg.groups, (size_t)opt->num_groups * sizeof *sg.groups);
  opt->steps_taken = sg.taken;
  opt->steps_skipped = sg.skipped;
  if (o.user) *o.user = sg.user;
  adampi__ckpt_arrays_commit(o.arrays, o.num_arrays, arrays);
done:
  if (f >= 0) H5Fclose(f);
  if (dxpl >= 0) H5Pclose(dxpl);
  if (fapl >= 0) H5Pclose(fapl);
  adampi__h5_quiet_end(&quiet);
  free_staged(opt, &sg);
  free(arrays);
  return st;
}
