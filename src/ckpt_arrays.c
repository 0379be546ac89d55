/*
 * ckpt_arrays.c - the caller arrays of a checkpoint (adampi_array): named, replicated float32
 * arrays that are model state but not parameters, stored whole as /arrays/NAME with a checksum
 * (ckpt_digest.c, the same definition as every other dataset, first index 0). Not the optimizer's
 * data: the step never sees them. The save and load in checkpoint.c call these in their phases:
 * local checks, one collective agreement, the HDF5 calls, and (load) the copy into the caller's
 * arrays once everything succeeded.
 */
#include "checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAYS_DESCRIPTION                                                                          \
  "Caller arrays: model state that is not a parameter (e.g. BatchNorm running statistics), the "   \
  "same on every rank when saved. Each dataset is one array, float32, 1-d, with a checksum "        \
  "attribute computed as root attribute checksum_algorithm says (element indices from 0)."

adampi_status adampi__ckpt_arrays_check(adampi *opt, const adampi_array *a, int n)
{
  if (n < 0 || n > ADAMPI_ARRAYS_MAX)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "num_arrays = %d is outside 0..%d", n, ADAMPI_ARRAYS_MAX);
  if (n > 0 && a == NULL) return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "arrays is NULL but num_arrays = %d", n);
  for (int i = 0; i < n; i++) {
    if (!adampi__ckpt_valid_user_name(a[i].name))
      return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "caller array %d: the name must be 1..%d characters without '/'", i,
                         ADAMPI_USER_NAME - 1);
    if (a[i].len < 1 || a[i].data == NULL)
      return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "caller array '%s': len = %lld and data %s (len >= 1 and data are needed)",
                         a[i].name, (long long)a[i].len, a[i].data ? "set" : "NULL");
    for (int k = 0; k < i; k++)
      if (strcmp(a[k].name, a[i].name) == 0)
        return ADAMPI_FAIL(opt, ADAMPI_ERR_ARG, "caller array '%s' is in the list twice", a[i].name);
  }
  return ADAMPI_OK;
}

/* FNV-1a over the names (with their NULs) and lengths: equal on every rank exactly when the lists
 * are (up to a 2^-64 collision). */
static uint64_t list_hash(const adampi_array *a, int n)
{
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < n; i++) {
    const unsigned char *name = (const unsigned char *)a[i].name, *len = (const unsigned char *)&a[i].len;
    for (size_t k = 0; k <= strlen(a[i].name); k++) h = (h ^ name[k]) * 1099511628211ull;
    for (size_t k = 0; k < sizeof a[i].len; k++) h = (h ^ len[k]) * 1099511628211ull;
  }
  return h;
}

adampi_status adampi__ckpt_arrays_agree(adampi *opt, const adampi_array *a, int n, uint64_t *digests)
{
  adampi_status st = ADAMPI_OK;
  /* One maximum over {x, ~x} per value: a value is the same on every rank exactly when both its
   * largest and (complemented) its smallest copy equal this rank's. Slot 0 is the list. */
  uint64_t mine[2 * (ADAMPI_ARRAYS_MAX + 1)], most[2 * (ADAMPI_ARRAYS_MAX + 1)];
  int slots = digests ? n + 1 : 1;
  mine[0] = list_hash(a, n);
  for (int i = 0; digests && i < n; i++) mine[i + 1] = digests[i] = adampi__ckpt_digest(a[i].data, a[i].len, 0);
  for (int s = 0; s < slots; s++) mine[slots + s] = ~mine[s];
  ADAMPI_MPI(opt, MPI_Allreduce(mine, most, 2 * slots, MPI_UINT64_T, MPI_MAX, opt->comm));
  if (most[0] != mine[0] || most[slots] != mine[slots]) {
    st = ADAMPI_FAIL(opt, ADAMPI_ERR_MISMATCH, "ranks pass different caller arrays (names, lengths or order)");
    goto done;
  }
  for (int s = 1; s < slots; s++)
    if (most[s] != mine[s] || most[slots + s] != mine[slots + s]) {
      st = ADAMPI_FAIL(opt, ADAMPI_ERR_MISMATCH, "ranks hold different values of caller array '%s' (it must be replicated)",
                       a[s - 1].name);
      goto done;
    }
done:
  return adampi__agree(opt, st);
}

