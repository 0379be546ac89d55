/*
 * test_replay.c - the replay file reader: every defect of a bad file is refused on every rank with
 * a message naming it (missing and extra datasets, wrong shapes and types, unknown optimizer,
 * invalid hyper-parameters, missing attributes, files that are not HDF5), a NaN gradient stops the
 * run naming the step and the tensor, and a good file round-trips through the writer.
 */
#define _POSIX_C_SOURCE 200809L /* truncate */
#include "mpi_check.h"
#include "replay.h"

#include <hdf5.h>
#include <math.h>
#include <unistd.h>

enum defect {
  GOOD,
  MISSING_PARAM,
  EXTRA_GRAD,
  EXTRA_ROOT,
  WRONG_SHAPE,
  WRONG_TYPE,
  UNKNOWN_OPTIMIZER,
  BAD_HPARAM,
  MISSING_ATTR,
  STEPS_MISMATCH,
  BAD_SCHEDULE,
  BAD_GROUP,
  NAN_GRAD,
  NOT_HDF5,
  NO_FILE,
  TRUNCATED,
  EMPTY,
  NEGATIVE_STEPS,
  ABSURD_STEPS,
  ZERO_DIM,
  ARRAY_ATTR,
  /* attribute types refused (h5io.h): each message names the attribute and the type found */
  COMPOUND_HPARAM,
  STRING_HPARAM,
  LONG_DOUBLE_HPARAM,
  ARRAY_HPARAM,
  STRING_STEPS,
  FLOAT_STEPS,
  HUGE_UINT_STEPS,
  WIDE_INT_GROUP,
  ENUM_NESTEROV,
  BAD_BOOL_NESTEROV,
  NULL_OPTIMIZER,
  NUM_DEFECTS
};

static const char *expected[NUM_DEFECTS] = {
  [MISSING_PARAM] = "/params/1 is missing",
  [EXTRA_GRAD] = "/grads/0/7 is not a tensor index 0..2: extra dataset",
  [EXTRA_ROOT] = "/extra is not part of a replay file",
  [WRONG_SHAPE] = "/grads/1/0 has shape [3, 4] but /params/0 has shape [4, 3]",
  [WRONG_TYPE] = "/params/2 must hold float32 values",
  [UNKNOWN_OPTIMIZER] = "optimizer = 'adam' is unknown",
  [BAD_HPARAM] = "/groups/0: beta1 = 1.5 is invalid",
  [MISSING_ATTR] = "/groups/0: attribute 'wd_ratio' is missing",
  [STEPS_MISMATCH] = "/grads holds 2 steps but the attribute steps is 3",
  [BAD_SCHEDULE] = "/lr_schedule must have shape [2, 1]",
  [BAD_GROUP] = "/params/1: group = 5 does not exist",
  [NAN_GRAD] = "step 1: non-finite value: NaN or Inf in the gradient of tensor 2 '2'",
  [NOT_HDF5] = "is not an HDF5 file",
  [NO_FILE] = "cannot read",
  [TRUNCATED] = "cannot be opened as an HDF5 file",
  [EMPTY] = "is not an HDF5 file",
  [NEGATIVE_STEPS] = "root attribute steps = -1 is invalid",
  [ABSURD_STEPS] = "root attribute steps = 4611686018427387904 is invalid",
  [ZERO_DIM] = "/params/0 has an empty or absurd dimension 1",
  [ARRAY_ATTR] = "root: attribute 'optimizer' must be a string, not an array; it is an array of shape [2]",
  [COMPOUND_HPARAM] = "/groups/0: attribute 'lr' must be a float32 or float64 number; it is a compound of 2 members",
  [STRING_HPARAM] = "/groups/0: attribute 'momentum' must be a float32 or float64 number; it is a variable-length UTF-8 string",
  [LONG_DOUBLE_HPARAM] = "/groups/0: attribute 'beta2' must be a float32 or float64 number; it is a 128-bit float",
  [ARRAY_HPARAM] = "/groups/0: attribute 'eps' must be a float32 or float64 number, not an array; it is an array of shape [1]",
  [STRING_STEPS] = "root: attribute 'steps' must be an integer; it is a fixed-length ASCII string of 1 bytes",
  [FLOAT_STEPS] = "root: attribute 'steps' must be an integer; it is a 64-bit float",
  [HUGE_UINT_STEPS] = "root: attribute 'steps' (a 64-bit unsigned integer) holds 18446744073709551615, which does not fit",
  [WIDE_INT_GROUP] = "/params/1: attribute 'group' (a 128-bit signed integer) holds a value of 2^64 or more, which does not fit",
  [ENUM_NESTEROV] = "/groups/0: attribute 'nesterov' must be a boolean (a numpy bool or an integer); it is an enum of 3 members",
  [BAD_BOOL_NESTEROV] = "/groups/0: attribute 'nesterov' is a boolean enum holding a value that is neither FALSE nor TRUE",
  [NULL_OPTIMIZER] = "root: attribute 'optimizer' must be a string; it holds no value (an empty dataspace",
};

