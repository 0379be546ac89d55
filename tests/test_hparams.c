/*
 * test_hparams.c - validation of hyper-parameters: every rule of MATHS.md "Hyper-parameter ranges", for both
 * optimizers, with a message naming the field and its value; nothing changes on error.
 */
#include "mpi_check.h"

#include <math.h>

typedef struct bad_case {
  adampi_kind kind;
  const char *field; /* expected in the message */
  double value;      /* value to set (nesterov: 0/1 as double) */
  const char *shown; /* expected rendering of the value in the message, or NULL */
} bad_case;

static void set_field(adampi_hparams *hp, const char *field, double v)
{
  if (!strcmp(field, "lr")) hp->lr = v;
  else if (!strcmp(field, "eps")) hp->eps = v;
  else if (!strcmp(field, "beta1")) hp->beta1 = v;
  else if (!strcmp(field, "beta2")) hp->beta2 = v;
  else if (!strcmp(field, "weight_decay")) hp->weight_decay = v;
  else if (!strcmp(field, "momentum")) hp->momentum = v;
  else if (!strcmp(field, "dampening")) hp->dampening = v;
  else if (!strcmp(field, "delta")) hp->delta = v;
  else if (!strcmp(field, "wd_ratio")) hp->wd_ratio = v;
  else if (!strcmp(field, "nesterov")) hp->nesterov = (int)v;
}

static const bad_case bad_cases[] = {
  {ADAMPI_ADAMP, "lr", -1e-3, "-0.001"},
  {ADAMPI_ADAMP, "lr", NAN, "nan"},
  {ADAMPI_ADAMP, "lr", INFINITY, "inf"},
  {ADAMPI_ADAMP, "eps", -1e-8, NULL},
  {ADAMPI_ADAMP, "beta1", 1.0, "= 1 "},
  {ADAMPI_ADAMP, "beta1", -0.1, NULL},
  {ADAMPI_ADAMP, "beta2", 1.0, NULL},
  {ADAMPI_ADAMP, "beta2", NAN, NULL},
  {ADAMPI_ADAMP, "weight_decay", -0.01, NULL},
  {ADAMPI_ADAMP, "delta", -0.1, NULL},
  {ADAMPI_ADAMP, "delta", INFINITY, NULL},
  {ADAMPI_ADAMP, "wd_ratio", -1.0, NULL},
  {ADAMPI_ADAMP, "nesterov", 2.0, "nesterov = 2"},
  {ADAMPI_SGDP, "lr", -0.1, NULL},
  {ADAMPI_SGDP, "momentum", -0.5, NULL},
  {ADAMPI_SGDP, "momentum", NAN, NULL},
  {ADAMPI_SGDP, "dampening", 1.5, "1.5"},
  {ADAMPI_SGDP, "dampening", -0.1, NULL},
  {ADAMPI_SGDP, "eps", NAN, NULL},
  {ADAMPI_SGDP, "wd_ratio", NAN, NULL},
  {ADAMPI_ADAMP, "beta1", NAN, NULL},
  {ADAMPI_ADAMP, "weight_decay", NAN, NULL},
  {ADAMPI_ADAMP, "weight_decay", INFINITY, NULL},
  {ADAMPI_ADAMP, "delta", NAN, NULL},
  {ADAMPI_ADAMP, "eps", NAN, NULL},
  {ADAMPI_ADAMP, "nesterov", -1.0, NULL},
  {ADAMPI_SGDP, "dampening", NAN, NULL},
  {ADAMPI_SGDP, "lr", INFINITY, NULL},
};

START_TEST(each_invalid_value_is_named)
{
  const bad_case *c = &bad_cases[_i];
  adampi_hparams hp = c->kind == ADAMPI_ADAMP ? adampi_adamp_defaults() : adampi_sgdp_defaults(0.1);
  set_field(&hp, c->field, c->value);
  char msg[512] = "";
  adampi_status st = adampi_hparams_check(c->kind, &hp, msg, sizeof msg);
  ck_assert_msg(st == ADAMPI_ERR_HPARAM, "%s = %g accepted (status %d)", c->field, c->value, st);
  ck_assert_msg(strstr(msg, c->field) != NULL, "message '%s' does not name %s", msg, c->field);
  if (c->shown) ck_assert_msg(strstr(msg, c->shown) != NULL, "message '%s' does not show '%s'", msg, c->shown);
}
END_TEST

START_TEST(sgdp_rules_that_combine_fields)
{
  char msg[512];
  adampi_hparams hp = adampi_sgdp_defaults(0.1);
  hp.momentum = 1.0;
  ck_assert_msg(adampi_hparams_check(ADAMPI_SGDP, &hp, msg, sizeof msg) == ADAMPI_OK,
                "momentum 1 without weight decay must be accepted: %s", msg);
  hp.weight_decay = 1e-4;
  ck_assert_msg(adampi_hparams_check(ADAMPI_SGDP, &hp, msg, sizeof msg) == ADAMPI_ERR_HPARAM,
                "momentum 1 with weight decay must be refused (SGDP divides by 1 - momentum)");
  ck_assert_msg(strstr(msg, "momentum") && strstr(msg, "weight_decay"), "message: %s", msg);

  hp = adampi_sgdp_defaults(0.1);
  hp.nesterov = 1;
  ck_assert_msg(adampi_hparams_check(ADAMPI_SGDP, &hp, msg, sizeof msg) == ADAMPI_ERR_HPARAM,
                "nesterov without momentum must be refused");
  ck_assert_msg(strstr(msg, "nesterov") != NULL, "message: %s", msg);
  hp.momentum = 0.9;
  hp.dampening = 0.1;
  ck_assert_msg(adampi_hparams_check(ADAMPI_SGDP, &hp, msg, sizeof msg) == ADAMPI_ERR_HPARAM,
                "nesterov with dampening must be refused");
  hp.dampening = 0.0;
  ck_assert_msg(adampi_hparams_check(ADAMPI_SGDP, &hp, msg, sizeof msg) == ADAMPI_OK, "valid nesterov refused: %s", msg);
}
END_TEST

