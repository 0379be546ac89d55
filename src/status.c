/*
 * status.c - status texts and the per-handle record of the first failure of a call.
 * Library code reports errors only through these; it never prints.
 */
#include "internal.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

const char *adampi_strerror(adampi_status status)
{
  switch (status) {
#define ADAMPI_X_TEXT(name, value, text) \
  case name:                             \
    return text;
    ADAMPI_STATUS_TABLE(ADAMPI_X_TEXT)
#undef ADAMPI_X_TEXT
  }
  return "unknown status";
}

adampi_status adampi__fail(adampi *opt, adampi_status status, const char *file, int line,
                           const char *fmt, ...)
{
  if (opt == NULL || opt->err_set) return status;
  const char *base = strrchr(file, '/');
  char text[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  snprintf(opt->errmsg, sizeof opt->errmsg, "%s: %s (%s:%d)", adampi_strerror(status), text,
           base ? base + 1 : file, line);
  opt->err_set = 1;
  return status;
}

void adampi__clear_error(adampi *opt)
{
  opt->err_set = 0;
  opt->errmsg[0] = '\0';
}

const char *adampi_last_error(const adampi *opt)
{
  if (opt == NULL) return "no handle";
  return opt->err_set ? opt->errmsg : "no error";
}

adampi_status adampi__agree(adampi *opt, adampi_status st)
{
  int key = st != ADAMPI_OK ? opt->rank : INT_MAX, first = INT_MAX;
  if (MPI_Allreduce(&key, &first, 1, MPI_INT, MPI_MIN, opt->comm) != MPI_SUCCESS)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_MPI, "MPI_Allreduce failed while agreeing on a status");
  if (first == INT_MAX) return ADAMPI_OK;
  struct {
    int status;
    char msg[sizeof opt->errmsg];
  } report;
  report.status = (int)st;
  snprintf(report.msg, sizeof report.msg, "%s", opt->errmsg);
  if (MPI_Bcast(&report, (int)sizeof report, MPI_BYTE, first, opt->comm) != MPI_SUCCESS)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_MPI, "MPI_Bcast failed while agreeing on a status");
  if (opt->rank != first) {
    report.msg[sizeof report.msg - 1] = '\0';
    memcpy(opt->errmsg, report.msg, sizeof opt->errmsg);
    opt->err_set = 1;
  }
  return (adampi_status)report.status;
}
