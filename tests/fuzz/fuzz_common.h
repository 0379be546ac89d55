/*
 * fuzz_common.h - what the libFuzzer harnesses share.
 *
 * Two ways to turn fuzz input into a file for a loader:
 *  - raw: the input bytes are the file (HDF5's own parser meets them first; metadata written by
 *    adampi carries HDF5 checksums, so most mutations stop there, as they should);
 *  - edit: the input is a small program of edits applied, through the HDF5 library, to a copy of a
 *    valid file (overwrite, retype, delete, add or rename attributes, datasets and groups; change a
 *    dataset's shape or type; overwrite elements with arbitrary bits). The result is always a
 *    well-formed HDF5 file, so every input reaches adampi's own validation.
 *
 * The harnesses run as one MPI process (a singleton MPI_Init, no mpirun).
 */
#ifndef ADAMPI_FUZZ_COMMON_H
#define ADAMPI_FUZZ_COMMON_H

#include "adampi.h"

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Fail the harness loudly: libFuzzer records the input that got here. */
#define FUZZ_ASSERT(cond, ...)                                                                       \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "fuzz invariant broken at %s:%d: ", __FILE__, __LINE__);                     \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fprintf(stderr, "\n");                                                                       \
      __builtin_trap();                                                                            \
    }                                                                                              \
  } while (0)

/* 1 if status is one of the library's error codes (not ADAMPI_OK, not an unknown value). */
static inline int fuzz_known_error(int status)
{
  switch (status) {
#define FUZZ_X_CASE(name, value, text) case value:
    ADAMPI_STATUS_TABLE(FUZZ_X_CASE)
#undef FUZZ_X_CASE
    return status != ADAMPI_OK;
  default:
    return 0;
  }
}

/* ---- reading the fuzz input -------------------------------------------------------------------- */

typedef struct fz {
  const uint8_t *p;
  size_t n;
} fz;

static inline uint8_t fz_u8(fz *in)
{
  if (in->n == 0) return 0;
  in->n--;
  return *in->p++;
}

static inline void fz_bytes(fz *in, void *out, size_t len)
{
  size_t k = len < in->n ? len : in->n;
  memcpy(out, in->p, k);
  memset((char *)out + k, 0, len - k);
  in->p += k, in->n -= k;
}

static inline uint64_t fz_u64(fz *in)
{
  uint64_t v;
  fz_bytes(in, &v, sizeof v);
  return v;
}

/* An integer that is often one a validator should think about. */
static inline int64_t fz_i64(fz *in)
{
  static const int64_t special[] = {0, 1, -1, 2, 3, 7, 100, INT32_MAX, (int64_t)INT32_MAX + 1, INT64_MAX,
                                    INT64_MIN, (int64_t)1 << 40, -((int64_t)1 << 40), 1000000007};
  uint8_t how = fz_u8(in);
  if (how < 128) return special[how % (sizeof special / sizeof special[0])];
  return (int64_t)fz_u64(in);
}

static inline double fz_f64(fz *in)
{
  static const double special[] = {0.0, -0.0, 1.0, -1.0, 0.5, 1e-8, 1e300, -1e300, 1e-320, 2.0};
  uint8_t how = fz_u8(in);
  if (how < 100) return special[how % (sizeof special / sizeof special[0])];
  if (how < 110) return how & 1 ? __builtin_inf() : -__builtin_inf();
  if (how < 120) return __builtin_nan("");
  uint64_t bits = fz_u64(in);
  double d;
  memcpy(&d, &bits, sizeof d);
  return d;
}

/* ---- files -------------------------------------------------------------------------------------- */

static inline int fuzz_write_file(const char *path, const void *data, size_t size)
{
  FILE *f = fopen(path, "wb");
  if (f == NULL) return -1;
  int rc = fwrite(data, 1, size, f) == size ? 0 : -1;
  if (fclose(f) != 0) rc = -1;
  return rc;
}

