/*
 * h5attr.c - HDF5 attributes read by the rules of h5io.h (every string form, integers of any
 * width, float32/float64, numpy bools) and written as adampi writes them. Shared by the checkpoint
 * code and the replay-file reader; it knows nothing of either format.
 *
 * Integers are decoded from their stored bits here rather than converted by HDF5, which clips a
 * value that does not fit the memory type to its largest value without saying so (a uint64 of
 * 2^64 - 1 would read as INT64_MAX).
 */
#include "h5io.h"
#include "hparams_table.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest fixed-length string read (the file says how long; a fuzzed size must not make us
 * allocate gigabytes). */
#define MAX_STRING_BYTES 65536
/* Widest integer decoded: 512 bits (HDF5 allows any precision). */
#define MAX_INT_BYTES 64

static adampi_status refuse(char *msg, size_t msg_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static adampi_status refuse(char *msg, size_t msg_len, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  if (msg && msg_len) vsnprintf(msg, msg_len, fmt, ap);
  va_end(ap);
  return ADAMPI_ERR_FORMAT;
}

void adampi__h5_quiet_begin(adampi__h5_quiet *q)
{
  q->saved = H5Eget_auto2(H5E_DEFAULT, &q->fn, &q->data) >= 0;
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void adampi__h5_quiet_end(adampi__h5_quiet *q)
{
  if (q->saved) H5Eset_auto2(H5E_DEFAULT, q->fn, q->data);
  q->saved = 0;
}

int adampi__h5_has(hid_t obj, const char *name) { return H5Aexists(obj, name) > 0; }

/* 1 if t is an enum of exactly two members named FALSE and TRUE (numpy's bool, as h5py stores it). */
static int is_bool_enum(hid_t t)
{
  if (H5Tget_class(t) != H5T_ENUM || H5Tget_nmembers(t) != 2) return 0;
  int seen = 0;
  for (unsigned k = 0; k < 2; k++) {
    char *name = H5Tget_member_name(t, k);
    if (name && strcmp(name, "FALSE") == 0) seen |= 1;
    if (name && strcmp(name, "TRUE") == 0) seen |= 2;
    if (name) H5free_memory(name);
  }
  return seen == 3;
}

/* What type t is, for messages: "a 32-bit signed integer", "a variable-length UTF-8 string". */
static void type_text(hid_t t, char *buf, size_t len)
{
  size_t size = H5Tget_size(t);
  switch (H5Tget_class(t)) {
  case H5T_INTEGER:
    snprintf(buf, len, "a %zu-bit %s integer", H5Tget_precision(t), H5Tget_sign(t) == H5T_SGN_NONE ? "unsigned" : "signed");
    break;
  case H5T_FLOAT: snprintf(buf, len, "a %zu-bit float", 8 * size); break;
  case H5T_STRING:
    if (H5Tis_variable_str(t) > 0)
      snprintf(buf, len, "a variable-length %s string", H5Tget_cset(t) == H5T_CSET_UTF8 ? "UTF-8" : "ASCII");
    else
      snprintf(buf, len, "a fixed-length %s string of %zu bytes", H5Tget_cset(t) == H5T_CSET_UTF8 ? "UTF-8" : "ASCII", size);
    break;
  case H5T_ENUM:
    if (is_bool_enum(t)) snprintf(buf, len, "a boolean (an enum FALSE/TRUE)");
    else snprintf(buf, len, "an enum of %d members", H5Tget_nmembers(t));
    break;
  case H5T_COMPOUND: snprintf(buf, len, "a compound of %d members", H5Tget_nmembers(t)); break;
  case H5T_ARRAY: snprintf(buf, len, "an HDF5 array type of %d dimensions", H5Tget_array_ndims(t)); break;
  case H5T_VLEN: snprintf(buf, len, "a variable-length sequence"); break;
  case H5T_OPAQUE: snprintf(buf, len, "an opaque value of %zu bytes", size); break;
  case H5T_BITFIELD: snprintf(buf, len, "a %zu-bit bitfield", H5Tget_precision(t)); break;
  case H5T_REFERENCE: snprintf(buf, len, "a reference"); break;
  case H5T_TIME: snprintf(buf, len, "a time value"); break;
  default: snprintf(buf, len, "a value of an unknown HDF5 type class"); break;
  }
}

/* Open attribute name of obj and its type, if it is a scalar; wanted ("a string") is for the
 * message. On failure nothing stays open. */
static adampi_status open_scalar(hid_t obj, const char *where, const char *name, const char *wanted, hid_t *a, hid_t *type,
                                 char *msg, size_t msg_len)
{
  adampi_status st = ADAMPI_OK;
  hid_t space = H5I_INVALID_HID;
  *a = *type = H5I_INVALID_HID;
  if (H5Aexists(obj, name) <= 0) return refuse(msg, msg_len, "%s: attribute '%s' is missing", where, name);
  if ((*a = H5Aopen(obj, name, H5P_DEFAULT)) < 0) {
    st = refuse(msg, msg_len, "%s: attribute '%s' cannot be read (H5Aopen failed)", where, name);
    goto done;
  }
  if ((*type = H5Aget_type(*a)) < 0 || (space = H5Aget_space(*a)) < 0) {
    st = refuse(msg, msg_len, "%s: attribute '%s' cannot be read (%s failed)", where, name,
                *type < 0 ? "H5Aget_type" : "H5Aget_space");
    goto done;
  }
  H5S_class_t shape = H5Sget_simple_extent_type(space);
  if (shape != H5S_SCALAR) {
    char found[128], dims_text[160] = "";
    type_text(*type, found, sizeof found);
    hsize_t dims[H5S_MAX_RANK];
    int nd = shape == H5S_SIMPLE ? H5Sget_simple_extent_dims(space, dims, NULL) : -1;
    for (int k = 0, n = 0; k < nd && n >= 0 && (size_t)n < sizeof dims_text; k++)
      n += snprintf(dims_text + n, sizeof dims_text - (size_t)n, "%s%llu", k ? ", " : "", (unsigned long long)dims[k]);
    if (nd >= 0)
      st = refuse(msg, msg_len, "%s: attribute '%s' must be %s, not an array; it is an array of shape [%s] (elements: %s)",
                  where, name, wanted, dims_text, found);
    else
      st = refuse(msg, msg_len, "%s: attribute '%s' must be %s; it holds no value (an empty dataspace of %s)", where, name,
                  wanted, found);
  }
done:
  if (space >= 0) H5Sclose(space);
  if (st != ADAMPI_OK) {
    if (*type >= 0) H5Tclose(*type);
    if (*a >= 0) H5Aclose(*a);
    *a = *type = H5I_INVALID_HID;
  }
  return st;
}

static void close_scalar(hid_t a, hid_t type)
{
  if (type >= 0) H5Tclose(type);
  if (a >= 0) H5Aclose(a);
}

static adampi_status wrong_type(hid_t type, const char *where, const char *name, const char *wanted, char *msg,
                                size_t msg_len)
{
  char found[128];
  type_text(type, found, sizeof found);
  return refuse(msg, msg_len, "%s: attribute '%s' must be %s; it is %s", where, name, wanted, found);
}

/* The value of an integer attribute from its stored bits (any precision, offset, byte order and
 * sign): the low 64 bits in two's complement (*low), whether it is negative (*neg), and whether
 * bits above the 64th are more than a sign extension (*wide). -1 if it cannot be read. */
static int decode_integer(hid_t a, hid_t type, uint64_t *low, int *neg, int *wide)
{
  unsigned char b[MAX_INT_BYTES];
  size_t size = H5Tget_size(type), prec = H5Tget_precision(type), off = H5Tget_offset(type);
  if (size == 0 || size > sizeof b || prec == 0 || off + prec > 8 * size) return -1;
  hid_t m = H5Tcopy(type); /* the same type in little-endian order: no conversion can clip */
  int bad = m < 0 || H5Tset_order(m, H5T_ORDER_LE) < 0 || H5Aread(a, m, b) < 0;
  if (m >= 0) H5Tclose(m);
  if (bad) return -1;
#define BIT(k) ((unsigned)(b[(off + (k)) / 8] >> ((off + (k)) % 8)) & 1u)
  *neg = H5Tget_sign(type) == H5T_SGN_2 && BIT(prec - 1);
  *low = 0;
  for (size_t k = 0; k < 64; k++) *low |= (uint64_t)(k < prec ? BIT(k) : (unsigned)*neg) << k;
  *wide = 0;
  for (size_t k = 64; k < prec; k++) *wide |= BIT(k) != (unsigned)*neg;
#undef BIT
  return 0;
}

/* The decoded value for a message. */
static void value_text(uint64_t low, int neg, int wide, char *buf, size_t len)
{
  if (wide) snprintf(buf, len, "%s", neg ? "a value below -2^63" : "a value of 2^64 or more");
  else if (neg && (low >> 63)) snprintf(buf, len, "%" PRId64, (int64_t)low);
  else if (neg) snprintf(buf, len, "a value below -2^63");
  else snprintf(buf, len, "%" PRIu64, low);
}

/* An integer attribute already open as (a, type) into *v, if it fits in int64. */
static adampi_status integer_value(hid_t a, hid_t type, const char *where, const char *name, int64_t *v, char *msg,
                                   size_t msg_len)
{
  uint64_t low;
  int neg, wide;
  if (decode_integer(a, type, &low, &neg, &wide) != 0)
    return refuse(msg, msg_len, "%s: attribute '%s' cannot be read (H5Aread failed)", where, name);
  if (wide || (uint64_t)neg != (low >> 63)) {
    char text[64], found[128];
    value_text(low, neg, wide, text, sizeof text);
    type_text(type, found, sizeof found);
    return refuse(msg, msg_len, "%s: attribute '%s' (%s) holds %s, which does not fit in a signed 64-bit integer", where,
                  name, found, text);
  }
  memcpy(v, &low, sizeof *v);
  return ADAMPI_OK;
}

adampi_status adampi__h5_get_int(hid_t obj, const char *where, const char *name, int64_t *v, char *msg, size_t msg_len)
{
  hid_t a, type;
  adampi_status st = open_scalar(obj, where, name, "an integer", &a, &type, msg, msg_len);
  if (st != ADAMPI_OK) return st;
  int64_t x = 0;
  if (H5Tget_class(type) != H5T_INTEGER) st = wrong_type(type, where, name, "an integer", msg, msg_len);
  else st = integer_value(a, type, where, name, &x, msg, msg_len);
  close_scalar(a, type);
  if (st == ADAMPI_OK) *v = x;
  return st;
}

adampi_status adampi__h5_get_uint(hid_t obj, const char *where, const char *name, uint64_t *v, char *msg, size_t msg_len)
{
  hid_t a, type;
  adampi_status st = open_scalar(obj, where, name, "an unsigned integer", &a, &type, msg, msg_len);
  if (st != ADAMPI_OK) return st;
  uint64_t low = 0;
  int neg = 0, wide = 0;
  if (H5Tget_class(type) != H5T_INTEGER) st = wrong_type(type, where, name, "an unsigned integer", msg, msg_len);
  else if (decode_integer(a, type, &low, &neg, &wide) != 0)
    st = refuse(msg, msg_len, "%s: attribute '%s' cannot be read (H5Aread failed)", where, name);
  else if (neg || wide) {
    char text[64];
    value_text(low, neg, wide, text, sizeof text);
    st = refuse(msg, msg_len, "%s: attribute '%s' holds %s, which does not fit in an unsigned 64-bit integer", where, name,
                text);
  }
  close_scalar(a, type);
  if (st == ADAMPI_OK) *v = low;
  return st;
}

adampi_status adampi__h5_get_float(hid_t obj, const char *where, const char *name, double *v, char *msg, size_t msg_len)
{
  static const char wanted[] = "a float32 or float64 number";
  hid_t a, type;
  adampi_status st = open_scalar(obj, where, name, wanted, &a, &type, msg, msg_len);
  if (st != ADAMPI_OK) return st;
  double x = 0.0;
  H5T_class_t cls = H5Tget_class(type);
  size_t size = H5Tget_size(type);
  if (cls == H5T_FLOAT && (size == 4 || size == 8)) {
    if (H5Aread(a, H5T_NATIVE_DOUBLE, &x) < 0)
      st = refuse(msg, msg_len, "%s: attribute '%s' cannot be read (H5Aread failed)", where, name);
  } else if (cls == H5T_INTEGER) { /* h5py stores a Python int (weight_decay = 0) as int64 */
    int64_t i = 0;
    st = integer_value(a, type, where, name, &i, msg, msg_len);
    if (st == ADAMPI_OK && (i > ((int64_t)1 << 53) || i < -((int64_t)1 << 53)))
      st = refuse(msg, msg_len, "%s: attribute '%s' = %" PRId64 " is an integer that a double cannot hold exactly", where,
                  name, i);
    x = (double)i;
  } else {
    st = wrong_type(type, where, name, wanted, msg, msg_len);
  }
  close_scalar(a, type);
  if (st == ADAMPI_OK) *v = x;
  return st;
}

adampi_status adampi__h5_get_bool(hid_t obj, const char *where, const char *name, int64_t *v, char *msg, size_t msg_len)
{
  static const char wanted[] = "a boolean (a numpy bool or an integer)";
  hid_t a, type;
  adampi_status st = open_scalar(obj, where, name, wanted, &a, &type, msg, msg_len);
  if (st != ADAMPI_OK) return st;
  int64_t x = 0;
  if (H5Tget_class(type) == H5T_INTEGER) {
    st = integer_value(a, type, where, name, &x, msg, msg_len);
  } else if (is_bool_enum(type) && H5Tget_size(type) <= MAX_INT_BYTES) {
    /* read in the enum's own type (no conversion), then name the value */
    unsigned char raw[MAX_INT_BYTES];
    char member[8] = "";
    hid_t m = H5Tcopy(type);
    if (m < 0 || H5Aread(a, m, raw) < 0)
      st = refuse(msg, msg_len, "%s: attribute '%s' cannot be read (H5Aread failed)", where, name);
    else if (H5Tenum_nameof(type, raw, member, sizeof member) < 0 || (strcmp(member, "FALSE") && strcmp(member, "TRUE")))
      st = refuse(msg, msg_len, "%s: attribute '%s' is a boolean enum holding a value that is neither FALSE nor TRUE", where,
                  name);
    else
      x = strcmp(member, "TRUE") == 0;
    if (m >= 0) H5Tclose(m);
  } else {
    st = wrong_type(type, where, name, wanted, msg, msg_len);
  }
  close_scalar(a, type);
  if (st == ADAMPI_OK) *v = x;
  return st;
}

/* Cut raw string bytes at the first NUL and drop a space-padded string's padding; copy into out. */
static adampi_status finish_string(const char *raw, size_t n, H5T_str_t pad, char *out, size_t len, const char *where,
                                   const char *name, char *msg, size_t msg_len)
{
  const char *nul = memchr(raw, '\0', n);
  if (nul) n = (size_t)(nul - raw);
  if (pad == H5T_STR_SPACEPAD)
    while (n > 0 && raw[n - 1] == ' ') n--;
  if (n >= len)
    return refuse(msg, msg_len, "%s: attribute '%s' is too long (%zu bytes, at most %zu)", where, name, n, len - 1);
  memcpy(out, raw, n);
  out[n] = '\0';
  return ADAMPI_OK;
}

adampi_status adampi__h5_get_string(hid_t obj, const char *where, const char *name, char *out, size_t len, char *msg,
                                    size_t msg_len)
{
  hid_t a, type, m = H5I_INVALID_HID;
  adampi_status st = open_scalar(obj, where, name, "a string", &a, &type, msg, msg_len);
  if (st != ADAMPI_OK) return st;
  if (H5Tget_class(type) != H5T_STRING) {
    st = wrong_type(type, where, name, "a string", msg, msg_len);
    goto done;
  }
  /* The memory type keeps the file's character set and padding: HDF5 refuses to convert between
   * ASCII and UTF-8 (h5py writes UTF-8), and the padding is interpreted below. */
  H5T_str_t pad = H5Tget_strpad(type);
  m = H5Tcopy(H5T_C_S1);
  if (m < 0 || H5Tset_cset(m, H5Tget_cset(type)) < 0 || H5Tset_strpad(m, pad) < 0) {
    st = refuse(msg, msg_len, "%s: attribute '%s' cannot be read (H5Tcopy or H5Tset_cset failed)", where, name);
    goto done;
  }
  if (H5Tis_variable_str(type) > 0) {
    char *s = NULL;
    if (H5Tset_size(m, H5T_VARIABLE) < 0 || H5Aread(a, m, &s) < 0)
      st = refuse(msg, msg_len, "%s: attribute '%s' cannot be read (H5Aread failed)", where, name);
    else
      st = finish_string(s ? s : "", s ? strlen(s) : 0, pad, out, len, where, name, msg, msg_len);
    if (s) H5free_memory(s);
  } else {
    size_t size = H5Tget_size(type);
    char *raw = size > 0 && size <= MAX_STRING_BYTES ? malloc(size) : NULL;
    if (size == 0 || size > MAX_STRING_BYTES)
      st = refuse(msg, msg_len, "%s: attribute '%s' is too long (%zu bytes, at most %zu)", where, name, size, len - 1);
    else if (raw == NULL)
      st = refuse(msg, msg_len, "%s: attribute '%s': no memory for %zu bytes", where, name, size);
    else if (H5Tset_size(m, size) < 0 || H5Aread(a, m, raw) < 0)
      st = refuse(msg, msg_len, "%s: attribute '%s' cannot be read (H5Aread failed)", where, name);
    else
      st = finish_string(raw, size, pad, out, len, where, name, msg, msg_len);
    free(raw);
  }
done:
  if (m >= 0) H5Tclose(m);
  close_scalar(a, type);
  return st;
}

static adampi_status get_REAL(hid_t obj, const char *where, const char *name, double *v, char *msg, size_t msg_len)
{
  return adampi__h5_get_float(obj, where, name, v, msg, msg_len);
}

static adampi_status get_FLAG(hid_t obj, const char *where, const char *name, int *v, char *msg, size_t msg_len)
{
  int64_t x = 0;
  adampi_status st = adampi__h5_get_bool(obj, where, name, &x, msg, msg_len);
  if (st == ADAMPI_OK && x != 0 && x != 1)
    return refuse(msg, msg_len, "%s: %s = %" PRId64 " is invalid (must be 0 or 1)", where, name, x);
  if (st == ADAMPI_OK) *v = (int)x;
  return st;
}

adampi_status adampi__h5_get_hparams(hid_t obj, const char *where, adampi_hparams *hp, char *msg, size_t msg_len)
{
  adampi_hparams got = *hp;
  adampi_status st = ADAMPI_OK;
#define GET(field, kind) \
  if (st == ADAMPI_OK) st = get_##kind(obj, where, #field, &got.field, msg, msg_len);
  ADAMPI_HPARAMS_TABLE(GET)
#undef GET
  if (st == ADAMPI_OK) *hp = got;
  return st;
}

static int put_REAL(hid_t obj, const char *name, double v) { return adampi__h5_put_float(obj, name, v); }
static int put_FLAG(hid_t obj, const char *name, int v) { return adampi__h5_put_int(obj, name, v); }

int adampi__h5_put_hparams(hid_t obj, const adampi_hparams *hp)
{
  int bad = 0;
#define PUT(field, kind) \
  if (!bad) bad = put_##kind(obj, #field, hp->field) != 0;
  ADAMPI_HPARAMS_TABLE(PUT)
#undef PUT
  return bad ? -1 : 0;
}

int adampi__h5_put(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, hsize_t n, const void *v)
{
  hid_t space = n ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_SCALAR);
  hid_t a = space >= 0 ? H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT) : H5I_INVALID_HID;
  int bad = a < 0 || H5Awrite(a, mem_type, v) < 0;
  if (a >= 0 && H5Aclose(a) < 0) bad = 1;
  if (space >= 0) H5Sclose(space);
  return bad ? -1 : 0;
}

int adampi__h5_put_int(hid_t obj, const char *name, int64_t v)
{
  return adampi__h5_put(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &v);
}

int adampi__h5_put_float(hid_t obj, const char *name, double v)
{
  return adampi__h5_put(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, &v);
}

int adampi__h5_put_string(hid_t obj, const char *name, const char *text)
{
  hid_t t = H5Tcopy(H5T_C_S1);
  int bad = t < 0 || H5Tset_size(t, strlen(text) ? strlen(text) : 1) < 0 || adampi__h5_put(obj, name, t, t, 0, text) != 0;
  if (t >= 0) H5Tclose(t);
  return bad ? -1 : 0;
}
