/*
 * checkpoint.h - what the checkpoint's files share: checkpoint.c (the format, save and load),
 * ckpt_file.c (atomic-file mechanics), ckpt_digest.c (the dataset checksum), ckpt_user.c (the
 * caller area) and ckpt_arrays.c (the caller arrays). The HDF5 attribute helpers, shared with the tools, are in h5io.h. Not installed.
 */
#ifndef ADAMPI_CHECKPOINT_H
#define ADAMPI_CHECKPOINT_H

#include "h5io.h"
#include "internal.h"

#include <hdf5.h>

/* Datasets of optimizer state per tensor at most (AdamP: exp_avg, exp_avg_sq; SGDP: momentum). */
#define MAX_STATE 2
static inline int adampi__ckpt_state_count(const adampi *opt) { return opt->cfg.kind == ADAMPI_ADAMP ? 2 : 1; }

/* A save's HDF5 calls go on after a failure, since every rank must take part in the collective
 * calls that follow: ADAMPI_H5 records the first failed call by name (with the tensor being
 * written, if any) as the save's failure, and the save fails once the ranks agree. */
typedef struct adampi__writer {
  adampi *opt;
  const char *path;   /* the temporary file */
  const char *tensor; /* being written, or NULL */
} adampi__writer;

/* Record a failed call (see adampi__writer); returns failed. */
int adampi__ckpt_h5_check(adampi__writer *w, int failed, const char *call, const char *file, int line);
/* Check an HDF5 call or helper (negative on failure) of a save; evaluates to 1 if it failed. */
#define ADAMPI_H5(w, call) adampi__ckpt_h5_check((w), (call) < 0, #call, __FILE__, __LINE__)

/* ckpt_file.c: atomic-file mechanics (rank 0 only unless said otherwise). */
int adampi__ckpt_fsync_path(const char *path, int directory); /* any rank; 0 or -1 */
/* An upper bound of the file's size in bytes. */
double adampi__ckpt_bytes_needed(const adampi *opt);
/* Reserve the new file's blocks before any data is written. */
adampi_status adampi__ckpt_reserve_space(adampi *opt, const char *tmp);
/* Refuse early when the file system cannot hold the new file next to the old one. */
adampi_status adampi__ckpt_check_space(adampi *opt, const char *path);
/* Keep the last `keep` checkpoints as PATH.1 .. PATH.keep; PATH is never missing. 0 or -1. */
int adampi__ckpt_rotate(const char *path, int keep);
/* Property list (H5P_GROUP_CREATE / H5P_FILE_CREATE) keeping every link and attribute in the
 * checksummed object header, and a group created with it. */
hid_t adampi__ckpt_compact_plist(hid_t cls);
hid_t adampi__ckpt_make_group(hid_t loc, const char *name);

/* ckpt_digest.c: the dataset checksum, as adampi__ckpt_digest_text defines it (stored in files). */
extern const char adampi__ckpt_digest_text[];
uint64_t adampi__ckpt_digest(const float *x, int64_t n, int64_t first);

/* ckpt_user.c: the caller area /user (named int64 values). */
int adampi__ckpt_valid_user_name(const char *name);
int adampi__ckpt_write_user(adampi__writer *w, hid_t f, const adampi_user *user);
/* Into *user (cleared first); ADAMPI_ERR_FORMAT naming the value that is not a named integer. */
adampi_status adampi__ckpt_read_user(adampi *opt, hid_t f, const char *path, adampi_user *user);

/* ckpt_arrays.c: the caller arrays /arrays/NAME (adampi_array). */
/* Local checks of a list: ADAMPI_ERR_ARG naming the problem. */
adampi_status adampi__ckpt_arrays_check(adampi *opt, const adampi_array *a, int n);
/* Collective, after the local checks agreed: the same list on every rank and, with digests (n
 * out), the same values, whose checksums it stores there; ADAMPI_ERR_MISMATCH otherwise. Every
 * rank returns the same status. */
adampi_status adampi__ckpt_arrays_agree(adampi *opt, const adampi_array *a, int n, uint64_t *digests);
/* Save: /arrays and its datasets (collective calls; rank 0 writes the data). 1 if a call failed. */
int adampi__ckpt_write_arrays(adampi__writer *w, hid_t f, hid_t dxpl, const adampi_array *a, int n, const uint64_t *digests);
/* Load: staging for every array's values (malloc; NULL if out of memory), the checked reads into
 * it (ADAMPI_ERR_FORMAT naming the array), and the copy into the caller's arrays. */
float *adampi__ckpt_arrays_stage(const adampi_array *a, int n);
adampi_status adampi__ckpt_read_arrays(adampi *opt, hid_t f, const char *path, const adampi_array *a, int n, float *staged);
void adampi__ckpt_arrays_commit(const adampi_array *a, int n, const float *staged);

#endif /* ADAMPI_CHECKPOINT_H */