START_TEST(fields_of_the_other_optimizer_are_ignored)
{
  char msg[512];
  adampi_hparams hp = adampi_adamp_defaults();
  hp.momentum = -5.0; /* SGDP-only */
  hp.dampening = 7.0;
  ck_assert_msg(adampi_hparams_check(ADAMPI_ADAMP, &hp, msg, sizeof msg) == ADAMPI_OK, "AdamP checked momentum: %s", msg);
  hp = adampi_sgdp_defaults(0.1);
  hp.beta1 = 3.0; /* AdamP-only */
  ck_assert_msg(adampi_hparams_check(ADAMPI_SGDP, &hp, msg, sizeof msg) == ADAMPI_OK, "SGDP checked beta1: %s", msg);
  hp = adampi_adamp_defaults();
  hp.lr = 0.0;
  hp.eps = 0.0;
  hp.beta1 = 0.0;
  hp.delta = 0.0;
  ck_assert_msg(adampi_hparams_check(ADAMPI_ADAMP, &hp, msg, sizeof msg) == ADAMPI_OK, "boundary values refused: %s", msg);
}
END_TEST

START_TEST(invalid_group_changes_nothing)
{
  adampi_config cfg = adampi_config_defaults(ADAMPI_ADAMP);
  adampi *opt = NULL;
  char err[256];
  ck_assert_int_eq(adampi_create(MPI_COMM_WORLD, &cfg, &opt, err, sizeof err), ADAMPI_OK);
  adampi_hparams hp = adampi_adamp_defaults();
  hp.beta2 = 1.5;
  int gid = -7;
  ck_assert_int_eq(adampi_add_group(opt, &hp, &gid), ADAMPI_ERR_HPARAM);
  ck_assert_msg(strstr(adampi_last_error(opt), "beta2 = 1.5") != NULL, "message: %s", adampi_last_error(opt));
  ck_assert_int_eq(gid, -7);
  ck_assert_int_eq(adampi_num_groups(opt), 0);
  hp = adampi_adamp_defaults();
  ck_assert_ok(opt, adampi_add_group(opt, &hp, &gid));
  ck_assert_int_eq(adampi_set_lr(opt, 0, -1.0), ADAMPI_ERR_HPARAM);
  ck_assert_msg(strstr(adampi_last_error(opt), "lr = -1") != NULL, "message: %s", adampi_last_error(opt));
  adampi_hparams now;
  adampi_get_hparams(opt, 0, &now);
  ck_assert_msg(now.lr == 1e-3, "lr changed by a refused set_lr: %g", now.lr);
  adampi_hparams bad = now;
  bad.weight_decay = NAN;
  ck_assert_int_eq(adampi_set_hparams(opt, 0, &bad), ADAMPI_ERR_HPARAM);
  ck_assert_msg(strstr(adampi_last_error(opt), "weight_decay") != NULL, "message: %s", adampi_last_error(opt));
  adampi_hparams after;
  adampi_get_hparams(opt, 0, &after);
  ck_assert_msg(test_hparams_same(&now, &after), "a refused set_hparams changed the group");
  ck_assert_int_eq(adampi_set_hparams(opt, 1, &now), ADAMPI_ERR_ARG);
  ck_assert_int_eq(adampi_set_hparams(opt, 0, NULL), ADAMPI_ERR_ARG);
  ck_assert_int_eq(adampi_set_lr(opt, 3, 0.1), ADAMPI_ERR_ARG);
  ck_assert_int_eq(adampi_add_group(opt, NULL, &gid), ADAMPI_ERR_ARG);
  adampi_free(&opt);
  ck_assert_ptr_null(opt);
  adampi_free(&opt); /* NULL-safe */
  adampi_free(NULL);
}
END_TEST

START_TEST(bad_config_is_refused_on_every_rank)
{
  adampi_config cfg = adampi_config_defaults(ADAMPI_SGDP);
  cfg.kind = (adampi_kind)7;
  adampi *opt = NULL;
  char err[256] = "";
  ck_assert_int_eq(adampi_create(MPI_COMM_WORLD, &cfg, &opt, err, sizeof err), ADAMPI_ERR_ARG);
  ck_assert_ptr_null(opt);
  ck_assert_msg(strstr(err, "kind") != NULL, "message: %s", err);
  ck_assert_int_eq(adampi_create(MPI_COMM_WORLD, NULL, &opt, err, sizeof err), ADAMPI_ERR_ARG);
  ck_assert_str_eq(adampi_strerror(ADAMPI_ERR_NONFINITE), "non-finite value");
}
END_TEST

static Suite *make_suite(void)
{
  Suite *s = suite_create("hparams");
  TCase *tc = tcase_create("validation");
  tcase_add_loop_test(tc, each_invalid_value_is_named, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
  tcase_add_test(tc, sgdp_rules_that_combine_fields);
  tcase_add_test(tc, fields_of_the_other_optimizer_are_ignored);
  tcase_add_test(tc, invalid_group_changes_nothing);
  tcase_add_test(tc, bad_config_is_refused_on_every_rank);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) { return run_mpi_suite(argc, argv, make_suite); }
