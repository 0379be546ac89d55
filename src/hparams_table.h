/*
 * hparams_table.h - the one list of a group's hyper-parameters. Everything that names, stores,
 * compares or hashes them is generated from it: the byte form behind the step hash and the
 * registration check (hparams.c), the mismatch message (layout.c), the checkpoint and replay
 * attributes (h5attr.c) and the tests' comparison (tests/mpi_check.h). Not installed.
 *
 * X(field, KIND): field is the member of adampi_hparams and the attribute name in files; KIND is
 * REAL (a double) or FLAG (an int, 0 or 1). The order is the order of the attributes in files and
 * of the bytes that are hashed: append new fields at the end, and add them to adampi_hparams.
 */
#ifndef ADAMPI_HPARAMS_TABLE_H
#define ADAMPI_HPARAMS_TABLE_H

#define ADAMPI_HPARAMS_TABLE(X) \
  X(lr, REAL)                   \
  X(beta1, REAL)                \
  X(beta2, REAL)                \
  X(eps, REAL)                  \
  X(weight_decay, REAL)         \
  X(delta, REAL)                \
  X(wd_ratio, REAL)             \
  X(momentum, REAL)             \
  X(dampening, REAL)            \
  X(nesterov, FLAG)

#define ADAMPI__HPARAM_ONE(field, kind) +1
enum { ADAMPI_HPARAMS_COUNT = 0 ADAMPI_HPARAMS_TABLE(ADAMPI__HPARAM_ONE) };
#undef ADAMPI__HPARAM_ONE

#endif /* ADAMPI_HPARAMS_TABLE_H */