/* The status each defect must be refused with (a file's content: ADAMPI_ERR_FORMAT). */
static adampi_status expected_status(int defect)
{
  return defect == NO_FILE ? ADAMPI_ERR_IO : defect == NAN_GRAD ? ADAMPI_ERR_NONFINITE : ADAMPI_ERR_FORMAT;
}

static void attr_f64(hid_t obj, const char *name, double v)
{
  hid_t s = H5Screate(H5S_SCALAR), a = H5Acreate2(obj, name, H5T_IEEE_F64LE, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_DOUBLE, &v);
  H5Aclose(a), H5Sclose(s);
}

static void attr_i64(hid_t obj, const char *name, int64_t v)
{
  hid_t s = H5Screate(H5S_SCALAR), a = H5Acreate2(obj, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a), H5Sclose(s);
}

static void dataset(hid_t loc, const char *name, int ndim, const hsize_t *dims, int f64, float fill, int nan_at)
{
  hid_t s = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
  hssize_t n = H5Sget_simple_extent_npoints(s);
  double *v = malloc((size_t)n * sizeof *v);
  for (hssize_t k = 0; k < n; k++) v[k] = fill * (double)(k % 7 + 1) - 0.3 * fill;
  if (nan_at >= 0) v[nan_at] = NAN;
  hid_t d = H5Dcreate2(loc, name, f64 ? H5T_IEEE_F64LE : H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
  H5Dclose(d), H5Sclose(s);
  free(v);
}

/* Replace attribute name of obj by one of file type ftype and dataspace space, written from v in
 * mem_type (all closed by the caller). */
static void replace_attr(hid_t obj, const char *name, hid_t ftype, hid_t space, hid_t mem_type, const void *v)
{
  H5Adelete(obj, name);
  hid_t a = H5Acreate2(obj, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
  ck_assert_msg(a >= 0 && H5Awrite(a, mem_type, v) >= 0, "cannot write the attribute %s of a defect", name);
  H5Aclose(a);
}

/* The attribute of a type-defect, in place of a good one. */
static void retype_attr(hid_t f, int defect)
{
  hid_t scalar = H5Screate(H5S_SCALAR), t = H5I_INVALID_HID, obj = H5I_INVALID_HID;
  switch (defect) {
  case COMPOUND_HPARAM: {
    struct { double a, b; } v = {0.01, 0.02};
    t = H5Tcreate(H5T_COMPOUND, sizeof v);
    H5Tinsert(t, "a", 0, H5T_NATIVE_DOUBLE), H5Tinsert(t, "b", sizeof(double), H5T_NATIVE_DOUBLE);
    obj = H5Gopen2(f, "groups/0", H5P_DEFAULT);
    replace_attr(obj, "lr", t, scalar, t, &v);
    break;
  }
  case STRING_HPARAM: { /* h5py: g.attrs['momentum'] = '0.9' */
    const char *v = "0.9";
    t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE), H5Tset_cset(t, H5T_CSET_UTF8);
    obj = H5Gopen2(f, "groups/0", H5P_DEFAULT);
    replace_attr(obj, "momentum", t, scalar, t, &v);
    break;
  }
  case LONG_DOUBLE_HPARAM: {
    long double v = 0.999L;
    t = H5Tcopy(H5T_NATIVE_LDOUBLE);
    obj = H5Gopen2(f, "groups/0", H5P_DEFAULT);
    replace_attr(obj, "beta2", t, scalar, t, &v);
    break;
  }
  case ARRAY_HPARAM: { /* h5py: g.attrs['eps'] = [1e-8] */
    double v = 1e-8;
    hsize_t one = 1;
    hid_t s = H5Screate_simple(1, &one, NULL);
    obj = H5Gopen2(f, "groups/0", H5P_DEFAULT);
    replace_attr(obj, "eps", H5T_IEEE_F64LE, s, H5T_NATIVE_DOUBLE, &v);
    H5Sclose(s);
    break;
  }
  case STRING_STEPS:
    t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 1);
    obj = H5Oopen(f, ".", H5P_DEFAULT);
    replace_attr(obj, "steps", t, scalar, t, "2");
    break;
  case FLOAT_STEPS: {
    double v = 2.0;
    obj = H5Oopen(f, ".", H5P_DEFAULT);
    replace_attr(obj, "steps", H5T_IEEE_F64LE, scalar, H5T_NATIVE_DOUBLE, &v);
    break;
  }
  case HUGE_UINT_STEPS: {
    uint64_t v = UINT64_MAX;
    obj = H5Oopen(f, ".", H5P_DEFAULT);
    replace_attr(obj, "steps", H5T_STD_U64LE, scalar, H5T_NATIVE_UINT64, &v);
    break;
  }
  case WIDE_INT_GROUP: { /* 2^70 in a 128-bit little-endian integer */
    unsigned char v[16] = {0};
    v[8] = 0x40;
    t = H5Tcopy(H5T_STD_I64LE);
    H5Tset_size(t, 16), H5Tset_precision(t, 128);
    obj = H5Dopen2(f, "params/1", H5P_DEFAULT);
    replace_attr(obj, "group", t, scalar, t, v);
    break;
  }
  case ENUM_NESTEROV:
  case BAD_BOOL_NESTEROV: { /* an enum that is not a bool; a bool holding 7 */
    int8_t v = defect == ENUM_NESTEROV ? 1 : 7, k;
    t = H5Tenum_create(H5T_STD_I8LE);
    const char *names[3] = {defect == ENUM_NESTEROV ? "OFF" : "FALSE", defect == ENUM_NESTEROV ? "ON" : "TRUE", "AUTO"};
    for (k = 0; k < (defect == ENUM_NESTEROV ? 3 : 2); k++) H5Tenum_insert(t, names[k], &k);
    obj = H5Gopen2(f, "groups/0", H5P_DEFAULT);
    replace_attr(obj, "nesterov", t, scalar, t, &v);
    break;
  }
  case NULL_OPTIMIZER: { /* h5py: f.attrs['optimizer'] = h5py.Empty('S5') */
    hid_t s = H5Screate(H5S_NULL);
    t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 5);
    obj = H5Oopen(f, ".", H5P_DEFAULT);
    replace_attr(obj, "optimizer", t, s, t, "adamp");
    H5Sclose(s);
    break;
  }
  }
  if (obj >= 0) H5Oclose(obj);
  if (t >= 0) H5Tclose(t);
  H5Sclose(scalar);
}

