/*
 * h5io.h - HDF5 attribute helpers shared by the checkpoint code (libadampi) and the replay-file
 * reader (src/tools/replay.c), so that both read attributes by the same rules. Not installed;
 * nothing here is part of the API (HDF5 stays a private dependency of libadampi).
 *
 * h5attr.c is compiled into libadampi (hidden, like every adampi__ name) and again into the tool's
 * static library adampi_replayio, which cannot see libadampi's hidden symbols.
 *
 * What the readers accept, whoever wrote the file (h5py's defaults included):
 *   string   fixed or variable length, ASCII or UTF-8, null-terminated, null-padded or
 *            space-padded (trailing spaces of a space-padded string are padding);
 *   integer  any width and signedness, if the value fits in int64 (uint64 for the checksum);
 *   float    float32 or float64, or an integer that a double holds exactly (h5py stores the
 *            Python int 0 as int64);
 *   boolean  an enum FALSE/TRUE (numpy bool, as h5py stores it) or an integer.
 * The attribute must be a scalar (not an array, not an empty dataspace). Everything else is
 * refused with a message naming the attribute and the type found.
 *
 * The readers return ADAMPI_OK, or ADAMPI_ERR_FORMAT with "WHERE: attribute 'NAME' ..." in msg
 * (msg_len bytes; WHERE is the caller's name for obj, e.g. "root" or "/groups/0"). Local, not
 * collective; nothing is written to out on failure.
 */
#ifndef ADAMPI_H5IO_H
#define ADAMPI_H5IO_H

#include "adampi.h"

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

/* HDF5 reports every failed call through the process's automatic error handler (printing by
 * default). adampi's failures are expected and reported by status, so its calls run with the
 * handler off; quiet_end puts back whatever the application had (h5py in the same process keeps
 * its error reports). Pair them in every public call that uses HDF5; end is a no-op without
 * begin. */
typedef struct adampi__h5_quiet {
  H5E_auto2_t fn;
  void *data;
  int saved;
} adampi__h5_quiet;
void adampi__h5_quiet_begin(adampi__h5_quiet *q);
void adampi__h5_quiet_end(adampi__h5_quiet *q);

/* 1 if obj has an attribute called name, 0 if not (or if HDF5 cannot tell). */
int adampi__h5_has(hid_t obj, const char *name);

/* A string attribute into out (len bytes, NUL-terminated): refused if it does not fit. */
adampi_status adampi__h5_get_string(hid_t obj, const char *where, const char *name, char *out, size_t len, char *msg,
                                    size_t msg_len);
/* An integer attribute of any width that fits in int64. */
adampi_status adampi__h5_get_int(hid_t obj, const char *where, const char *name, int64_t *v, char *msg, size_t msg_len);
/* An unsigned integer attribute that fits in uint64 (checksums). */
adampi_status adampi__h5_get_uint(hid_t obj, const char *where, const char *name, uint64_t *v, char *msg,
                                  size_t msg_len);
/* A float32 or float64 attribute (or an integer a double holds exactly) as a double. */
adampi_status adampi__h5_get_float(hid_t obj, const char *where, const char *name, double *v, char *msg,
                                   size_t msg_len);
/* A boolean: a numpy bool (enum FALSE = 0 / TRUE = 1) or an integer (returned as it is; the
 * caller checks the range, so that its message can say what is allowed). */
adampi_status adampi__h5_get_bool(hid_t obj, const char *where, const char *name, int64_t *v, char *msg,
                                  size_t msg_len);

/* A group's hyper-parameters (ADAMPI_HPARAMS_TABLE): REAL fields by adampi__h5_get_float, FLAG
 * fields by adampi__h5_get_bool and 0 or 1. The values are not validated otherwise
 * (adampi_hparams_check does that). On failure *hp is unchanged. */
adampi_status adampi__h5_get_hparams(hid_t obj, const char *where, adampi_hparams *hp, char *msg, size_t msg_len);
/* Write them as attributes of obj, in the table's order: REAL as float64, FLAG as int64. */
int adampi__h5_put_hparams(hid_t obj, const adampi_hparams *hp);

/* Writers, as adampi writes its files: little-endian int64, float64, uint64, fixed-length
 * null-terminated ASCII strings. n = 0: a scalar; else a 1-d array of n values. 0 on success, -1
 * if an HDF5 call failed. */
int adampi__h5_put(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, hsize_t n, const void *v);
int adampi__h5_put_int(hid_t obj, const char *name, int64_t v);
int adampi__h5_put_float(hid_t obj, const char *name, double v);
int adampi__h5_put_string(hid_t obj, const char *name, const char *text);

#endif /* ADAMPI_H5IO_H */
