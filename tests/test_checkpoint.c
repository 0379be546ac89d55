/*
 * test_checkpoint.c - adampi_save / adampi_load: every field round-trips; a checkpoint saved on
 * a ranks and resumed on b ranks continues bitwise like a run that never stopped (AdamP and SGDP,
 * with and without nesterov); corrupted, truncated, empty, wrong-kind, newer-format, non-HDF5,
 * missing and mismatched files are refused with a message naming the problem and change nothing;
 * rotation keeps the last K; a save into a missing directory fails everywhere; full parameters
 * (ADAMPI_PARAMS_FULL) round-trip into the caller's buffer and into the shared step buffers;
 * caller arrays (adampi_array) round-trip bit for bit, and a corrupt, missing, mis-sized or
 * unchecksummed one is refused by name with the caller's arrays untouched.
 * Mixed precision: a 16-bit model's checkpoint holds its fp32 master and records the type; it
 * resumes bitwise on another rank count (shard and full forms); a checkpoint of any type loads
 * into a handle of any type (master and rounded parameters as expected), files without the dtype
 * attribute included; an unknown dtype is refused with nothing changed.
 */
#define _POSIX_C_SOURCE 200809L /* pread, pwrite, truncate */
#include "problem.h"

#include "../src/h5superblock.h"

#include <hdf5.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define T_TOTAL 10
#define T_STOP 4

