/*
 * hparams.c - defaults and validation of hyper-parameters (MATHS.md: the defaults of each step, and
 * "Hyper-parameter ranges"). Validation names the group field and its value; it never changes anything.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

adampi_hparams adampi_adamp_defaults(void)
{
  adampi_hparams hp = {.lr = 1e-3,
                       .beta1 = 0.9,
                       .beta2 = 0.999,
                       .eps = 1e-8,
                       .weight_decay = 0.0,
                       .delta = 0.1,
                       .wd_ratio = 0.1,
                       .momentum = 0.0,
                       .dampening = 0.0,
                       .nesterov = 0};
  return hp;
}

adampi_hparams adampi_sgdp_defaults(double lr)
{
  adampi_hparams hp = adampi_adamp_defaults();
  hp.lr = lr;
  return hp;
}

adampi_config adampi_config_defaults(adampi_kind kind)
{
  adampi_config cfg = {.kind = kind, .nonfinite = ADAMPI_NONFINITE_ERROR, .threads = 1};
  return cfg;
}

/* One range rule: lo <= x (or lo < x), x < hi (or x <= hi); hi = INFINITY for "no upper bound". */
static int out_of_range(double x, double lo, int lo_open, double hi, int hi_open)
{
  if (!isfinite(x)) return 1;
  if (lo_open ? !(x > lo) : !(x >= lo)) return 1;
  if (hi_open ? !(x < hi) : !(x <= hi)) return 1;
  return 0;
}

#define CHECK_RANGE(field, lo, lo_open, hi, hi_open, rule)                                     \
  do {                                                                                         \
    if (out_of_range(hp->field, lo, lo_open, hi, hi_open)) {                                   \
      if (msg) snprintf(msg, len, #field " = %.17g is invalid (must be " rule ")", hp->field); \
      return ADAMPI_ERR_HPARAM;                                                                \
    }                                                                                          \
  } while (0)

adampi_status adampi__hparams_check(adampi_kind kind, const adampi_hparams *hp, char *msg, size_t len)
{
  if (hp == NULL) {
    if (msg) snprintf(msg, len, "hyper-parameters are NULL");
    return ADAMPI_ERR_ARG;
  }
  if (kind != ADAMPI_ADAMP && kind != ADAMPI_SGDP) {
    if (msg) snprintf(msg, len, "optimizer kind %d is unknown (ADAMPI_ADAMP or ADAMPI_SGDP)", (int)kind);
    return ADAMPI_ERR_ARG;
  }
  CHECK_RANGE(lr, 0.0, 0, INFINITY, 1, "finite and >= 0");
  CHECK_RANGE(eps, 0.0, 0, INFINITY, 1, "finite and >= 0");
  CHECK_RANGE(weight_decay, 0.0, 0, INFINITY, 1, "finite and >= 0");
  CHECK_RANGE(delta, 0.0, 0, INFINITY, 1, "finite and >= 0");
  CHECK_RANGE(wd_ratio, 0.0, 0, INFINITY, 1, "finite and >= 0");
  if (hp->nesterov != 0 && hp->nesterov != 1) {
    if (msg) snprintf(msg, len, "nesterov = %d is invalid (must be 0 or 1)", hp->nesterov);
    return ADAMPI_ERR_HPARAM;
  }
  if (kind == ADAMPI_ADAMP) {
    CHECK_RANGE(beta1, 0.0, 0, 1.0, 1, "in [0, 1)");
    CHECK_RANGE(beta2, 0.0, 0, 1.0, 1, "in [0, 1)");
    return ADAMPI_OK;
  }
  CHECK_RANGE(momentum, 0.0, 0, INFINITY, 1, "finite and >= 0");
  if (hp->weight_decay > 0.0)
    CHECK_RANGE(momentum, 0.0, 0, 1.0, 1, "< 1 when weight_decay > 0, since SGDP divides by 1 - momentum");
  CHECK_RANGE(dampening, 0.0, 0, 1.0, 0, "in [0, 1]");
  if (hp->nesterov && !(hp->momentum > 0.0 && hp->dampening == 0.0)) {
    if (msg)
      snprintf(msg, len,
               "nesterov = 1 needs momentum > 0 and dampening == 0 (momentum = %.17g, dampening = %.17g)",
               hp->momentum, hp->dampening);
    return ADAMPI_ERR_HPARAM;
  }
  return ADAMPI_OK;
}

adampi_status adampi_hparams_check(adampi_kind kind, const adampi_hparams *hp, char *msg, size_t msg_len)
{
  return adampi__hparams_check(kind, hp, msg, msg_len);
}

/* Every field of the table is a member of adampi_hparams of its kind's type. */
#define REAL_TYPE double
#define FLAG_TYPE int
#define CHECK_FIELD(field, kind)                                                                    \
  _Static_assert(_Generic(((adampi_hparams *)0)->field, kind##_TYPE: 1, default: 0),                \
                 "adampi_hparams." #field " is not of the type its ADAMPI_HPARAMS_TABLE kind says");
ADAMPI_HPARAMS_TABLE(CHECK_FIELD)
#undef CHECK_FIELD

void adampi__hparams_bytes(const adampi_hparams *hp, unsigned char out[ADAMPI_HPARAMS_BYTES])
{
#define AS_DOUBLE(field, kind) (double)hp->field,
  double v[ADAMPI_HPARAMS_COUNT] = {ADAMPI_HPARAMS_TABLE(AS_DOUBLE)};
#undef AS_DOUBLE
  memcpy(out, v, sizeof v);
}
