/*
 * bench_checkpoint - save and load rate of adampi checkpoints against the plain rate of the disk,
 * measured in the same run.
 *
 *   mpirun -np N build/bin/bench_checkpoint [--millions M] [--repeat R] [--dir DIR]
 *
 * The model: M million parameters (default 100) in tensors of 1000 x 1000, AdamP state after one
 * step, so a checkpoint holds 12 bytes per parameter (1.2 GB by default). The reference: rank 0
 * writes the same number of bytes sequentially with write() and fsync, and reads them back. Before
 * every read the file's pages are evicted (posix_fadvise DONTNEED after fsync), so reads come from
 * the disk, for the reference and for adampi alike. Times are the maximum over ranks, medians of
 * R repetitions. Prints one CSV line (prefix "csv,") and a readable line.
 */
#define _POSIX_C_SOURCE 200809L
#include "adampi.h"
#include "timing.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank_, size_;

static void evict(const char *path)
{
  int fd = open(path, O_RDONLY);
  if (fd < 0) return;
  fdatasync(fd);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
}

/* Rank 0: sequential write + fsync, then read, of bytes; returns seconds for each. */
static void plain_io(const char *path, double bytes, double *wsec, double *rsec)
{
  size_t chunk = (size_t)64 << 20;
  char *buf = malloc(chunk);
  for (size_t i = 0; i < chunk; i++) buf[i] = (char)(i * 131 + 7);
  double t0 = MPI_Wtime();
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  for (double left = bytes; left > 0; left -= (double)chunk) {
    size_t n = left < (double)chunk ? (size_t)left : chunk;
    if (write(fd, buf, n) != (ssize_t)n) {
      perror("bench_checkpoint: plain write");
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  }
  fsync(fd);
  close(fd);
  *wsec = MPI_Wtime() - t0;
  evict(path);
  t0 = MPI_Wtime();
  fd = open(path, O_RDONLY);
  while (read(fd, buf, chunk) > 0) {
  }
  close(fd);
  *rsec = MPI_Wtime() - t0;
  unlink(path);
  free(buf);
}


int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  int millions = 100, repeat = 3;
  const char *dir = ".";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--millions") && i + 1 < argc) millions = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
    else {
      if (rank_ == 0) fprintf(stderr, "usage: bench_checkpoint [--millions M] [--repeat R] [--dir DIR]\n");
      MPI_Finalize();
      return 2;
    }
  }
  if (repeat < 1 || repeat > 15) repeat = 3;

  adampi_config cfg = adampi_config_defaults(ADAMPI_ADAMP);
  adampi *opt = NULL;
  char err[256];
  if (adampi_create(MPI_COMM_WORLD, &cfg, &opt, err, sizeof err) != ADAMPI_OK) MPI_Abort(MPI_COMM_WORLD, 1);
  adampi_hparams hp = adampi_adamp_defaults();
  adampi_add_group(opt, &hp, NULL);
  for (int i = 0; i < millions; i++) {
    char name[32];
    int64_t shape[2] = {1000, 1000};
    snprintf(name, sizeof name, "layer%03d.weight", i);
    adampi_add_tensor(opt, name, 2, shape, 0, NULL);
  }
  if (adampi_commit(opt) != ADAMPI_OK) {
    if (rank_ == 0) fprintf(stderr, "%s\n", adampi_last_error(opt));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  int64_t lo, hi;
  adampi_shard(opt, rank_, &lo, &hi);
  size_t n = (size_t)(hi - lo);
  float *w = malloc((n + 1) * sizeof *w), *g = malloc((n + 1) * sizeof *g);
  for (size_t i = 0; i < n; i++) {
    w[i] = (float)((lo + (int64_t)i) % 1013) * 1e-3f - 0.5f;
    g[i] = (float)((lo + (int64_t)i) % 977) * 1e-4f - 0.05f;
  }
  if (adampi_step_sharded(opt, w, g, NULL) != ADAMPI_OK) MPI_Abort(MPI_COMM_WORLD, 1);
  free(g);

  double bytes = 12.0 * (double)adampi_numel(opt);
  char plain[4096], ck[4096];
  snprintf(plain, sizeof plain, "%s/bench_plain.bin", dir);
  snprintf(ck, sizeof ck, "%s/bench_checkpoint.h5", dir);
  double pw[16], pr[16], sv[16], ld[16];
  for (int r = 0; r < repeat; r++) {
    double a = 0, b = 0;
    if (rank_ == 0) plain_io(plain, bytes, &a, &b);
    MPI_Bcast(&a, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    MPI_Bcast(&b, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    pw[r] = a, pr[r] = b;

    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    if (adampi_save(opt, ck, w, NULL) != ADAMPI_OK) {
      if (rank_ == 0) fprintf(stderr, "save: %s\n", adampi_last_error(opt));
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    sv[r] = max_over_ranks(MPI_Wtime() - t0);
    if (rank_ == 0) evict(ck);
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    if (adampi_load(opt, ck, w, NULL) != ADAMPI_OK) {
      if (rank_ == 0) fprintf(stderr, "load: %s\n", adampi_last_error(opt));
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    ld[r] = max_over_ranks(MPI_Wtime() - t0);
  }
  if (rank_ == 0) unlink(ck);
  double mpw = median(pw, repeat), mpr = median(pr, repeat), msv = median(sv, repeat), mld = median(ld, repeat);
  double gb = bytes / 1e9;
  if (rank_ == 0) {
    printf("csv,ranks,bytes,plain_write_GBps,plain_read_GBps,save_GBps,load_GBps,save_ratio,load_ratio\n");
    printf("csv,%d,%.0f,%.3f,%.3f,%.3f,%.3f,%.2f,%.2f\n", size_, bytes, gb / mpw, gb / mpr, gb / msv, gb / mld, mpw / msv,
           mpr / mld);
    printf("%d ranks, %.2f GB (%d M params, AdamP): save %.2f GB/s = %.2f x plain write+fsync (%.2f GB/s); "
           "load %.2f GB/s = %.2f x plain read (%.2f GB/s); medians of %d\n",
           size_, gb, millions, gb / msv, mpw / msv, gb / mpw, gb / mld, mpr / mld, gb / mpr, repeat);
  }
  free(w);
  adampi_free(&opt);
  MPI_Finalize();
  return 0;
}