/* A path shared by all ranks of this run. */
static void shared_path(char *buf, size_t len, const char *what)
{
  int pid = (int)getpid();
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  snprintf(buf, len, "%s/adampi_ck_%d_%s.h5", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", pid, what);
}

static void remove_all(const char *path)
{
  MPI_Barrier(MPI_COMM_WORLD);
  if (test_rank() == 0) {
    char p[600];
    unlink(path);
    for (int k = 1; k <= 3; k++) snprintf(p, sizeof p, "%s.%d", path, k), unlink(p);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

typedef struct live {
  adampi *opt;
  float *w;
} live;

static live start(MPI_Comm comm, const problem_variant *v, int steps, adampi_nonfinite_policy policy)
{
  live l;
  char err[512];
  l.opt = problem_create(comm, v, policy, err, sizeof err);
  ck_assert_msg(l.opt != NULL, "%s", err);
  int64_t lo, hi;
  adampi_shard(l.opt, adampi_rank(l.opt), &lo, &hi);
  l.w = calloc((size_t)(hi - lo) + 1, sizeof *l.w);
  problem_init(l.opt, l.w);
  ck_assert_ok(l.opt, problem_steps(l.opt, comm, v, l.w, 0, steps, NULL, NULL));
  return l;
}

static void stop(live *l)
{
  free(l->w);
  adampi_free(&l->opt);
}

START_TEST(every_field_round_trips)
{
  const problem_variant *v = &problem_variants[_i ? 2 : 0];
  char path[512];
  shared_path(path, sizeof path, "roundtrip");
  live a = start(MPI_COMM_WORLD, v, 5, ADAMPI_NONFINITE_SKIP);
  /* one skipped step, and a learning rate that differs from the defaults */
  int64_t lo, hi;
  adampi_shard(a.opt, adampi_rank(a.opt), &lo, &hi);
  float *nan_grads = malloc((size_t)(hi - lo + 1) * sizeof(float));
  for (int64_t k = 0; k <= hi - lo; k++) nan_grads[k] = k == 0 ? NAN : 0.0f;
  ck_assert_ok(a.opt, adampi_step_sharded(a.opt, a.w, nan_grads, NULL));
  ck_assert_int_eq(adampi_steps_skipped(a.opt), test_size() > 0 && adampi_numel(a.opt) ? 1 : 0);
  ck_assert_ok(a.opt, adampi_set_lr(a.opt, 1, 0.123));
  adampi_user user = {0};
  adampi_user_set(&user, "epoch", 3);
  adampi_user_set(&user, "seed", -42);
  adampi_user_set(&user, "position", (int64_t)1 << 40);
  adampi_save_options so = adampi_save_defaults();
  so.user = &user;
  ck_assert_ok(a.opt, adampi_save(a.opt, path, a.w, &so));

  live b = start(MPI_COMM_WORLD, v, 0, ADAMPI_NONFINITE_SKIP);
  adampi_user back = {0};
  adampi_load_options lo_opts = adampi_load_defaults();
  lo_opts.user = &back;
  ck_assert_ok(b.opt, adampi_load(b.opt, path, b.w, &lo_opts));
  problem_result ra, rb;
  char diff[400];
  problem_collect(a.opt, MPI_COMM_WORLD, v->kind, a.w, &ra);
  problem_collect(b.opt, MPI_COMM_WORLD, v->kind, b.w, &rb);
  problem_compare(&ra, &rb, diff, sizeof diff);
  ck_assert_msg(!diff[0], "after load: %s", diff);
  ck_assert_int_eq(rb.skipped, 1);
  for (int g = 0; g < 2; g++) {
    adampi_hparams x, y;
    adampi_get_hparams(a.opt, g, &x);
    adampi_get_hparams(b.opt, g, &y);
    ck_assert_msg(x.lr == y.lr && x.beta1 == y.beta1 && x.momentum == y.momentum && x.weight_decay == y.weight_decay &&
                      x.nesterov == y.nesterov && x.eps == y.eps && x.delta == y.delta && x.wd_ratio == y.wd_ratio &&
                      x.beta2 == y.beta2 && x.dampening == y.dampening,
                  "hyper-parameters of group %d differ after load", g);
  }
  int64_t val = 0;
  ck_assert_int_eq(back.count, 3);
  ck_assert_msg(adampi_user_get(&back, "epoch", &val) == ADAMPI_OK && val == 3, "epoch %lld", (long long)val);
  ck_assert_msg(adampi_user_get(&back, "seed", &val) == ADAMPI_OK && val == -42, "seed %lld", (long long)val);
  ck_assert_msg(adampi_user_get(&back, "position", &val) == ADAMPI_OK && val == (int64_t)1 << 40, "position");

  /* keep_hparams: the caller's hyper-parameters stay */
  live c = start(MPI_COMM_WORLD, v, 0, ADAMPI_NONFINITE_SKIP);
  lo_opts = adampi_load_defaults();
  lo_opts.keep_hparams = 1;
  ck_assert_ok(c.opt, adampi_load(c.opt, path, c.w, &lo_opts));
  adampi_hparams hc;
  adampi_get_hparams(c.opt, 1, &hc);
  ck_assert_msg(hc.lr == problem_hparams(v, 1).lr, "keep_hparams: lr became %g", hc.lr);

  problem_release(&ra);
  problem_release(&rb);
  free(nan_grads);
  stop(&a), stop(&b), stop(&c);
  remove_all(path);
}
END_TEST

/* ADAMPI_PARAMS_FULL, as data-parallel users save and load: the full parameters come back on every
 * rank, into the caller's buffer (_i = 0) or into the shared step buffers (_i = 1), with the state;
 * a refused load leaves the full buffer as it was. */
START_TEST(full_parameters_round_trip)
{
  const problem_variant *v = &problem_variants[0];
  char path[512];
  shared_path(path, sizeof path, "full");
  live a = start(MPI_COMM_WORLD, v, 3, ADAMPI_NONFINITE_ERROR);
  int64_t N = adampi_numel(a.opt), lo, hi;
  adampi_shard(a.opt, adampi_rank(a.opt), &lo, &hi);
  float *full = malloc((size_t)N * sizeof(float));
  gather_full(a.opt, MPI_COMM_WORLD, a.w, full);
  adampi_save_options so = adampi_save_defaults();
  so.params = ADAMPI_PARAMS_FULL;
  ck_assert_ok(a.opt, adampi_save(a.opt, path, full, &so));

  char err[512];
  adampi *b = problem_create(MPI_COMM_WORLD, v, ADAMPI_NONFINITE_ERROR, err, sizeof err);
  ck_assert_msg(b != NULL, "%s", err);
  float *p = NULL, *g = NULL;
  if (_i) ck_assert_ok(b, adampi_alloc_step_buffers(b, &p, &g));
  else p = malloc((size_t)N * sizeof(float));
  for (int64_t k = 0; k < N; k++) p[k] = -1.0f;
  adampi_load_options lo_opts = adampi_load_defaults();
  lo_opts.params = ADAMPI_PARAMS_FULL;
  ck_assert_ok(b, adampi_load(b, path, p, &lo_opts));
  int bad = memcmp(p, full, (size_t)N * sizeof(float)) != 0, any = 0;
  MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  ck_assert_msg(!any, "[rank %d] full parameters after load differ (this rank: %d)", test_rank(), bad);
  problem_result ra, rb;
  char diff[400];
  problem_collect(a.opt, MPI_COMM_WORLD, v->kind, a.w, &ra);
  problem_collect(b, MPI_COMM_WORLD, v->kind, p + lo, &rb);
  problem_compare(&ra, &rb, diff, sizeof diff);
  ck_assert_msg(!diff[0], "after a full load: %s", diff);
  /* A refused load (no such file) changes nothing in the full buffer. */
  char missing[600];
  snprintf(missing, sizeof missing, "%s.missing", path);
  ck_assert_int_ne(adampi_load(b, missing, p, &lo_opts), ADAMPI_OK);
  bad = memcmp(p, full, (size_t)N * sizeof(float)) != 0;
  MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  ck_assert_msg(!any, "[rank %d] a refused full load changed the parameters", test_rank());
  problem_release(&ra);
  problem_release(&rb);
  if (!_i) free(p);
  free(full);
  adampi_free(&b);
  stop(&a);
  remove_all(path);
}
END_TEST

/* Saved on a ranks after T_STOP steps, resumed on b ranks: bitwise the uninterrupted run. */
START_TEST(resume_on_another_rank_count_is_bitwise_identical)
{
  const problem_variant *v = &problem_variants[_i];
  static const int pairs[][2] = {{1, 3}, {4, 2}, {3, 8}, {8, 1}, {2, 5}, {5, 7}, {7, 4}, {2, 2}, {1, 1}};
  int P = test_size(), me = test_rank(), tried = 0;
  char path[512], bad[600] = "";
  shared_path(path, sizeof path, "resume");
  live u = start(MPI_COMM_WORLD, v, T_TOTAL, ADAMPI_NONFINITE_ERROR);
  problem_result ru;
  problem_collect(u.opt, MPI_COMM_WORLD, v->kind, u.w, &ru);
  for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
    int a = pairs[p][0], b = pairs[p][1];
    if (a > P || b > P) continue;
    MPI_Comm ca, cb;
    MPI_Comm_split(MPI_COMM_WORLD, me < a ? 0 : MPI_UNDEFINED, me, &ca);
    if (ca != MPI_COMM_NULL) {
      live s = start(ca, v, T_STOP, ADAMPI_NONFINITE_ERROR);
      adampi_status st = adampi_save(s.opt, path, s.w, NULL);
      if (st != ADAMPI_OK && !bad[0]) snprintf(bad, sizeof bad, "save on %d ranks: %s", a, adampi_last_error(s.opt));
      stop(&s);
      MPI_Comm_free(&ca);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Comm_split(MPI_COMM_WORLD, me < b ? 0 : MPI_UNDEFINED, me, &cb);
    if (cb != MPI_COMM_NULL) {
      live r = start(cb, v, 0, ADAMPI_NONFINITE_ERROR);
      adampi_status st = adampi_load(r.opt, path, r.w, NULL);
      if (st != ADAMPI_OK && !bad[0]) snprintf(bad, sizeof bad, "load on %d ranks: %s", b, adampi_last_error(r.opt));
      if (st == ADAMPI_OK) st = problem_steps(r.opt, cb, v, r.w, T_STOP, T_TOTAL, NULL, NULL);
      problem_result rr;
      problem_collect(r.opt, cb, v->kind, r.w, &rr);
      char diff[400];
      problem_compare(&ru, &rr, diff, sizeof diff);
      if (diff[0] && !bad[0]) snprintf(bad, sizeof bad, "variant %d, saved on %d ranks, resumed on %d: %s", _i, a, b, diff);
      problem_release(&rr);
      stop(&r);
      MPI_Comm_free(&cb);
    }
    tried++;
    MPI_Barrier(MPI_COMM_WORLD);
  }
  ck_assert_msg(!bad[0], "%s", bad);
  if (me == 0 && _i == 0) printf("resume: %d (save ranks -> load ranks) pairs bitwise equal to the uninterrupted run\n", tried);
  problem_release(&ru);
  stop(&u);
  remove_all(path);
}
END_TEST

/* Every metadata block of a checkpoint is one HDF5 checksums: links and attributes stay in the
 * object headers (compact storage) even past HDF5's default of 8, never in a fractal heap. */
static int dense_storage(hid_t f, const char *name)
{
  H5G_info_t gi;
  H5O_info_t oi;
  if (H5Gget_info_by_name(f, name, &gi, H5P_DEFAULT) < 0 || H5Oget_info_by_name2(f, name, &oi, H5O_INFO_META_SIZE, H5P_DEFAULT) < 0)
    return -1;
  return gi.storage_type != H5G_STORAGE_TYPE_COMPACT || oi.meta_size.attr.heap_size != 0;
}

START_TEST(metadata_is_all_checksummed)
{
  char path[512];
  shared_path(path, sizeof path, "meta");
  live l = start(MPI_COMM_WORLD, &problem_variants[0], 2, ADAMPI_NONFINITE_ERROR);
  ck_assert_ok(l.opt, adampi_save(l.opt, path, l.w, NULL));
  stop(&l);
  if (test_rank() == 0) {
    ck_assert_int_eq(adampi_h5_superblock_version(path) >= 2, 1);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    ck_assert_msg(PROBLEM_NT > 8, "the problem must have more tensors than HDF5's compact default");
    ck_assert_msg(dense_storage(f, "/") == 0, "root group: dense storage");
    ck_assert_msg(dense_storage(f, "/tensors") == 0, "/tensors: dense storage");
    ck_assert_msg(dense_storage(f, "/groups/0") == 0, "/groups/0: dense storage");
    H5Fclose(f);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  remove_all(path);
}
END_TEST

/* ---- bad files ---------------------------------------------------------------------------- */

enum {
  FLIP_DATA, FLIP_SCALAR, TRUNCATED, EMPTY, WRONG_KIND, NEWER, NOT_HDF5, MISSING, SHAPE, NO_TENSOR,
  OLD_FORMAT, NEGATIVE_STEPS, HUGE_COUNT, ABSURD_DIMS, ARRAY_ATTR, NEGATIVE_TENSOR_STEP, BAD_HPARAM, FLOAT64_DATA,
  HUGE_TENSOR_STEP, USER_UINT64_MAX, USER_STRING, HPARAM_STRING, NESTEROV_FLOAT, DTYPE_UNKNOWN, DTYPE_INTEGER,
  NUM_BAD
};

static const struct {
  adampi_status status;
  const char *text;
} bad_expect[NUM_BAD] = {
  [FLIP_DATA] = {ADAMPI_ERR_FORMAT, "tensor 'long_rows', dataset 'param': checksum mismatch"},
  [FLIP_SCALAR] = {ADAMPI_ERR_FORMAT, "tensor 'scalar', dataset 'param': checksum mismatch"},
  [TRUNCATED] = {ADAMPI_ERR_FORMAT, "truncated"},
  [EMPTY] = {ADAMPI_ERR_FORMAT, "is not an HDF5 file"},
  [WRONG_KIND] = {ADAMPI_ERR_MISMATCH, "holds 'sgdp' state but this optimizer is 'adamp'"},
  [NEWER] = {ADAMPI_ERR_FORMAT, "written by a newer adampi (format version 2"},
  [NOT_HDF5] = {ADAMPI_ERR_FORMAT, "is not an HDF5 file"},
  [MISSING] = {ADAMPI_ERR_IO, "cannot read"},
  [SHAPE] = {ADAMPI_ERR_MISMATCH, "tensor 'tiny': checkpoint shape [4], registered shape [2, 2]"},
  [NO_TENSOR] = {ADAMPI_ERR_MISMATCH, "tensor 'bias' is not in the checkpoint"},
  [OLD_FORMAT] = {ADAMPI_ERR_FORMAT, "is not an adampi checkpoint (HDF5 superblock version 0, without metadata checksums)"},
  [NEGATIVE_STEPS] = {ADAMPI_ERR_FORMAT, "root attributes steps_taken/steps_skipped are missing or invalid"},
  [HUGE_COUNT] = {ADAMPI_ERR_MISMATCH, "holds 4611686018427387904 tensors but 9 are registered"},
  [ABSURD_DIMS] = {ADAMPI_ERR_MISMATCH, "tensor 'tiny': checkpoint shape [1099511627776, 2], registered shape [2, 2]"},
  [ARRAY_ATTR] = {ADAMPI_ERR_FORMAT, "has no valid format_version"},
  [NEGATIVE_TENSOR_STEP] = {ADAMPI_ERR_FORMAT, "tensor 'bias'"},
  [BAD_HPARAM] = {ADAMPI_ERR_FORMAT, "/groups/0: beta1 = 1.5"},
  [FLOAT64_DATA] = {ADAMPI_ERR_FORMAT, "tensor 'bias': dataset 'param' is not float32"},
  [HUGE_TENSOR_STEP] = {ADAMPI_ERR_FORMAT, "tensor 'bias' lacks valid group/step attributes (step must be 0..2^53)"},
  [USER_UINT64_MAX] = {ADAMPI_ERR_FORMAT, "/user holds values that are not named integers (/user: attribute 'edited' (a "
                                          "64-bit unsigned integer) holds 18446744073709551615, which does not fit"},
  [USER_STRING] = {ADAMPI_ERR_FORMAT, "(/user: attribute 'edited' must be an integer; it is a variable-length UTF-8 string)"},
  [HPARAM_STRING] = {ADAMPI_ERR_FORMAT, "/groups/1: attribute 'lr' must be a float32 or float64 number; it is a variable-length"},
  [NESTEROV_FLOAT] = {ADAMPI_ERR_FORMAT, "/groups/0: attribute 'nesterov' must be a boolean (a numpy bool or an integer); it is a 64-bit float"},
  [DTYPE_UNKNOWN] = {ADAMPI_ERR_FORMAT, "root attribute dtype = 'float8' is not an element type this adampi knows"},
  [DTYPE_INTEGER] = {ADAMPI_ERR_FORMAT, "root: attribute 'dtype' must be a string; it is a 32-bit signed integer"},
};

/* A variable-length UTF-8 string, as h5py writes a Python str. */
static hid_t vlen_utf8(void)
{
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

/* Add attribute name (a scalar of ftype, written from v in mtype) to object obj of file path,
 * replacing one of that name if there is one. */
static int add_value(const char *path, const char *obj, const char *name, hid_t ftype, hid_t mtype, const void *v)
{
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  hid_t o = f >= 0 ? H5Oopen(f, obj, H5P_DEFAULT) : H5I_INVALID_HID;
  hid_t s = H5Screate(H5S_SCALAR);
  if (o >= 0 && H5Aexists(o, name) > 0) H5Adelete(o, name);
  hid_t a = o >= 0 ? H5Acreate2(o, name, ftype, s, H5P_DEFAULT, H5P_DEFAULT) : H5I_INVALID_HID;
  int ok = a >= 0 && H5Awrite(a, mtype, v) >= 0;
  if (a >= 0) H5Aclose(a);
  H5Sclose(s);
  if (o >= 0) H5Oclose(o);
  if (f >= 0) H5Fclose(f);
  return ok;
}

/* Replace attribute name of object obj in file path by an array of n values of type (n = 0:
 * a scalar). Delete and create: HDF5 1.10 cannot overwrite an attribute kept in dense storage. */
static int put_values(const char *path, const char *obj, const char *name, hid_t ftype, hid_t mtype, int n, const void *v)
{
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  hid_t o = f >= 0 ? H5Oopen(f, obj, H5P_DEFAULT) : H5I_INVALID_HID;
  hsize_t dims = (hsize_t)n;
  hid_t s = n ? H5Screate_simple(1, &dims, NULL) : H5Screate(H5S_SCALAR);
  int ok = o >= 0 && H5Adelete(o, name) >= 0;
  hid_t a = ok ? H5Acreate2(o, name, ftype, s, H5P_DEFAULT, H5P_DEFAULT) : H5I_INVALID_HID;
  ok = a >= 0 && H5Awrite(a, mtype, v) >= 0;
  if (a >= 0) H5Aclose(a);
  H5Sclose(s);
  if (o >= 0) H5Oclose(o);
  if (f >= 0) H5Fclose(f);
  return ok;
}

static int put_i64s(const char *path, const char *obj, const char *name, int n, const int64_t *v)
{
  return put_values(path, obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, n, v);
}

/* Replace dataset path:name by an empty chunked one of the given type and shape (no data written). */
static int replace_dataset(const char *path, const char *name, hid_t type, int ndim, const hsize_t *dims)
{
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  int ok = f >= 0 && H5Ldelete(f, name, H5P_DEFAULT) >= 0;
  hid_t s = H5Screate_simple(ndim, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
  hsize_t chunk[4] = {1, 1, 1, 1};
  H5Pset_chunk(dcpl, ndim, chunk);
  hid_t d = ok ? H5Dcreate2(f, name, type, s, H5P_DEFAULT, dcpl, H5P_DEFAULT) : H5I_INVALID_HID;
  ok = d >= 0;
  if (d >= 0) H5Dclose(d);
  H5Pclose(dcpl), H5Sclose(s);
  if (f >= 0) H5Fclose(f);
  return ok;
}

/* Damage a good checkpoint in place (rank 0 only, serial HDF5 and plain file I/O). Returns 0 on
 * success; it must not assert, since the other ranks wait at a barrier. */
static int damage(const char *path, int how)
{
  hid_t f, d;
  int ok = 1;
  switch (how) {
  case FLIP_DATA: {
    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    d = H5Dopen2(f, "tensors/long_rows/param", H5P_DEFAULT);
    haddr_t addr = H5Dget_offset(d); /* contiguous data: one byte a third of the way in */
    H5Dclose(d), H5Fclose(f);
    off_t at = (off_t)addr + (off_t)(64 * 300 * 4 / 3);
    int fd = open(path, O_RDWR);
    unsigned char byte = 0;
    ok = addr != HADDR_UNDEF && fd >= 0 && pread(fd, &byte, 1, at) == 1;
    byte ^= 0x10;
    ok = ok && pwrite(fd, &byte, 1, at) == 1;
    if (fd >= 0) close(fd);
    break;
  }
  case FLIP_SCALAR: {
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    d = H5Dopen2(f, "tensors/scalar/param", H5P_DEFAULT);
    float x;
    H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, &x);
    x = -x + 1.0f;
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, &x);
    H5Dclose(d), H5Fclose(f);
    break;
  }
  case TRUNCATED: {
    FILE *fp = fopen(path, "r+");
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fclose(fp);
    ok = truncate(path, size / 2) == 0;
    break;
  }
  case EMPTY:
    ok = truncate(path, 0) == 0;
    break;
  case NEWER: {
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    int64_t v = 2;
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a), H5Fclose(f);
    break;
  }
  case NOT_HDF5: {
    FILE *fp = fopen(path, "w");
    fputs("epoch 3, not a checkpoint\n", fp);
    fclose(fp);
    break;
  }
  case MISSING:
    unlink(path);
    break;
  case SHAPE: {
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "tensors/tiny/param", H5P_DEFAULT);
    hsize_t dims[1] = {4};
    hid_t s = H5Screate_simple(1, dims, NULL);
    d = H5Dcreate2(f, "tensors/tiny/param", H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(d), H5Sclose(s), H5Fclose(f);
    break;
  }
  case NO_TENSOR:
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ok = H5Lmove(f, "tensors/bias", f, "tensors/bias_renamed", H5P_DEFAULT, H5P_DEFAULT) >= 0;
    H5Fclose(f);
    break;
  case OLD_FORMAT: /* an HDF5 file in the oldest format (what h5py writes by default) */
    f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ok = f >= 0;
    if (f >= 0) H5Fclose(f);
    break;
  case NEGATIVE_STEPS: {
    int64_t v = -1;
    ok = put_i64s(path, ".", "steps_taken", 0, &v);
    break;
  }
  case HUGE_COUNT: {
    int64_t v = (int64_t)1 << 62;
    ok = put_i64s(path, ".", "num_tensors", 0, &v);
    break;
  }
  case ABSURD_DIMS: {
    hsize_t dims[2] = {(hsize_t)1 << 40, 2};
    ok = replace_dataset(path, "tensors/tiny/param", H5T_IEEE_F32LE, 2, dims);
    break;
  }
  case ARRAY_ATTR: { /* found by the fuzzer: an array where a scalar belongs overran the reader */
    int64_t v[4] = {1, 1, 1, 1};
    ok = put_i64s(path, ".", "format_version", 4, v);
    break;
  }
  case NEGATIVE_TENSOR_STEP:
  case HUGE_TENSOR_STEP: { /* found by the fuzzer: INT64_MAX overflowed at the next step */
    int64_t v = how == HUGE_TENSOR_STEP ? INT64_MAX : -1;
    ok = put_i64s(path, "tensors/bias", "step", 0, &v);
    break;
  }
  case BAD_HPARAM: {
    double v = 1.5;
    ok = put_values(path, "groups/0", "beta1", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, &v);
    break;
  }
  case USER_UINT64_MAX: {
    uint64_t v = UINT64_MAX;
    ok = add_value(path, "user", "edited", H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
    break;
  }
  case USER_STRING:
  case HPARAM_STRING: {
    const char *v = "3";
    hid_t t = vlen_utf8();
    ok = add_value(path, how == USER_STRING ? "user" : "groups/1", how == USER_STRING ? "edited" : "lr", t, t, &v);
    H5Tclose(t);
    break;
  }
  case NESTEROV_FLOAT: {
    double v = 0.0;
    ok = add_value(path, "groups/0", "nesterov", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
    break;
  }
  case DTYPE_UNKNOWN: {
    const char *v = "float8";
    hid_t t = vlen_utf8();
    ok = add_value(path, ".", "dtype", t, t, &v);
    H5Tclose(t);
    break;
  }
  case DTYPE_INTEGER: {
    int32_t v = 16;
    ok = add_value(path, ".", "dtype", H5T_STD_I32LE, H5T_NATIVE_INT32, &v);
    break;
  }
  case FLOAT64_DATA: {
    hsize_t dims[1] = {37};
    ok = replace_dataset(path, "tensors/bias/param", H5T_IEEE_F64LE, 1, dims);
    break;
  }
  }
  return ok ? 0 : -1;
}

START_TEST(bad_files_are_refused_and_change_nothing)
{
  const problem_variant *v = &problem_variants[0];
  char path[512];
  shared_path(path, sizeof path, "bad");
  /* The file: AdamP after 3 steps (SGDP for WRONG_KIND). */
  live src = start(MPI_COMM_WORLD, &problem_variants[_i == WRONG_KIND ? 2 : 0], 3, ADAMPI_NONFINITE_ERROR);
  ck_assert_ok(src.opt, adampi_save(src.opt, path, src.w, NULL));
  stop(&src);
  MPI_Barrier(MPI_COMM_WORLD);
  int damaged = test_rank() == 0 ? damage(path, _i) : 0;
  MPI_Bcast(&damaged, 1, MPI_INT, 0, MPI_COMM_WORLD);
  ck_assert_msg(damaged == 0, "case %d: the file could not be damaged as planned", _i);

  live l = start(MPI_COMM_WORLD, v, 5, ADAMPI_NONFINITE_ERROR);
  problem_result before, after;
  problem_collect(l.opt, MPI_COMM_WORLD, v->kind, l.w, &before);
  adampi_hparams hp_before[2], hp_after[2];
  for (int g = 0; g < 2; g++) ck_assert_ok(l.opt, adampi_get_hparams(l.opt, g, &hp_before[g]));
  adampi_user user = {0};
  adampi_user_set(&user, "untouched", 7);
  adampi_load_options o = adampi_load_defaults();
  o.user = &user;
  adampi_status st = adampi_load(l.opt, path, l.w, &o);
  const char *msg = adampi_last_error(l.opt);
  ck_assert_msg(st == bad_expect[_i].status, "[rank %d] case %d: status %s (%s)", test_rank(), _i, adampi_strerror(st), msg);
  ck_assert_msg(strstr(msg, bad_expect[_i].text) != NULL, "[rank %d] case %d: message '%s' lacks '%s'", test_rank(), _i, msg,
                bad_expect[_i].text);
  problem_collect(l.opt, MPI_COMM_WORLD, v->kind, l.w, &after);
  char diff[400];
  problem_compare(&before, &after, diff, sizeof diff);
  ck_assert_msg(!diff[0], "case %d: a failed load changed the optimizer: %s", _i, diff);
  ck_assert_msg(user.count == 1 && user.value[0] == 7, "case %d: a failed load changed the caller area", _i);
  for (int g = 0; g < 2; g++) {
    ck_assert_ok(l.opt, adampi_get_hparams(l.opt, g, &hp_after[g]));
    ck_assert_msg(test_hparams_same(&hp_before[g], &hp_after[g]),
                  "case %d: a failed load changed the hyper-parameters of group %d", _i, g);
  }
  /* The optimizer still works. */
  ck_assert_ok(l.opt, problem_steps(l.opt, MPI_COMM_WORLD, v, l.w, 5, 6, NULL, NULL));
  problem_release(&before);
  problem_release(&after);
  stop(&l);
  remove_all(path);
}
END_TEST

/* A checkpoint edited with h5py the natural way is read as written: the optimizer kind as a
 * variable-length UTF-8 string, steps_taken as int32, nesterov as a numpy bool, a caller value as
 * int16, a hyper-parameter as float32 (one that float32 holds exactly). */
START_TEST(h5py_edits_load_as_written)
{
  const problem_variant *v = &problem_variants[_i ? 3 : 1]; /* with nesterov: the bool is TRUE */
  char path[512];
  shared_path(path, sizeof path, "h5py_edit");
  live a = start(MPI_COMM_WORLD, v, 3, ADAMPI_NONFINITE_ERROR);
  ck_assert_ok(a.opt, adampi_set_lr(a.opt, 0, 0.125)); /* exact in float32 */
  adampi_user user = {0};
  adampi_user_set(&user, "epoch", 3);
  adampi_save_options so = adampi_save_defaults();
  so.user = &user;
  ck_assert_ok(a.opt, adampi_save(a.opt, path, a.w, &so));
  MPI_Barrier(MPI_COMM_WORLD);
  adampi_hparams hp0;
  ck_assert_ok(a.opt, adampi_get_hparams(a.opt, 0, &hp0));
  int ok = 1;
  if (test_rank() == 0) {
    const char *kind = v->kind == ADAMPI_ADAMP ? "adamp" : "sgdp";
    hid_t str = vlen_utf8(), boolean = H5Tenum_create(H5T_STD_I8LE);
    int8_t no = 0, yes = 1, nesterov = (int8_t)hp0.nesterov;
    H5Tenum_insert(boolean, "FALSE", &no), H5Tenum_insert(boolean, "TRUE", &yes);
    int32_t taken = (int32_t)adampi_steps_taken(a.opt);
    int16_t epoch = 3;
    float lr = 0.125f;
    ok = add_value(path, ".", "optimizer", str, str, &kind) && add_value(path, ".", "steps_taken", H5T_STD_I32LE, H5T_NATIVE_INT32, &taken) &&
         add_value(path, "groups/0", "nesterov", boolean, boolean, &nesterov) &&
         add_value(path, "groups/0", "lr", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &lr) &&
         add_value(path, "user", "epoch", H5T_STD_I16BE, H5T_NATIVE_INT16, &epoch);
    H5Tclose(str), H5Tclose(boolean);
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  ck_assert_msg(ok, "the checkpoint could not be edited");

  live b = start(MPI_COMM_WORLD, v, 0, ADAMPI_NONFINITE_ERROR);
  adampi_user back = {0};
  adampi_load_options lo = adampi_load_defaults();
  lo.user = &back;
  ck_assert_ok(b.opt, adampi_load(b.opt, path, b.w, &lo));
  problem_result ra, rb;
  char diff[400];
  problem_collect(a.opt, MPI_COMM_WORLD, v->kind, a.w, &ra);
  problem_collect(b.opt, MPI_COMM_WORLD, v->kind, b.w, &rb);
  problem_compare(&ra, &rb, diff, sizeof diff);
  ck_assert_msg(!diff[0], "after loading the edited file: %s", diff);
  for (int g = 0; g < 2; g++) {
    adampi_hparams x, y;
    adampi_get_hparams(a.opt, g, &x);
    adampi_get_hparams(b.opt, g, &y);
    ck_assert_msg(test_hparams_same(&x, &y), "hyper-parameters of group %d differ after loading the edited file", g);
  }
  int64_t epoch = 0;
  ck_assert_msg(adampi_user_get(&back, "epoch", &epoch) == ADAMPI_OK && epoch == 3, "epoch read as %lld", (long long)epoch);
  problem_release(&ra);
  problem_release(&rb);
  stop(&a);
  stop(&b);
  remove_all(path);
}
END_TEST

static herr_t count_errors(hid_t stack, void *calls)
{
  (void)stack;
  (*(int *)calls)++;
  return 0;
}

/* adampi silences HDF5's error reports for its own calls only: the application's handler is the
 * one it had after a save, a load, a load of a missing file and a load of a truncated file (whose
 * failed H5Fopen adampi reports itself), none of adampi's failed HDF5 calls reaches it, and the
 * application's own failed call still does. */
START_TEST(the_application_hdf5_error_handler_is_kept)
{
  H5E_auto2_t suite_fn, fn;
  void *suite_data, *data;
  H5Eget_auto2(H5E_DEFAULT, &suite_fn, &suite_data);
  int calls = 0;
  H5Eset_auto2(H5E_DEFAULT, count_errors, &calls);
  char path[512], missing[600], cut[600];
  shared_path(path, sizeof path, "handler");
  snprintf(missing, sizeof missing, "%s.missing", path);
  snprintf(cut, sizeof cut, "%s.cut", path);
  const problem_variant *v = &problem_variants[0];
  live a = start(MPI_COMM_WORLD, v, 2, ADAMPI_NONFINITE_ERROR);
  ck_assert_ok(a.opt, adampi_save(a.opt, path, a.w, NULL));
  H5Eget_auto2(H5E_DEFAULT, &fn, &data);
  ck_assert_msg(fn == count_errors && data == &calls, "adampi_save replaced the application's HDF5 error handler");
  ck_assert_ok(a.opt, adampi_load(a.opt, path, a.w, NULL));
  ck_assert_int_eq(adampi_load(a.opt, missing, a.w, NULL), ADAMPI_ERR_IO);
  H5Eget_auto2(H5E_DEFAULT, &fn, &data);
  ck_assert_msg(fn == count_errors && data == &calls, "adampi_load of a missing file replaced the application's HDF5 error handler");
  ck_assert_ok(a.opt, adampi_save(a.opt, cut, a.w, NULL));
  MPI_Barrier(MPI_COMM_WORLD);
  int ok = 1;
  if (test_rank() == 0) {
    struct stat sb;
    ok = stat(cut, &sb) == 0 && truncate(cut, sb.st_size / 2) == 0;
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  ck_assert_msg(ok, "the truncated copy could not be made");
  adampi_status st = adampi_load(a.opt, cut, a.w, NULL);
  ck_assert_msg(st == ADAMPI_ERR_FORMAT, "truncated file: %s (%s)", adampi_strerror(st), adampi_last_error(a.opt));
  H5Eget_auto2(H5E_DEFAULT, &fn, &data);
  ck_assert_msg(fn == count_errors && data == &calls, "adampi_load of a truncated file replaced the application's HDF5 error handler");
  ck_assert_msg(calls == 0, "adampi's own failed HDF5 calls reached the application's handler %d times", calls);
  hid_t f = H5Fopen(missing, H5F_ACC_RDONLY, H5P_DEFAULT); /* the application's own failure */
  ck_assert_msg(f < 0 && calls > 0, "the application's handler no longer sees its own failed calls");
  H5Eset_auto2(H5E_DEFAULT, suite_fn, suite_data);
  stop(&a);
  MPI_Barrier(MPI_COMM_WORLD);
  if (test_rank() == 0) unlink(cut);
  remove_all(path);
}
END_TEST

static int64_t generation_of(const char *path)
{
  live l = start(MPI_COMM_WORLD, &problem_variants[0], 0, ADAMPI_NONFINITE_ERROR);
  adampi_user user = {0};
  adampi_load_options o = adampi_load_defaults();
  o.user = &user;
  int64_t g = -1;
  if (adampi_load(l.opt, path, l.w, &o) == ADAMPI_OK) adampi_user_get(&user, "generation", &g);
  stop(&l);
  return g;
}

START_TEST(rotation_keeps_the_last_k)
{
  char path[512], p1[600], p2[600], p3[600];
  shared_path(path, sizeof path, "rotate");
  snprintf(p1, sizeof p1, "%s.1", path);
  snprintf(p2, sizeof p2, "%s.2", path);
  snprintf(p3, sizeof p3, "%s.3", path);
  live l = start(MPI_COMM_WORLD, &problem_variants[0], 1, ADAMPI_NONFINITE_ERROR);
  for (int gen = 1; gen <= 4; gen++) {
    adampi_user user = {0};
    adampi_user_set(&user, "generation", gen);
    adampi_save_options o = adampi_save_defaults();
    o.keep_last = 2;
    o.user = &user;
    ck_assert_ok(l.opt, adampi_save(l.opt, path, l.w, &o));
  }
  stop(&l);
  ck_assert_int_eq(generation_of(path), 4);
  ck_assert_int_eq(generation_of(p1), 3);
  ck_assert_int_eq(generation_of(p2), 2);
  ck_assert_msg(access(p3, F_OK) != 0, "a third old checkpoint was kept");
  remove_all(path);
}
END_TEST

START_TEST(save_into_a_missing_directory_fails_everywhere)
{
  live l = start(MPI_COMM_WORLD, &problem_variants[2], 1, ADAMPI_NONFINITE_ERROR);
  adampi_status st = adampi_save(l.opt, "/nonexistent-adampi-dir/sub/ck.h5", l.w, NULL);
  ck_assert_msg(st == ADAMPI_ERR_IO, "[rank %d] status %s", test_rank(), adampi_strerror(st));
  ck_assert_msg(strstr(adampi_last_error(l.opt), "cannot create"), "message: %s", adampi_last_error(l.opt));
  stop(&l);
}
END_TEST

/* ---- mixed precision ------------------------------------------------------------------------ */

/* The problem as a model of element type dtype: its handle (with clipping) and this rank's shard
 * of the parameters in that type. The steps scale the gradients by MIXED_SCALE before rounding
 * them to the type (a loss scale) and pass it as grad_scale; MIXED_CLIP clips some steps. */
#define MIXED_SCALE 8.0
#define MIXED_CLIP 10.0

typedef struct mixed {
  adampi *opt;
  adampi_dtype dtype;
  size_t elem;
  int64_t lo, hi;
  void *p; /* hi - lo elements of dtype (room for one more) */
} mixed;

static mixed mixed_create(MPI_Comm comm, const problem_variant *v, adampi_dtype dtype)
{
  mixed m = {NULL, dtype, adampi_dtype_size(dtype), 0, 0, NULL};
  adampi_config cfg = adampi_config_defaults(v->kind);
  cfg.dtype = dtype;
  cfg.max_grad_norm = MIXED_CLIP;
  char err[512] = "";
  ck_assert_msg(adampi_create(comm, &cfg, &m.opt, err, sizeof err) == ADAMPI_OK, "%s", err);
  int rc = 0;
  for (int g = 0; g < 2 && !rc; g++) {
    adampi_hparams hp = problem_hparams(v, g);
    rc = adampi_add_group(m.opt, &hp, NULL);
  }
  for (int i = 0; i < PROBLEM_NT && !rc; i++)
    rc = adampi_add_tensor(m.opt, problem_tensors[i].name, problem_tensors[i].ndim, problem_tensors[i].shape,
                           problem_tensors[i].group, NULL);
  ck_assert_ok(m.opt, rc ? (adampi_status)rc : adampi_commit(m.opt));
  adampi_shard(m.opt, adampi_rank(m.opt), &m.lo, &m.hi);
  m.p = calloc((size_t)(m.hi - m.lo) + 1, sizeof(float));
  return m;
}

/* The problem's initial values rounded to the type (a model initialised in fp32 and cast). */
static void mixed_init(mixed *m)
{
  float *w = calloc((size_t)(m->hi - m->lo) + 1, sizeof *w);
  problem_init(m->opt, w);
  adampi_round_to(m->dtype, w, m->p, m->hi - m->lo);
  free(w);
}

static void mixed_free(mixed *m)
{
  free(m->p);
  adampi_free(&m->opt);
}

/* Steps [from, to) as problem_steps, with adampi_step_sharded_ex on the typed shards: the
 * gradients come from the model's own (rounded) parameters, times MIXED_SCALE, rounded to the type. */
static adampi_status mixed_steps(mixed *m, MPI_Comm comm, const problem_variant *v, int from, int to)
{
  int64_t N = adampi_numel(m->opt), n = m->hi - m->lo;
  float *w = calloc((size_t)n + 1, sizeof *w), *full = malloc((size_t)N * sizeof *full), *grads = malloc((size_t)N * sizeof *grads);
  void *g = calloc((size_t)n + 1, sizeof(float));
  adampi_status st = ADAMPI_OK;
  for (int step = from; step < to && st == ADAMPI_OK; step++) {
    unsigned char has[PROBLEM_NT];
    problem_mask(step, has);
    for (int k = 0; k < 2 && st == ADAMPI_OK; k++)
      st = adampi_set_lr(m->opt, k, problem_hparams(v, k).lr * (1.0 + 0.05 * step));
    adampi_widen(m->dtype, m->p, w, n);
    gather_full(m->opt, comm, w, full);
    for (int i = 0; i < PROBLEM_NT; i++) {
      adampi_tensor_info t;
      adampi_tensor(m->opt, i, &t);
      problem_grad(&t, i, step, full + t.offset, grads + t.offset);
    }
    for (int64_t k = 0; k < n; k++) grads[m->lo + k] *= (float)MIXED_SCALE;
    adampi_round_to(m->dtype, grads + m->lo, g, n);
    adampi_step_options o = adampi_step_defaults();
    o.has_grad = has;
    o.grad_scale = MIXED_SCALE;
    if (st == ADAMPI_OK) st = adampi_step_sharded_ex(m->opt, m->p, g, &o);
  }
  free(w), free(full), free(grads), free(g);
  return st;
}

/* This rank's fp32 parameters: the master, or the parameters of a float32 model. */
static const float *mixed_master(const mixed *m)
{
  return m->dtype == ADAMPI_FLOAT32 ? (const float *)m->p : adampi_master_shard(m->opt);
}

/* problem_collect with the fp32 parameters (NULL master with a non-empty shard: a failure). */
static void mixed_collect(const mixed *m, MPI_Comm comm, adampi_kind kind, problem_result *r)
{
  const float *w = mixed_master(m);
  int missing = w == NULL && m->hi > m->lo, any = 0;
  MPI_Allreduce(&missing, &any, 1, MPI_INT, MPI_MAX, comm);
  ck_assert_msg(!any, "[rank %d] no master where one is expected", test_rank());
  problem_collect(m->opt, comm, kind, w, r);
}

/* 1 on every rank of comm if every rank's typed shard is its master rounded to the type. */
static int mixed_params_are_master(const mixed *m, MPI_Comm comm)
{
  int64_t n = m->hi - m->lo;
  void *x = calloc((size_t)n + 1, sizeof(float));
  const float *w = mixed_master(m);
  int bad = n > 0 && (w == NULL || adampi_round_to(m->dtype, w, x, n) != ADAMPI_OK ||
                      memcmp(x, m->p, (size_t)n * m->elem) != 0), any = 0;
  MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, comm);
  free(x);
  return !any;
}

/* A 16-bit model saved on a ranks after T_STOP steps and resumed on b ranks: master, state and
 * parameters bitwise those of the run that never stopped. _i: bfloat16 (0, 1) or float16 (2, 3);
 * AdamP (even) or SGDP with nesterov (odd); odd ones load the full parameters. */
START_TEST(mixed_resume_is_bitwise_identical)
{
  const problem_variant *v = &problem_variants[_i % 2 ? 3 : 0];
  adampi_dtype dtype = _i < 2 ? ADAMPI_BFLOAT16 : ADAMPI_FLOAT16;
  adampi_params_form form = _i % 2 ? ADAMPI_PARAMS_FULL : ADAMPI_PARAMS_SHARD;
  static const int pairs[][2] = {{1, 3}, {3, 2}, {8, 5}, {4, 1}, {2, 2}};
  int P = test_size(), me = test_rank(), tried = 0;
  char path[512], bad[600] = "";
  shared_path(path, sizeof path, "mixed_resume");
  mixed u = mixed_create(MPI_COMM_WORLD, v, dtype);
  mixed_init(&u);
  ck_assert_ok(u.opt, mixed_steps(&u, MPI_COMM_WORLD, v, 0, T_TOTAL));
  adampi_step_info info;
  ck_assert_ok(u.opt, adampi_last_step(u.opt, &info));
  problem_result ru;
  mixed_collect(&u, MPI_COMM_WORLD, v->kind, &ru);
  ck_assert_msg(mixed_params_are_master(&u, MPI_COMM_WORLD), "the uninterrupted run's parameters are not its master rounded");
  for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
    int a = pairs[k][0], b = pairs[k][1];
    if (a > P || b > P) continue;
    MPI_Comm ca, cb;
    MPI_Comm_split(MPI_COMM_WORLD, me < a ? 0 : MPI_UNDEFINED, me, &ca);
    if (ca != MPI_COMM_NULL) {
      mixed s = mixed_create(ca, v, dtype);
      mixed_init(&s);
      adampi_status st = mixed_steps(&s, ca, v, 0, T_STOP);
      if (st == ADAMPI_OK) st = adampi_save(s.opt, path, s.p, NULL);
      if (st != ADAMPI_OK && !bad[0]) snprintf(bad, sizeof bad, "save on %d ranks: %s", a, adampi_last_error(s.opt));
      mixed_free(&s);
      MPI_Comm_free(&ca);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Comm_split(MPI_COMM_WORLD, me < b ? 0 : MPI_UNDEFINED, me, &cb);
    if (cb != MPI_COMM_NULL) {
      mixed r = mixed_create(cb, v, dtype);
      adampi_load_options lo = adampi_load_defaults();
      lo.params = form;
      int64_t N = adampi_numel(r.opt), n = r.hi - r.lo;
      unsigned char *full = form == ADAMPI_PARAMS_FULL ? malloc((size_t)N * r.elem) : NULL;
      if (full) memset(full, 0xff, (size_t)N * r.elem);
      adampi_status st = adampi_load(r.opt, path, full ? (float *)(void *)full : r.p, &lo);
      if (st != ADAMPI_OK && !bad[0]) snprintf(bad, sizeof bad, "load on %d ranks: %s", b, adampi_last_error(r.opt));
      if (st == ADAMPI_OK && full) {
        /* every rank holds every rank's master rounded */
        problem_result rl;
        mixed_collect(&r, cb, v->kind, &rl);
        unsigned char *want = malloc((size_t)N * r.elem);
        adampi_round_to(dtype, rl.params, want, N);
        int differ = memcmp(want, full, (size_t)N * r.elem) != 0, any = 0;
        MPI_Allreduce(&differ, &any, 1, MPI_INT, MPI_MAX, cb);
        if (any && !bad[0]) snprintf(bad, sizeof bad, "full load on %d ranks: the full parameters are not the master rounded", b);
        memcpy(r.p, full + (size_t)r.lo * r.elem, (size_t)n * r.elem);
        free(want);
        problem_release(&rl);
      }
      if (st == ADAMPI_OK) st = mixed_steps(&r, cb, v, T_STOP, T_TOTAL);
      if (st != ADAMPI_OK && !bad[0]) snprintf(bad, sizeof bad, "steps after load on %d ranks: %s", b, adampi_last_error(r.opt));
      problem_result rr;
      mixed_collect(&r, cb, v->kind, &rr);
      char diff[400];
      problem_compare(&ru, &rr, diff, sizeof diff);
      if (diff[0] && !bad[0]) snprintf(bad, sizeof bad, "case %d, saved on %d ranks, resumed on %d: %s", _i, a, b, diff);
      if (!mixed_params_are_master(&r, cb) && !bad[0])
        snprintf(bad, sizeof bad, "case %d, %d -> %d: the parameters are not the master rounded", _i, a, b);
      problem_release(&rr);
      free(full);
      mixed_free(&r);
      MPI_Comm_free(&cb);
    }
    tried++;
    MPI_Barrier(MPI_COMM_WORLD);
  }
  ck_assert_msg(!bad[0], "%s", bad);
  if (me == 0)
    printf("mixed resume (%s, %s, %s form): %d pairs bitwise equal to the uninterrupted run (last step: grad norm %.4g, "
           "clip factor %.4g)\n",
           adampi_dtype_name(dtype), v->kind == ADAMPI_ADAMP ? "AdamP" : "SGDP nesterov", form ? "full" : "shard", tried,
           info.grad_norm, info.clip_coef);
  problem_release(&ru);
  mixed_free(&u);
  remove_all(path);
}
END_TEST

/* The root attribute dtype of path as rank 0 reads it ("" when absent), on every rank. */
static void file_dtype(const char *path, char *out, size_t len)
{
  char buf[32] = "";
  if (test_rank() == 0) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f >= 0 && H5Aexists(f, "dtype") > 0) {
      hid_t a = H5Aopen(f, "dtype", H5P_DEFAULT), t = H5Aget_type(a), m = H5Tcopy(H5T_C_S1);
      H5Tset_size(m, sizeof buf);
      if (H5Tget_class(t) != H5T_STRING || H5Tget_size(t) >= sizeof buf || H5Aread(a, m, buf) < 0) snprintf(buf, sizeof buf, "?");
      H5Tclose(m), H5Tclose(t), H5Aclose(a);
    }
    if (f >= 0) H5Fclose(f);
  }
  MPI_Bcast(buf, (int)sizeof buf, MPI_CHAR, 0, MPI_COMM_WORLD);
  snprintf(out, len, "%s", buf);
}

/* A checkpoint of any type into a handle of any type: the file's fp32 parameters become the
 * master (the parameters of a float32 handle), the parameters receive them rounded, the state
 * and counters come along. _i: saved from bfloat16, float16, float32, and float32 with the dtype
 * attribute removed (a file of adampi 0.1). The 16-bit sources are saved before their first step
 * too: the master is then made from the parameters, as the first step would make it. */
START_TEST(any_type_loads_into_any_type)
{
  static const adampi_dtype from_types[] = {ADAMPI_BFLOAT16, ADAMPI_FLOAT16, ADAMPI_FLOAT32, ADAMPI_FLOAT32};
  static const adampi_dtype to_types[] = {ADAMPI_FLOAT32, ADAMPI_BFLOAT16, ADAMPI_FLOAT16};
  const problem_variant *v = &problem_variants[0];
  adampi_dtype from = from_types[_i];
  char path[512], recorded[32];
  shared_path(path, sizeof path, "mixed_types");
  mixed src = mixed_create(MPI_COMM_WORLD, v, from);
  mixed_init(&src);
  int64_t n = src.hi - src.lo;

  if (from != ADAMPI_FLOAT32) {
    /* Saved before any step: the master comes from the parameters, and the next step is the one
     * a handle that never saved takes. */
    ck_assert_msg(n == 0 || adampi_master_shard(src.opt) == NULL, "a master before any step");
    ck_assert_ok(src.opt, adampi_save(src.opt, path, src.p, NULL));
    ck_assert_msg(mixed_params_are_master(&src, MPI_COMM_WORLD), "after a save before any step: the master is not the parameters");
    mixed twin = mixed_create(MPI_COMM_WORLD, v, from);
    mixed_init(&twin);
    ck_assert_ok(src.opt, mixed_steps(&src, MPI_COMM_WORLD, v, 0, 1));
    ck_assert_ok(twin.opt, mixed_steps(&twin, MPI_COMM_WORLD, v, 0, 1));
    problem_result ra, rb;
    char diff[400];
    mixed_collect(&src, MPI_COMM_WORLD, v->kind, &ra);
    mixed_collect(&twin, MPI_COMM_WORLD, v->kind, &rb);
    problem_compare(&ra, &rb, diff, sizeof diff);
    ck_assert_msg(!diff[0], "a save before the first step changed the first step: %s", diff);
    problem_release(&ra), problem_release(&rb);
    mixed_free(&twin);
    ck_assert_ok(src.opt, mixed_steps(&src, MPI_COMM_WORLD, v, 1, 3));
  } else {
    ck_assert_ok(src.opt, mixed_steps(&src, MPI_COMM_WORLD, v, 0, 3));
  }
  ck_assert_ok(src.opt, adampi_save(src.opt, path, src.p, NULL));
  file_dtype(path, recorded, sizeof recorded);
  ck_assert_msg(strcmp(recorded, adampi_dtype_name(from)) == 0, "the file records dtype '%s' for a %s model", recorded,
                adampi_dtype_name(from));
  if (_i == 3) {
    int ok = 1;
    if (test_rank() == 0) {
      hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
      ok = f >= 0 && H5Adelete(f, "dtype") >= 0;
      if (f >= 0) H5Fclose(f);
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    ck_assert_msg(ok, "the dtype attribute could not be removed");
  }
  problem_result rs;
  mixed_collect(&src, MPI_COMM_WORLD, v->kind, &rs);
  for (size_t k = 0; k < sizeof to_types / sizeof to_types[0]; k++) {
    mixed dst = mixed_create(MPI_COMM_WORLD, v, to_types[k]);
    ck_assert_ok(dst.opt, adampi_load(dst.opt, path, dst.p, NULL));
    problem_result rd;
    char diff[400];
    mixed_collect(&dst, MPI_COMM_WORLD, v->kind, &rd);
    problem_compare(&rs, &rd, diff, sizeof diff);
    ck_assert_msg(!diff[0], "%s file into a %s handle: %s", _i == 3 ? "an old float32" : adampi_dtype_name(from),
                  adampi_dtype_name(to_types[k]), diff);
    ck_assert_msg(mixed_params_are_master(&dst, MPI_COMM_WORLD), "%s file into a %s handle: the parameters are not the master rounded",
                  adampi_dtype_name(from), adampi_dtype_name(to_types[k]));
    /* and it steps on like the source, when the types agree */
    if (to_types[k] == from) {
      ck_assert_ok(src.opt, mixed_steps(&src, MPI_COMM_WORLD, v, 3, 4));
      ck_assert_ok(dst.opt, mixed_steps(&dst, MPI_COMM_WORLD, v, 3, 4));
      problem_result ra, rb;
      mixed_collect(&src, MPI_COMM_WORLD, v->kind, &ra);
      mixed_collect(&dst, MPI_COMM_WORLD, v->kind, &rb);
      problem_compare(&ra, &rb, diff, sizeof diff);
      ck_assert_msg(!diff[0], "the step after loading into the same type: %s", diff);
      problem_release(&ra), problem_release(&rb);
    }
    problem_release(&rd);
    mixed_free(&dst);
  }
  problem_release(&rs);
  mixed_free(&src);
  remove_all(path);
}
END_TEST

/* An unknown dtype (_i = 0) or one that is not a string (_i = 1) is refused by a 16-bit handle
 * with a master (after steps) and without one (before any step): nothing changes. */
START_TEST(unknown_dtype_changes_nothing_in_a_16_bit_handle)
{
  const problem_variant *v = &problem_variants[2];
  char path[512];
  shared_path(path, sizeof path, "mixed_bad_dtype");
  mixed src = mixed_create(MPI_COMM_WORLD, v, ADAMPI_BFLOAT16);
  mixed_init(&src);
  ck_assert_ok(src.opt, mixed_steps(&src, MPI_COMM_WORLD, v, 0, 3));
  ck_assert_ok(src.opt, adampi_save(src.opt, path, src.p, NULL));
  mixed_free(&src);
  MPI_Barrier(MPI_COMM_WORLD);
  int damaged = test_rank() == 0 ? damage(path, _i ? DTYPE_INTEGER : DTYPE_UNKNOWN) : 0;
  MPI_Bcast(&damaged, 1, MPI_INT, 0, MPI_COMM_WORLD);
  ck_assert_msg(damaged == 0, "the dtype attribute could not be replaced");
  const char *want = bad_expect[_i ? DTYPE_INTEGER : DTYPE_UNKNOWN].text;

  for (int stepped = 0; stepped < 2; stepped++) {
    mixed l = mixed_create(MPI_COMM_WORLD, v, ADAMPI_FLOAT16);
    mixed_init(&l);
    if (stepped) ck_assert_ok(l.opt, mixed_steps(&l, MPI_COMM_WORLD, v, 0, 5));
    int64_t n = l.hi - l.lo;
    void *p_before = malloc((size_t)n * l.elem + 1);
    memcpy(p_before, l.p, (size_t)n * l.elem);
    problem_result before, after;
    if (stepped) mixed_collect(&l, MPI_COMM_WORLD, v->kind, &before);
    adampi_status st = adampi_load(l.opt, path, l.p, NULL);
    const char *msg = adampi_last_error(l.opt);
    ck_assert_msg(st == ADAMPI_ERR_FORMAT, "[rank %d] status %s (%s)", test_rank(), adampi_strerror(st), msg);
    ck_assert_msg(strstr(msg, want) != NULL, "[rank %d] message '%s' lacks '%s'", test_rank(), msg, want);
    ck_assert_msg(memcmp(p_before, l.p, (size_t)n * l.elem) == 0, "[rank %d] a refused load changed the parameters", test_rank());
    if (stepped) {
      char diff[400];
      mixed_collect(&l, MPI_COMM_WORLD, v->kind, &after);
      problem_compare(&before, &after, diff, sizeof diff);
      ck_assert_msg(!diff[0], "a refused load changed the master or the state: %s", diff);
      problem_release(&before), problem_release(&after);
    } else {
      ck_assert_msg(n == 0 || adampi_master_shard(l.opt) == NULL, "[rank %d] a refused load made a master", test_rank());
    }
    free(p_before);
    mixed_free(&l);
  }
  remove_all(path);
}
END_TEST

/* ---- caller arrays ------------------------------------------------------------------------ */

#define A_MEAN 5
#define A_VAR 300

/* Values with every kind of float32 bit pattern worth keeping: signs, a negative zero, a
 * subnormal, large and small magnitudes. The same on every rank (caller arrays are replicated). */
static void fill_arrays(float *mean, float *var)
{
  for (int k = 0; k < A_MEAN; k++) mean[k] = (float)(k - 2) * 0.37f;
  mean[2] = -0.0f;
  for (int k = 0; k < A_VAR; k++) var[k] = 1.0f + (float)k * 1e-3f;
  var[7] = 1e-42f;
  var[8] = 3e38f;
}

/* A save with two caller arrays, loaded back on every rank bit for bit, with the optimizer; a
 * load that asks for one of them (or none) ignores the other. */
START_TEST(caller_arrays_round_trip)
{
  const problem_variant *v = &problem_variants[_i ? 2 : 0];
  char path[512];
  shared_path(path, sizeof path, "arrays");
  float mean[A_MEAN], var[A_VAR], mean_back[A_MEAN], var_back[A_VAR];
  fill_arrays(mean, var);
  live a = start(MPI_COMM_WORLD, v, 3, ADAMPI_NONFINITE_ERROR);
  adampi_array out[2] = {{"bn1.running_mean", mean, A_MEAN}, {"bn1.running_var", var, A_VAR}};
  adampi_save_options so = adampi_save_defaults();
  so.arrays = out;
  so.num_arrays = 2;
  ck_assert_ok(a.opt, adampi_save(a.opt, path, a.w, &so));

  live b = start(MPI_COMM_WORLD, v, 0, ADAMPI_NONFINITE_ERROR);
  memset(mean_back, 0xff, sizeof mean_back), memset(var_back, 0xff, sizeof var_back);
  adampi_array in[2] = {{"bn1.running_var", var_back, A_VAR}, {"bn1.running_mean", mean_back, A_MEAN}}; /* any order */
  adampi_load_options lo = adampi_load_defaults();
  lo.arrays = in;
  lo.num_arrays = 2;
  ck_assert_ok(b.opt, adampi_load(b.opt, path, b.w, &lo));
  ck_assert_msg(memcmp(mean, mean_back, sizeof mean) == 0, "[rank %d] bn1.running_mean differs after load", test_rank());
  ck_assert_msg(memcmp(var, var_back, sizeof var) == 0, "[rank %d] bn1.running_var differs after load", test_rank());
  problem_result ra, rb;
  char diff[400];
  problem_collect(a.opt, MPI_COMM_WORLD, v->kind, a.w, &ra);
  problem_collect(b.opt, MPI_COMM_WORLD, v->kind, b.w, &rb);
  problem_compare(&ra, &rb, diff, sizeof diff);
  ck_assert_msg(!diff[0], "after a load with caller arrays: %s", diff);

  memset(mean_back, 0, sizeof mean_back);
  lo.arrays = &in[1];
  lo.num_arrays = 1;
  ck_assert_ok(b.opt, adampi_load(b.opt, path, b.w, &lo));
  ck_assert_msg(memcmp(mean, mean_back, sizeof mean) == 0, "[rank %d] bn1.running_mean alone differs", test_rank());
  ck_assert_ok(b.opt, adampi_load(b.opt, path, b.w, NULL));
  problem_release(&ra);
  problem_release(&rb);
  stop(&a), stop(&b);
  remove_all(path);
}
END_TEST

enum { ARR_CORRUPT, ARR_MISSING, ARR_LENGTH, ARR_NO_GROUP, ARR_NO_CHECKSUM, ARR_FLOAT64, NUM_ARR_BAD };

static const char *const arr_expect[NUM_ARR_BAD] = {
  [ARR_CORRUPT] = "caller array 'bn1.running_var': checksum mismatch (the file is corrupt)",
  [ARR_MISSING] = "caller array 'ghost' (/arrays/ghost) is not in the checkpoint",
  [ARR_LENGTH] = "caller array 'bn1.running_var': the checkpoint holds 300 elements, 301 were asked for",
  [ARR_NO_GROUP] = "caller array 'bn1.running_mean' (/arrays/bn1.running_mean) is not in the checkpoint",
  [ARR_NO_CHECKSUM] = "caller array 'bn1.running_mean': no valid checksum attribute",
  [ARR_FLOAT64] = "caller array 'bn1.running_mean': /arrays/bn1.running_mean is not a 1-d float32 dataset",
};

/* Flip one byte of a dataset's contiguous data, a third of the way in (rank 0). */
static int flip_byte(const char *path, const char *dataset, size_t bytes)
{
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = f >= 0 ? H5Dopen2(f, dataset, H5P_DEFAULT) : H5I_INVALID_HID;
  haddr_t addr = d >= 0 ? H5Dget_offset(d) : HADDR_UNDEF;
  if (d >= 0) H5Dclose(d);
  if (f >= 0) H5Fclose(f);
  off_t at = (off_t)addr + (off_t)(bytes / 3);
  int fd = open(path, O_RDWR);
  unsigned char byte = 0;
  int ok = addr != HADDR_UNDEF && fd >= 0 && pread(fd, &byte, 1, at) == 1;
  byte ^= 0x04;
  ok = ok && pwrite(fd, &byte, 1, at) == 1;
  if (fd >= 0) close(fd);
  return ok;
}

static int damage_arrays(const char *path, int how)
{
  switch (how) {
  case ARR_CORRUPT: return flip_byte(path, "arrays/bn1.running_var", A_VAR * sizeof(float));
  case ARR_NO_CHECKSUM: {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = f >= 0 ? H5Dopen2(f, "arrays/bn1.running_mean", H5P_DEFAULT) : H5I_INVALID_HID;
    int ok = d >= 0 && H5Adelete(d, "checksum") >= 0;
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    return ok;
  }
  case ARR_FLOAT64: {
    hsize_t dims[1] = {A_MEAN};
    return replace_dataset(path, "arrays/bn1.running_mean", H5T_IEEE_F64LE, 1, dims);
  }
  default: return 1; /* the file is intact: the request is what is wrong */
  }
}

/* A refused load of caller arrays names the array, returns ADAMPI_ERR_FORMAT on every rank and
 * changes nothing: not the caller's arrays, not the optimizer, not the caller area. */
START_TEST(bad_caller_arrays_are_refused_and_change_nothing)
{
  const problem_variant *v = &problem_variants[0];
  char path[512];
  shared_path(path, sizeof path, "arrays_bad");
  float mean[A_MEAN], var[A_VAR];
  fill_arrays(mean, var);
  live src = start(MPI_COMM_WORLD, v, 3, ADAMPI_NONFINITE_ERROR);
  adampi_array out[2] = {{"bn1.running_mean", mean, A_MEAN}, {"bn1.running_var", var, A_VAR}};
  adampi_save_options so = adampi_save_defaults();
  so.arrays = out;
  so.num_arrays = _i == ARR_NO_GROUP ? 0 : 2; /* a file as saved before caller arrays existed */
  ck_assert_ok(src.opt, adampi_save(src.opt, path, src.w, &so));
  stop(&src);
  MPI_Barrier(MPI_COMM_WORLD);
  int damaged = test_rank() == 0 ? !damage_arrays(path, _i) : 0;
  MPI_Bcast(&damaged, 1, MPI_INT, 0, MPI_COMM_WORLD);
  ck_assert_msg(damaged == 0, "case %d: the file could not be damaged as planned", _i);

  live l = start(MPI_COMM_WORLD, v, 5, ADAMPI_NONFINITE_ERROR);
  problem_result before, after;
  problem_collect(l.opt, MPI_COMM_WORLD, v->kind, l.w, &before);
  float m[A_MEAN + 1], x[A_VAR + 1], m0[A_MEAN + 1], x0[A_VAR + 1];
  for (int k = 0; k <= A_VAR; k++) x[k] = (float)-k;
  for (int k = 0; k <= A_MEAN; k++) m[k] = 42.0f + (float)k;
  memcpy(m0, m, sizeof m), memcpy(x0, x, sizeof x);
  adampi_array in[3] = {{"bn1.running_mean", m, A_MEAN}, {"bn1.running_var", x, _i == ARR_LENGTH ? A_VAR + 1 : A_VAR},
                        {"ghost", m, 1}};
  adampi_user user = {0};
  adampi_user_set(&user, "untouched", 7);
  adampi_load_options lo = adampi_load_defaults();
  lo.arrays = in;
  lo.num_arrays = _i == ARR_MISSING ? 3 : 2;
  lo.user = &user;
  adampi_status st = adampi_load(l.opt, path, l.w, &lo);
  const char *msg = adampi_last_error(l.opt);
  ck_assert_msg(st == ADAMPI_ERR_FORMAT, "[rank %d] case %d: status %s (%s)", test_rank(), _i, adampi_strerror(st), msg);
  ck_assert_msg(strstr(msg, arr_expect[_i]) != NULL, "[rank %d] case %d: message '%s' lacks '%s'", test_rank(), _i, msg,
                arr_expect[_i]);
  ck_assert_msg(memcmp(m, m0, sizeof m) == 0 && memcmp(x, x0, sizeof x) == 0, "[rank %d] case %d: a refused load changed the caller's arrays",
                test_rank(), _i);
  ck_assert_msg(user.count == 1 && user.value[0] == 7, "case %d: a refused load changed the caller area", _i);
  problem_collect(l.opt, MPI_COMM_WORLD, v->kind, l.w, &after);
  char diff[400];
  problem_compare(&before, &after, diff, sizeof diff);
  ck_assert_msg(!diff[0], "case %d: a refused load changed the optimizer: %s", _i, diff);
  /* The same file still loads without caller arrays. */
  ck_assert_ok(l.opt, adampi_load(l.opt, path, l.w, NULL));
  problem_release(&before);
  problem_release(&after);
  stop(&l);
  remove_all(path);
}
END_TEST

/* A save refuses bad lists before anything is written: a bad name, a name twice, len 0, and (on
 * several ranks) arrays whose values differ across ranks, named. */
START_TEST(bad_caller_arrays_are_not_saved)
{
  char path[512];
  shared_path(path, sizeof path, "arrays_refused");
  remove_all(path);
  float mean[A_MEAN], var[A_VAR];
  fill_arrays(mean, var);
  if (test_rank() == test_size() - 1 && test_size() > 1) var[299] = 2.0f; /* not replicated */
  live l = start(MPI_COMM_WORLD, &problem_variants[0], 1, ADAMPI_NONFINITE_ERROR);
  const struct {
    adampi_array a[2];
    int n;
    adampi_status status;
    const char *text;
  } cases[] = {
    {{{"bn1/mean", mean, A_MEAN}}, 1, ADAMPI_ERR_ARG, "caller array 0: the name must be 1..47 characters without '/'"},
    {{{"m", mean, A_MEAN}, {"m", var, A_VAR}}, 2, ADAMPI_ERR_ARG, "caller array 'm' is in the list twice"},
    {{{"m", mean, 0}}, 1, ADAMPI_ERR_ARG, "caller array 'm': len = 0"},
    {{{"m", mean, A_MEAN}, {"v", var, A_VAR}}, 2, ADAMPI_ERR_MISMATCH, "ranks hold different values of caller array 'v'"},
  };
  int ncases = test_size() > 1 ? 4 : 3;
  for (int c = 0; c < ncases; c++) {
    adampi_save_options so = adampi_save_defaults();
    so.arrays = cases[c].a;
    so.num_arrays = cases[c].n;
    adampi_status st = adampi_save(l.opt, path, l.w, &so);
    const char *msg = adampi_last_error(l.opt);
    ck_assert_msg(st == cases[c].status, "[rank %d] case %d: status %s (%s)", test_rank(), c, adampi_strerror(st), msg);
    ck_assert_msg(strstr(msg, cases[c].text) != NULL, "[rank %d] case %d: message '%s' lacks '%s'", test_rank(), c, msg, cases[c].text);
    ck_assert_msg(access(path, F_OK) != 0, "case %d: a refused save wrote the file", c);
  }
  stop(&l);
  remove_all(path);
}
END_TEST

static Suite *make_suite(void)
{
  Suite *s = suite_create("checkpoint");
  TCase *tc = tcase_create("files");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, every_field_round_trips, 0, 2);
  tcase_add_loop_test(tc, full_parameters_round_trip, 0, 2);
  tcase_add_loop_test(tc, resume_on_another_rank_count_is_bitwise_identical, 0, 4);
  tcase_add_loop_test(tc, bad_files_are_refused_and_change_nothing, 0, NUM_BAD);
  tcase_add_loop_test(tc, h5py_edits_load_as_written, 0, 2);
  tcase_add_test(tc, the_application_hdf5_error_handler_is_kept);
  tcase_add_test(tc, metadata_is_all_checksummed);
  tcase_add_test(tc, rotation_keeps_the_last_k);
  tcase_add_test(tc, save_into_a_missing_directory_fails_everywhere);
  tcase_add_loop_test(tc, caller_arrays_round_trip, 0, 2);
  tcase_add_loop_test(tc, bad_caller_arrays_are_refused_and_change_nothing, 0, NUM_ARR_BAD);
  tcase_add_test(tc, bad_caller_arrays_are_not_saved);
  tcase_add_loop_test(tc, mixed_resume_is_bitwise_identical, 0, 4);
  tcase_add_loop_test(tc, any_type_loads_into_any_type, 0, 4);
  tcase_add_loop_test(tc, unknown_dtype_changes_nothing_in_a_16_bit_handle, 0, 2);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  return run_mpi_suite(argc, argv, make_suite);
}