/* A replay file of 3 tensors ([4,3], [5], [2,6]) and 2 steps, with one defect. */
static void write_file(const char *path, int defect)
{
  if (defect == NOT_HDF5) {
    FILE *f = fopen(path, "w");
    fputs("this is not an HDF5 file\n", f);
    fclose(f);
    return;
  }
  if (defect == NO_FILE) {
    unlink(path);
    return;
  }
  if (defect == EMPTY) {
    fclose(fopen(path, "w"));
    return;
  }
  if (defect == TRUNCATED) {
    write_file(path, GOOD);
    FILE *f = fopen(path, "r+");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    ck_assert_int_eq(truncate(path, size / 3), 0);
    return;
  }
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const char *kind = defect == UNKNOWN_OPTIMIZER ? "adam" : "adamp";
  hsize_t two = 2;
  hid_t str = H5Tcopy(H5T_C_S1), s = defect == ARRAY_ATTR ? H5Screate_simple(1, &two, NULL) : H5Screate(H5S_SCALAR);
  H5Tset_size(str, strlen(kind));
  hid_t a = H5Acreate2(f, "optimizer", str, s, H5P_DEFAULT, H5P_DEFAULT);
  char kinds[16] = "";
  memcpy(kinds, kind, strlen(kind)), memcpy(kinds + strlen(kind), kind, strlen(kind));
  H5Awrite(a, str, kinds);
  H5Aclose(a), H5Sclose(s), H5Tclose(str);
  attr_i64(f, "steps", defect == STEPS_MISMATCH ? 3 : defect == NEGATIVE_STEPS ? -1 : defect == ABSURD_STEPS ? (int64_t)1 << 62 : 2);
  hid_t groups = H5Gcreate2(f, "groups", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  hid_t g0 = H5Gcreate2(groups, "0", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const char *names[9] = {"lr", "beta1", "beta2", "eps", "weight_decay", "delta", "wd_ratio", "momentum", "dampening"};
  double values[9] = {0.01, defect == BAD_HPARAM ? 1.5 : 0.9, 0.999, 1e-8, 0.01, 0.1, 0.1, 0.0, 0.0};
  for (int k = 0; k < 9; k++)
    if (!(defect == MISSING_ATTR && k == 6)) attr_f64(g0, names[k], values[k]);
  attr_i64(g0, "nesterov", 0);
  H5Gclose(g0), H5Gclose(groups);
  hsize_t dims[3][2] = {{4, 3}, {5, 0}, {2, 6}};
  int ndims[3] = {2, 1, 2};
  hid_t params = H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  for (int i = 0; i < 3; i++) {
    if (defect == MISSING_PARAM && i == 1) continue;
    char name[8];
    snprintf(name, sizeof name, "%d", i);
    hsize_t empty[2] = {4, 0};
    dataset(params, name, ndims[i], defect == ZERO_DIM && i == 0 ? empty : dims[i], defect == WRONG_TYPE && i == 2, 0.5f, -1);
    if (defect == BAD_GROUP && i == 1) {
      hid_t d = H5Dopen2(params, name, H5P_DEFAULT);
      attr_i64(d, "group", 5);
      H5Dclose(d);
    }
  }
  H5Gclose(params);
  hid_t grads = H5Gcreate2(f, "grads", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  for (int t = 0; t < 2; t++) {
    char name[8];
    snprintf(name, sizeof name, "%d", t);
    hid_t gt = H5Gcreate2(grads, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    for (int i = 0; i < 3; i++) {
      if (t == 1 && i == 1) continue; /* no gradient for tensor 1 at step 1 */
      snprintf(name, sizeof name, "%d", i);
      hsize_t swapped[2] = {3, 4};
      dataset(gt, name, ndims[i], (defect == WRONG_SHAPE && t == 1 && i == 0) ? swapped : dims[i], 0, 0.05f,
              (defect == NAN_GRAD && t == 1 && i == 2) ? 3 : -1);
    }
    if (defect == EXTRA_GRAD && t == 0) dataset(gt, "7", 1, dims[1], 0, 0.1f, -1);
    H5Gclose(gt);
  }
  H5Gclose(grads);
  if (defect == EXTRA_ROOT) dataset(f, "extra", 1, dims[1], 0, 1.0f, -1);
  if (defect == BAD_SCHEDULE) {
    hsize_t sd[2] = {3, 1};
    dataset(f, "lr_schedule", 2, sd, 1, 0.01f, -1);
  }
  if (defect >= COMPOUND_HPARAM) retype_attr(f, defect);
  H5Fclose(f);
}

static void temp_path(char *buf, size_t len, const char *what)
{
  snprintf(buf, len, "%s/adampi_test_replay_%s_%d.h5", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", what, (int)getppid());
}

/* Open, set up and run the whole file; out written only on success. Returns 0 or a status. */
static int replay_all(const char *in, const char *out, char *err, size_t len)
{
  replay_file *rf = NULL;
  adampi *opt = NULL;
  float *w = NULL;
  int rc = replay_open(MPI_COMM_WORLD, in, &rf, err, len);
  if (rc == 0) rc = replay_make_optimizer(rf, NULL, &opt, err, len);
  if (rc == 0) {
    int64_t lo, hi;
    adampi_shard(opt, adampi_rank(opt), &lo, &hi);
    w = calloc((size_t)(hi - lo) + 1, sizeof *w);
    rc = replay_read_params(rf, opt, w, err, len);
  }
  if (rc == 0) rc = replay_run(rf, opt, w, 0, replay_steps(rf), err, len);
  if (rc == 0) rc = replay_write_params(rf, opt, w, out, err, len);
  free(w);
  adampi_free(&opt);
  replay_close(&rf);
  return rc;
}

START_TEST(bad_files_are_refused_with_a_named_problem)
{
  int defect = _i + 1;
  char in[512], out[512], err[1024] = "";
  temp_path(in, sizeof in, "in");
  temp_path(out, sizeof out, "out");
  if (test_rank() == 0) {
    write_file(in, defect);
    unlink(out);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  int rc = replay_all(in, out, err, sizeof err);
  ck_assert_msg(rc == (int)expected_status(defect), "defect %d: status %d, expected %d (%s)", defect, rc,
                (int)expected_status(defect), err);
  ck_assert_msg(strstr(err, expected[defect]) != NULL, "[rank %d] defect %d: message '%s' lacks '%s'", test_rank(), defect,
                err, expected[defect]);
  ck_assert_msg(access(out, F_OK) != 0, "defect %d: OUT was created", defect);
  MPI_Barrier(MPI_COMM_WORLD);
  if (test_rank() == 0) unlink(in);
}
END_TEST

START_TEST(good_file_round_trips)
{
  char in[512], out[512], err[1024] = "";
  temp_path(in, sizeof in, "good_in");
  temp_path(out, sizeof out, "good_out");
  if (test_rank() == 0) write_file(in, GOOD);
  MPI_Barrier(MPI_COMM_WORLD);
  ck_assert_msg(replay_all(in, out, err, sizeof err) == 0, "good file refused: %s", err);
  /* OUT holds the parameters, and is itself readable as the params of a replay file. */
  hid_t f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
  ck_assert_msg(f >= 0, "OUT cannot be opened");
  float v[12];
  hid_t d = H5Dopen2(f, "params/0", H5P_DEFAULT);
  ck_assert_msg(d >= 0 && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0, "params/0 unreadable");
  H5Dclose(d);
  H5Fclose(f);
  for (int k = 0; k < 12; k++) ck_assert_msg(isfinite(v[k]), "params/0[%d] = %g", k, v[k]);
  ck_assert_msg(v[0] != 0.5f * 1 - 0.15f, "params/0 did not change");
  MPI_Barrier(MPI_COMM_WORLD);
  if (test_rank() == 0) unlink(in), unlink(out);
}
END_TEST

static Suite *make_suite(void)
{
  Suite *s = suite_create("replay");
  TCase *tc = tcase_create("files");
  tcase_add_loop_test(tc, bad_files_are_refused_with_a_named_problem, 0, NUM_DEFECTS - 1);
  tcase_add_test(tc, good_file_round_trips);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  return run_mpi_suite(argc, argv, make_suite);
}