static inline int fuzz_copy_file(const char *from, const char *to)
{
  FILE *f = fopen(from, "rb");
  if (f == NULL) return -1;
  char *buf = NULL;
  size_t len = 0, cap = 0, k;
  char chunk[65536];
  while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (len + k > cap) {
      cap = 2 * (len + k);
      char *nb = realloc(buf, cap);
      if (nb == NULL) break;
      buf = nb;
    }
    memcpy(buf + len, chunk, k);
    len += k;
  }
  fclose(f);
  int rc = buf ? fuzz_write_file(to, buf, len) : -1;
  free(buf);
  return rc;
}

/* A scratch path in memory-backed storage when there is one, unique to this process. */
static inline void fuzz_scratch_path(char *out, size_t len, const char *tag)
{
  const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(out, len, "%s/adampi-fuzz-%s-%ld.h5", dir, tag, (long)getpid());
}

/* ---- edit programs ------------------------------------------------------------------------------ */

#define FUZZ_MAX_OBJ 256
#define FUZZ_MAX_ATTR 512
#define FUZZ_NAME 96

typedef struct fuzz_catalog {
  int nobj, nattr;
  char obj[FUZZ_MAX_OBJ][FUZZ_NAME]; /* paths of groups and datasets ("." is the root) */
  H5O_type_t type[FUZZ_MAX_OBJ];
  int attr_obj[FUZZ_MAX_ATTR];       /* index into obj */
  char attr[FUZZ_MAX_ATTR][FUZZ_NAME];
} fuzz_catalog;

static herr_t fuzz_visit_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
  (void)loc, (void)info;
  fuzz_catalog *c = data;
  if (c->nattr < FUZZ_MAX_ATTR && strlen(name) < FUZZ_NAME) {
    c->attr_obj[c->nattr] = c->nobj - 1;
    snprintf(c->attr[c->nattr++], FUZZ_NAME, "%s", name);
  }
  return 0;
}

static herr_t fuzz_visit_obj(hid_t root, const char *name, const H5O_info_t *info, void *data)
{
  fuzz_catalog *c = data;
  if (c->nobj >= FUZZ_MAX_OBJ || strlen(name) >= FUZZ_NAME) return 0;
  snprintf(c->obj[c->nobj], FUZZ_NAME, "%s", name);
  c->type[c->nobj++] = info->type;
  hid_t o = H5Oopen(root, name, H5P_DEFAULT);
  if (o >= 0) {
    H5Aiterate2(o, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, fuzz_visit_attr, c);
    H5Oclose(o);
  }
  return 0;
}

static inline void fuzz_catalog_make(hid_t f, fuzz_catalog *c)
{
  c->nobj = c->nattr = 0;
  H5Ovisit2(f, H5_INDEX_NAME, H5_ITER_NATIVE, fuzz_visit_obj, c, H5O_INFO_BASIC);
}

/* A name for something new: one that exists already (so a clash is tried) or a short fuzzed one. */
static inline void fuzz_name(fz *in, const fuzz_catalog *c, char *out, size_t len)
{
  uint8_t how = fz_u8(in);
  if (how < 128 && c->nattr > 0) {
    snprintf(out, len, "%s", c->attr[fz_u8(in) % c->nattr]);
    return;
  }
  size_t n = 1 + fz_u8(in) % 12, k;
  for (k = 0; k < n && k + 1 < len; k++) {
    char ch = (char)fz_u8(in);
    out[k] = ch == '/' || ch == '.' || ch == 0 ? 'x' : ch;
  }
  out[k] = 0;
}

/* A new scalar or small 1-d attribute of some type holding fuzzed values. */
static inline void fuzz_make_attr(fz *in, hid_t obj, const char *name)
{
  uint8_t kind = fz_u8(in) % 6;
  hsize_t n = kind >= 4 ? 1 + fz_u8(in) % 5 : 1;
  hid_t space = kind >= 4 ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_SCALAR);
  if (space < 0) return;
  hid_t a = H5I_INVALID_HID;
  if (kind == 0 || kind == 4) {
    int64_t v[5];
    for (hsize_t k = 0; k < n; k++) v[k] = fz_i64(in);
    a = H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) H5Awrite(a, H5T_NATIVE_INT64, v);
  } else if (kind == 1 || kind == 5) {
    double v[5];
    for (hsize_t k = 0; k < n; k++) v[k] = fz_f64(in);
    a = H5Acreate2(obj, name, H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) H5Awrite(a, H5T_NATIVE_DOUBLE, v);
  } else if (kind == 2) {
    char text[64];
    size_t len = fz_u8(in) % sizeof text;
    fz_bytes(in, text, len);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, len ? len : 1);
    a = H5Acreate2(obj, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) H5Awrite(a, t, text);
    H5Tclose(t);
  } else {
    int32_t v = (int32_t)fz_i64(in);
    a = H5Acreate2(obj, name, H5T_STD_I32BE, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) H5Awrite(a, H5T_NATIVE_INT32, &v);
  }
  if (a >= 0) H5Aclose(a);
  H5Sclose(space);
}

