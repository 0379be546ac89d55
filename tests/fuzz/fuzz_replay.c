/*
 * fuzz_replay.c - libFuzzer harness for the replay-file reader (src/tools/replay.c).
 *
 * Built twice: fuzz_replay_raw (the input is the file; seeds in tests/fuzz/seeds/replay) and
 * fuzz_replay_edit (the input is an edit program applied to one of the test fixtures, see
 * fuzz_common.h). ADAMPI_FUZZ_WRITE_SEEDS=DIR ./fuzz_replay_raw writes the seeds adamp.h5 and sgdp.h5
 * into DIR; the seeds h5py_*.h5 (h5py's attribute types, in the checksummed format) are written by
 * tests/fixtures/h5py/generate.py. An input that opens is run the
 * way adampi-replay runs it: optimizer, initial parameters, up to 4 steps, output written.
 * Invariants (a trap if broken): every call returns; a refusal has a known status and a message;
 * a refused output file does not exist afterwards.
 *
 * Files that declare more than FUZZ_MAX_ELEMENTS elements are opened and checked but not run: the
 * tool would honestly allocate their state, which is not what a fuzzer should spend memory on.
 */
#include "adampi.h"
#include "fuzz_common.h"
#include "replay.h"

#ifndef FUZZ_FIXTURE_DIR
#define FUZZ_FIXTURE_DIR "."
#endif
#define FUZZ_MAX_ELEMENTS ((int64_t)1 << 22)

static char scratch[256], out_path[300];

/* ---- seeds: small replay files whose metadata HDF5 checksums throughout --------------------- */

static hid_t compact(hid_t cls)
{
  hid_t pl = H5Pcreate(cls);
  H5Pset_link_phase_change(pl, 65535, 65534);
  H5Pset_attr_phase_change(pl, 65535, 65534);
  return pl;
}

static void seed_attr(hid_t obj, const char *name, hid_t ftype, hid_t mtype, const void *v)
{
  hid_t s = H5Screate(H5S_SCALAR), a = H5Acreate2(obj, name, ftype, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, mtype, v);
  H5Aclose(a), H5Sclose(s);
}