int adampi__ckpt_write_arrays(adampi__writer *w, hid_t f, hid_t dxpl, const adampi_array *a, int n, const uint64_t *digests)
{
  if (n == 0) return 0; /* no /arrays group: the file is what it was before caller arrays existed */
  hid_t g = adampi__ckpt_make_group(f, "arrays");
  int bad = ADAMPI_H5(w, g);
  if (!bad) bad |= ADAMPI_H5(w, adampi__h5_put_string(g, "description", ARRAYS_DESCRIPTION));
  /* The dataset calls are collective: every rank makes them even after a failure; rank 0 alone
   * selects the data, the others select nothing. */
  for (int i = 0; i < n && g >= 0; i++) {
    hsize_t len = (hsize_t)a[i].len, one = 1;
    hid_t fspace = H5Screate_simple(1, &len, NULL);
    hid_t mspace = w->opt->rank == 0 ? H5Screate_simple(1, &len, NULL) : H5Screate_simple(1, &one, NULL);
    hid_t d = H5Dcreate2(g, a[i].name, H5T_IEEE_F32LE, fspace, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bad |= ADAMPI_H5(w, d);
    if (w->opt->rank != 0) H5Sselect_none(fspace), H5Sselect_none(mspace);
    if (d >= 0) {
      bad |= ADAMPI_H5(w, H5Dwrite(d, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, a[i].data));
      bad |= ADAMPI_H5(w, adampi__h5_put(d, "checksum", H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, &digests[i]));
      bad |= ADAMPI_H5(w, H5Dclose(d));
    }
    H5Sclose(mspace);
    H5Sclose(fspace);
  }
  if (g >= 0) H5Gclose(g);
  return bad;
}

float *adampi__ckpt_arrays_stage(const adampi_array *a, int n)
{
  size_t total = 0;
  for (int i = 0; i < n; i++) total += (size_t)a[i].len;
  return malloc((total ? total : 1) * sizeof(float));
}

/* Check and read one array into dst. Every rank reads it whole (it is replicated and small), with
 * independent I/O; the metadata calls are the same on every rank, so they fail alike. */
static adampi_status read_one(adampi *opt, hid_t f, const char *path, const adampi_array *a, float *dst)
{
  char dpath[ADAMPI_USER_NAME + 16], where[ADAMPI_USER_NAME + 24], msg[600] = "";
  snprintf(dpath, sizeof dpath, "arrays/%.*s", ADAMPI_USER_NAME - 1, a->name); /* checked: it fits */
  snprintf(where, sizeof where, "/%s", dpath);
  if (H5Lexists(f, "arrays", H5P_DEFAULT) <= 0 || H5Lexists(f, dpath, H5P_DEFAULT) <= 0)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: caller array '%s' (%s) is not in the checkpoint", path, a->name, where);
  hid_t d = H5Dopen2(f, dpath, H5P_DEFAULT);
  hid_t type = d >= 0 ? H5Dget_type(d) : H5I_INVALID_HID, space = d >= 0 ? H5Dget_space(d) : H5I_INVALID_HID;
  hsize_t dims[ADAMPI_MAX_NDIM] = {0};
  int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
  if (nd >= 0 && nd <= ADAMPI_MAX_NDIM) H5Sget_simple_extent_dims(space, dims, NULL);
  int typed = type >= 0 && H5Tget_class(type) == H5T_FLOAT && H5Tget_size(type) == 4;
  uint64_t stored = 0;
  int summed = d >= 0 && adampi__h5_get_uint(d, where, "checksum", &stored, msg, sizeof msg) == ADAMPI_OK;
  int read = d >= 0 && typed && nd == 1 && dims[0] == (hsize_t)a->len && summed &&
             H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) >= 0;
  if (type >= 0) H5Tclose(type);
  if (space >= 0) H5Sclose(space);
  if (d >= 0) H5Dclose(d);
  if (!typed || nd != 1)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: caller array '%s': %s is not a 1-d float32 dataset", path, a->name, where);
  if (dims[0] != (hsize_t)a->len)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: caller array '%s': the checkpoint holds %llu elements, %lld were asked for",
                       path, a->name, (unsigned long long)dims[0], (long long)a->len);
  if (!summed)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: caller array '%s': no valid checksum attribute (%s)", path, a->name, msg);
  if (!read) return ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "%s: caller array '%s' cannot be read", path, a->name);
  if (adampi__ckpt_digest(dst, a->len, 0) != stored)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: caller array '%s': checksum mismatch (the file is corrupt)", path, a->name);
  return ADAMPI_OK;
}

adampi_status adampi__ckpt_read_arrays(adampi *opt, hid_t f, const char *path, const adampi_array *a, int n, float *staged)
{
  /* On through every array after a failure: a read error may be this rank's alone, and the
   * other ranks' metadata calls that follow are collective. */
  adampi_status st = ADAMPI_OK;
  for (int i = 0; i < n; i++) {
    adampi_status s = read_one(opt, f, path, &a[i], staged);
    if (st == ADAMPI_OK) st = s;
    staged += a[i].len;
  }
  return st;
}

void adampi__ckpt_arrays_commit(const adampi_array *a, int n, const float *staged)
{
  for (int i = 0; i < n; i++) {
    memcpy(a[i].data, staged, (size_t)a[i].len * sizeof(float));
    staged += a[i].len;
  }
}