/* Overwrite the stored bytes of an existing attribute (fixed-size types only). */
static inline void fuzz_overwrite_attr(fz *in, hid_t obj, const char *name)
{
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a < 0) return;
  hid_t t = H5Aget_type(a);
  if (t >= 0 && !H5Tis_variable_str(t) && H5Tget_class(t) != H5T_VLEN) {
    hsize_t size = H5Aget_storage_size(a);
    if (size > 0 && size <= 4096) {
      unsigned char buf[4096];
      fz_bytes(in, buf, (size_t)size);
      H5Awrite(a, t, buf);
    }
  } else if (t >= 0 && H5Tis_variable_str(t)) {
    char text[64];
    size_t len = fz_u8(in) % sizeof text;
    fz_bytes(in, text, len);
    text[len < sizeof text ? len : sizeof text - 1] = 0;
    const char *p = text;
    H5Awrite(a, t, &p);
  }
  if (t >= 0) H5Tclose(t);
  H5Aclose(a);
}

/* Replace a dataset by one of another shape and element type (chunked, so absurd extents cost
 * nothing), filled with fuzzed bytes when small. */
static inline void fuzz_reshape_dataset(fz *in, hid_t f, const char *path)
{
  H5Ldelete(f, path, H5P_DEFAULT);
  int ndim = fz_u8(in) % 5;
  hsize_t dims[4], chunk[4];
  static const hsize_t special[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 300, (hsize_t)1 << 33};
  hsize_t total = 1;
  for (int k = 0; k < ndim; k++) {
    dims[k] = special[fz_u8(in) % (sizeof special / sizeof special[0])];
    chunk[k] = dims[k] == 0 ? 1 : dims[k] < 64 ? dims[k] : 64;
    total = total > ((hsize_t)1 << 50) / (dims[k] + 1) ? ((hsize_t)1 << 50) : total * dims[k];
  }
  uint8_t pick = fz_u8(in) % 4;
  hid_t type = pick == 0 ? H5T_IEEE_F32LE : pick == 1 ? H5T_IEEE_F64LE : pick == 2 ? H5T_STD_I32LE : H5T_IEEE_F32BE;
  hid_t space = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  if (ndim) H5Pset_chunk(dcpl, ndim, chunk);
  hid_t d = H5Dcreate2(f, path, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (d >= 0 && total <= 4096) {
    size_t bytes = (size_t)total * H5Tget_size(type);
    unsigned char *buf = malloc(bytes ? bytes : 1);
    if (buf) {
      fz_bytes(in, buf, bytes);
      H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
      free(buf);
    }
  }
  if (d >= 0) H5Dclose(d);
  H5Pclose(dcpl);
  if (space >= 0) H5Sclose(space);
}

/* Overwrite a run of elements of a dataset with fuzzed bits (NaN, Inf, anything). */
static inline void fuzz_poke_dataset(fz *in, hid_t f, const char *path)
{
  hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
  if (d < 0) return;
  hid_t t = H5Dget_type(d), s = H5Dget_space(d);
  hssize_t n = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
  size_t esize = t >= 0 ? H5Tget_size(t) : 0;
  if (n > 0 && n <= (1 << 20) && esize > 0 && esize <= 16) {
    unsigned char *buf = malloc((size_t)n * esize);
    if (buf && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0) {
      size_t at = (size_t)(fz_u64(in) % (uint64_t)n), count = 1 + fz_u8(in) % 8;
      for (size_t k = 0; k < count && at + k < (size_t)n; k++) fz_bytes(in, buf + (at + k) * esize, esize);
      H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    }
    free(buf);
  }
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  H5Dclose(d);
}

/* Apply the edit program in the input to the HDF5 file at path (opened serially). */
static inline void fuzz_edit_file(const char *path, fz *in)
{
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) return;
  static fuzz_catalog cat;
  int nops = 1 + fz_u8(in) % 6;
  for (int op = 0; op < nops && in->n > 0; op++) {
    fuzz_catalog_make(f, &cat);
    if (cat.nobj == 0) break;
    uint8_t what = fz_u8(in) % 8;
    int o = fz_u8(in) % cat.nobj;
    int a = cat.nattr ? fz_u8(in) % cat.nattr : -1;
    char name[FUZZ_NAME];
    switch (what) {
    case 0: /* overwrite an attribute's bytes */
    case 1: /* replace an attribute by one of another type or shape */
    case 2: /* delete an attribute */
      if (a >= 0) {
        hid_t obj = H5Oopen(f, cat.obj[cat.attr_obj[a]], H5P_DEFAULT);
        if (obj < 0) break;
        if (what == 0) fuzz_overwrite_attr(in, obj, cat.attr[a]);
        else {
          H5Adelete(obj, cat.attr[a]);
          if (what == 1) fuzz_make_attr(in, obj, cat.attr[a]);
        }
        H5Oclose(obj);
      }
      break;
    case 3: /* add an attribute anywhere */
    {
      hid_t obj = H5Oopen(f, cat.obj[o], H5P_DEFAULT);
      if (obj < 0) break;
      fuzz_name(in, &cat, name, sizeof name);
      fuzz_make_attr(in, obj, name);
      H5Oclose(obj);
      break;
    }
    case 4: /* delete a group or dataset */
      if (strcmp(cat.obj[o], ".") != 0) H5Ldelete(f, cat.obj[o], H5P_DEFAULT);
      break;
    case 5: /* reshape / retype a dataset */
      if (cat.type[o] == H5O_TYPE_DATASET) fuzz_reshape_dataset(in, f, cat.obj[o]);
      break;
    case 6: /* overwrite elements of a dataset */
      if (cat.type[o] == H5O_TYPE_DATASET) fuzz_poke_dataset(in, f, cat.obj[o]);
      break;
    case 7: /* add a group or rename an object within its group */
    {
      fuzz_name(in, &cat, name, sizeof name);
      char target[2 * FUZZ_NAME + 2];
      const char *slash = strrchr(cat.obj[o], '/');
      if (cat.type[o] == H5O_TYPE_GROUP && (fz_u8(in) & 1)) {
        snprintf(target, sizeof target, "%s/%s", cat.obj[o], name);
        hid_t g = H5Gcreate2(f, target, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g >= 0) H5Gclose(g);
      } else if (strcmp(cat.obj[o], ".") != 0) {
        snprintf(target, sizeof target, "%.*s%s%s", slash ? (int)(slash - cat.obj[o]) : 0, cat.obj[o],
                 slash ? "/" : "", name);
        H5Lmove(f, cat.obj[o], f, target, H5P_DEFAULT, H5P_DEFAULT);
      }
      break;
    }
    }
  }
  H5Fclose(f);
}

/* Make the file this input stands for at scratch: the input's bytes themselves (raw harnesses,
 * base == NULL), or the file base edited by the input's program (edit harnesses). 0 on success,
 * -1 if scratch cannot be written; a missing base ends the run (the harness is mis-built). */
static inline int fuzz_make_file(fz *in, const char *base, const char *scratch)
{
  if (base == NULL) return fuzz_write_file(scratch, in->p, in->n);
  if (fuzz_copy_file(base, scratch) != 0) {
    fprintf(stderr, "fuzz: cannot read the base file %s\n", base);
    exit(1);
  }
  fuzz_edit_file(scratch, in);
  return 0;
}

/* One singleton MPI process for the whole fuzzing run; HDF5 quiet (refusals are expected). */
static inline void fuzz_mpi_init(void)
{
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) MPI_Init(NULL, NULL);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

#endif
