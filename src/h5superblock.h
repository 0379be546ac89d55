/*
 * h5superblock.h - the version of an HDF5 file's superblock, read with plain stdio before the HDF5
 * library parses anything.
 *
 * Why: HDF5 1.10 trusts the metadata of files written in the oldest format (superblock version 0
 * or 1: no metadata checksums); a damaged file of that kind can crash the library inside H5Fopen
 * or H5Aexists (found by tests/fuzz). From superblock version 2 on, object headers, B-trees and
 * heap headers carry checksums that HDF5 verifies before use. adampi writes its checkpoints that
 * way (and keeps links and attributes in the checksummed object headers, see checkpoint.c), so
 * adampi_load refuses anything older. Header only, no state: the tests use it too.
 */
#ifndef ADAMPI_H5SUPERBLOCK_H
#define ADAMPI_H5SUPERBLOCK_H

#include <stdio.h>
#include <string.h>

/* Superblock version of the HDF5 file at path (0..255), -1 if no HDF5 signature is found at any of
 * the places HDF5 looks (offset 0, 512, 1024, 2048, ...), -2 if the file cannot be read. */
static inline int adampi_h5_superblock_version(const char *path)
{
  static const unsigned char signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  FILE *f = fopen(path, "rb");
  if (f == NULL) return -2;
  int version = -1;
  for (long at = 0; at >= 0 && at <= (1L << 40); at = at ? 2 * at : 512) {
    unsigned char head[9];
    if (fseek(f, at, SEEK_SET) != 0 || fread(head, 1, sizeof head, f) != sizeof head) break;
    if (memcmp(head, signature, sizeof signature) == 0) {
      version = head[8];
      break;
    }
  }
  fclose(f);
  return version;
}

#endif
