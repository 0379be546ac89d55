/*
 * ckpt_file.c - the mechanics that make a checkpoint save atomic and safe on a full disk: space
 * checked and reserved up front, fsync of file and directory, rotation of the previous files, and
 * HDF5 objects whose metadata stay in checksummed headers. It knows nothing of the format.
 */
#define _GNU_SOURCE /* fsync, link, O_DIRECTORY, fallocate */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

int adampi__ckpt_fsync_path(const char *path, int directory)
{
  int fd = open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

/* An upper bound of the file size: the data and the metadata
 * (measured at 10-20 KiB per tensor; 16 KiB plus 256 KiB are counted). */
double adampi__ckpt_bytes_needed(const adampi *opt)
{
  return 4.0 * (double)opt->numel * (1 + adampi__ckpt_state_count(opt)) * 1.05 + 16384.0 * opt->num_tensors + 262144.0;
}

/* Reserve the file's blocks before any data is written (rank 0, on the new file): some MPI-IO
 * layers report a full disk only on stderr and let the write "succeed" with a hole. */
adampi_status adampi__ckpt_reserve_space(adampi *opt, const char *tmp)
{
  int fd = open(tmp, O_RDWR);
  if (fd < 0) return ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot open %s: %s", tmp, strerror(errno));
  int rc = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)adampi__ckpt_bytes_needed(opt));
  int err = errno;
  close(fd);
  if (rc != 0 && err != EOPNOTSUPP && err != ENOSYS)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot write %s: %s (the checkpoint needs %.0f bytes)", tmp,
                       err == ENOSPC ? "the disk is full" : strerror(err), adampi__ckpt_bytes_needed(opt));
  return ADAMPI_OK;
}

/* Refuse early when the file system cannot hold the new file next to the old one: HDF5 does not
 * always recover collectively from a write that fails on one rank. Rank 0 only. */
adampi_status adampi__ckpt_check_space(adampi *opt, const char *path)
{
  char dir[4200];
  struct statvfs fs;
  snprintf(dir, sizeof dir, "%s", path);
  if (statvfs(dirname(dir), &fs) != 0) return ADAMPI_OK; /* the create will report it */
  double need = adampi__ckpt_bytes_needed(opt);
  double have = (double)fs.f_bavail * (double)fs.f_frsize;
  if (need > have)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_IO, "cannot write %s: the disk is full (the checkpoint needs %.0f bytes, %.0f are free)",
                       path, need, have);
  return ADAMPI_OK;
}

/* PATH.k -> PATH.k+1 for k = K-1..1, then PATH.1 becomes a hard link of PATH, so that PATH is
 * never missing. Rank 0 only. */
int adampi__ckpt_rotate(const char *path, int keep)
{
  char from[4200], to[4200];
  for (int k = keep - 1; k >= 1; k--) {
    snprintf(from, sizeof from, "%s.%d", path, k);
    snprintf(to, sizeof to, "%s.%d", path, k + 1);
    if (access(from, F_OK) == 0 && rename(from, to) != 0) return -1;
  }
  if (access(path, F_OK) != 0) return 0;
  snprintf(from, sizeof from, "%s.1.adampi-tmp", path);
  snprintf(to, sizeof to, "%s.1", path);
  unlink(from);
  if (link(path, from) != 0) return -1;
  return rename(from, to);
}

/* Property list of a group or file whose links and attributes all stay in its object header
 * ("compact" storage), which HDF5 checksums, instead of moving to a fractal heap past 8 entries,
 * whose blocks HDF5 does not checksum (a fuzzer crashes HDF5 1.10 there). */
hid_t adampi__ckpt_compact_plist(hid_t cls)
{
  hid_t pl = H5Pcreate(cls);
  H5Pset_link_phase_change(pl, 65535, 65534);
  H5Pset_attr_phase_change(pl, 65535, 65534);
  return pl;
}

hid_t adampi__ckpt_make_group(hid_t loc, const char *name)
{
  hid_t gcpl = adampi__ckpt_compact_plist(H5P_GROUP_CREATE);
  hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
  H5Pclose(gcpl);
  return g;
}

int adampi__ckpt_h5_check(adampi__writer *w, int failed, const char *call, const char *file, int line)
{
  if (failed)
    adampi__fail(w->opt, ADAMPI_ERR_IO, file, line, "cannot write %s%s%s%s: %s failed (disk full or I/O error?)", w->path,
                 w->tensor ? " (tensor '" : "", w->tensor ? w->tensor : "", w->tensor ? "')" : "", call);
  return failed;
}