static void seed_data(hid_t loc, const char *name, hid_t type, int ndim, const hsize_t *dims, double scale)
{
  hid_t s = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
  hssize_t n = H5Sget_simple_extent_npoints(s);
  double v[64];
  for (hssize_t k = 0; k < n && k < 64; k++) v[k] = scale * (double)((k * 7) % 11 - 5);
  hid_t d = H5Dcreate2(loc, name, type, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
  H5Dclose(d), H5Sclose(s);
}

/* kind 0: AdamP, 2 groups, tensors [4,3] [5] [] [2,6], 3 steps, a missing gradient, a schedule;
 * kind 1: SGDP with nesterov, 1 group, the same tensors, 2 steps. */
static void write_seed(const char *path, int kind)
{
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), fcpl = compact(H5P_FILE_CREATE), gcpl = compact(H5P_GROUP_CREATE);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
  const char *opt = kind ? "sgdp" : "adamp";
  hid_t str = H5Tcopy(H5T_C_S1);
  H5Tset_size(str, strlen(opt));
  seed_attr(f, "optimizer", str, str, opt);
  H5Tclose(str);
  int64_t steps = kind ? 2 : 3, ngroups = kind ? 1 : 2;
  seed_attr(f, "steps", H5T_STD_I64LE, H5T_NATIVE_INT64, &steps);
  static const char *names[9] = {"lr", "beta1", "beta2", "eps", "weight_decay", "delta", "wd_ratio", "momentum", "dampening"};
  hid_t groups = H5Gcreate2(f, "groups", H5P_DEFAULT, gcpl, H5P_DEFAULT);
  for (int g = 0; g < ngroups; g++) {
    char name[8];
    snprintf(name, sizeof name, "%d", g);
    hid_t h = H5Gcreate2(groups, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    double v[9] = {kind ? 0.1 : 0.01, 0.9, 0.999, 1e-8, g ? 0.0 : 0.01, 0.1, 0.1, kind ? 0.9 : 0.0, 0.0};
    for (int k = 0; k < 9; k++) seed_attr(h, names[k], H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v[k]);
    int64_t nesterov = kind;
    seed_attr(h, "nesterov", H5T_STD_I64LE, H5T_NATIVE_INT64, &nesterov);
    H5Gclose(h);
  }
  H5Gclose(groups);
  hsize_t dims[4][2] = {{4, 3}, {5, 0}, {0, 0}, {2, 6}};
  int ndims[4] = {2, 1, 0, 2};
  hid_t params = H5Gcreate2(f, "params", H5P_DEFAULT, gcpl, H5P_DEFAULT);
  for (int i = 0; i < 4; i++) {
    char name[8];
    snprintf(name, sizeof name, "%d", i);
    seed_data(params, name, H5T_IEEE_F32LE, ndims[i], dims[i], 0.1);
    int64_t group = kind ? 0 : i % 2;
    hid_t d = H5Dopen2(params, name, H5P_DEFAULT);
    seed_attr(d, "group", H5T_STD_I64LE, H5T_NATIVE_INT64, &group);
    H5Dclose(d);
  }
  H5Gclose(params);
  hid_t grads = H5Gcreate2(f, "grads", H5P_DEFAULT, gcpl, H5P_DEFAULT);
  for (int t = 0; t < steps; t++) {
    char name[8];
    snprintf(name, sizeof name, "%d", t);
    hid_t gt = H5Gcreate2(grads, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    for (int i = 0; i < 4; i++) {
      if (t == 1 && i == 1) continue; /* no gradient */
      snprintf(name, sizeof name, "%d", i);
      seed_data(gt, name, H5T_IEEE_F32LE, ndims[i], dims[i], 0.01 * (t + 1));
    }
    H5Gclose(gt);
  }
  H5Gclose(grads);
  if (!kind) {
    hsize_t sd[2] = {3, 2};
    double lr[6] = {0.01, 0.02, 0.005, 0.01, 0.0, 0.03};
    hid_t s = H5Screate_simple(2, sd, NULL), d = H5Dcreate2(f, "lr_schedule", H5T_IEEE_F64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, lr);
    H5Dclose(d), H5Sclose(s);
  }
  H5Fclose(f);
  H5Pclose(fapl), H5Pclose(fcpl), H5Pclose(gcpl);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc, (void)argv;
  fuzz_mpi_init();
  const char *seeds = getenv("ADAMPI_FUZZ_WRITE_SEEDS");
  if (seeds) {
    char path[512];
    for (int kind = 0; kind < 2; kind++) {
      snprintf(path, sizeof path, "%s/%s.h5", seeds, kind ? "sgdp" : "adamp");
      write_seed(path, kind);
      char err[512] = "";
      replay_file *rf = NULL;
      int rc = replay_open(MPI_COMM_WORLD, path, &rf, err, sizeof err);
      fprintf(stderr, "%s: %s\n", path, rc ? err : "written and opened");
      replay_close(&rf);
    }
    MPI_Finalize();
    exit(0);
  }
  fuzz_scratch_path(scratch, sizeof scratch, "replay");
  snprintf(out_path, sizeof out_path, "%s.out", scratch);
  return 0;
}

static void check_refusal(int rc, const char *err)
{
  FUZZ_ASSERT(fuzz_known_error(rc), "unknown status %d", rc);
  FUZZ_ASSERT(err[0] != 0, "a refusal without a message (status %d)", rc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fz in = {data, size};
  char *edited = NULL;
#ifdef FUZZ_EDIT
  /* the project's fixtures, and files written the way h5py users write them (every string form,
   * int32/uint8, float32, numpy-bool nesterov: tests/fixtures/h5py) */
  static const char *bases[] = {"adamp_basic.in",        "adamp_layer.in",       "edge_values_sgdp.in",
                                "adamp_nesterov_wd_groups.in", "h5py/natural_adamp", "h5py/natural_sgdp",
                                "h5py/spacepad_adamp",   "h5py/uint8_sgdp",      "h5py/float32_adamp",
                                "h5py/fixed_utf8_adamp"};
  char base[512];
  snprintf(base, sizeof base, "%s/%s.h5", FUZZ_FIXTURE_DIR, bases[fz_u8(&in) % (sizeof bases / sizeof bases[0])]);
  edited = base;
#endif
  if (fuzz_make_file(&in, edited, scratch) != 0) return 0;
  char err[1024] = "";
  replay_file *rf = NULL;
  int rc = replay_open(MPI_COMM_WORLD, scratch, &rf, err, sizeof err);
  if (rc != 0) {
    check_refusal(rc, err);
    FUZZ_ASSERT(rf == NULL, "a refused open returned a handle");
  } else if (replay_numel(rf) <= FUZZ_MAX_ELEMENTS) {
    adampi *opt = NULL;
    float *shard = NULL;
    rc = replay_make_optimizer(rf, NULL, &opt, err, sizeof err);
    if (rc == 0) {
      int64_t lo, hi;
      adampi_shard(opt, adampi_rank(opt), &lo, &hi);
      shard = malloc(sizeof(float) * (size_t)(hi - lo + 1));
      FUZZ_ASSERT(shard != NULL, "out of memory in the harness");
      rc = replay_read_params(rf, opt, shard, err, sizeof err);
    }
    int steps = replay_steps(rf) < 4 ? replay_steps(rf) : 4;
    if (rc == 0) rc = replay_run(rf, opt, shard, 0, steps, err, sizeof err);
    if (rc == 0) {
      rc = replay_write_params(rf, opt, shard, out_path, err, sizeof err);
      if (rc != 0) FUZZ_ASSERT(access(out_path, F_OK) != 0, "a refused output file exists");
    }
    if (rc != 0) check_refusal(rc, err);
    unlink(out_path);
    free(shard);
    adampi_free(&opt);
  }
  replay_close(&rf);
  unlink(scratch);
  return 0;
}
