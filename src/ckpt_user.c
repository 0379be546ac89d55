/*
 * ckpt_user.c - the caller area of a checkpoint: up to ADAMPI_USER_MAX named int64 values
 * (adampi_user_set / adampi_user_get), stored as the attributes of /user.
 */
#include "checkpoint.h"

#include <stdio.h>
#include <string.h>

int adampi__ckpt_valid_user_name(const char *name)
{
  size_t n = name ? strlen(name) : 0;
  return n > 0 && n < ADAMPI_USER_NAME && strchr(name, '/') == NULL && strcmp(name, ".") != 0;
}

adampi_status adampi_user_set(adampi_user *user, const char *name, int64_t value)
{
  if (user == NULL || !adampi__ckpt_valid_user_name(name)) return ADAMPI_ERR_ARG;
  for (int i = 0; i < user->count; i++)
    if (strcmp(user->name[i], name) == 0) {
      user->value[i] = value;
      return ADAMPI_OK;
    }
  if (user->count < 0 || user->count >= ADAMPI_USER_MAX) return ADAMPI_ERR_ARG;
  snprintf(user->name[user->count], ADAMPI_USER_NAME, "%s", name);
  user->value[user->count++] = value;
  return ADAMPI_OK;
}

adampi_status adampi_user_get(const adampi_user *user, const char *name, int64_t *value)
{
  if (user == NULL || name == NULL || value == NULL) return ADAMPI_ERR_ARG;
  for (int i = 0; i < user->count && i < ADAMPI_USER_MAX; i++)
    if (strcmp(user->name[i], name) == 0) {
      *value = user->value[i];
      return ADAMPI_OK;
    }
  return ADAMPI_ERR_ARG;
}

int adampi__ckpt_write_user(adampi__writer *w, hid_t f, const adampi_user *user)
{
  hid_t u = adampi__ckpt_make_group(f, "user");
  int bad = ADAMPI_H5(w, u);
  for (int i = 0; user && i < user->count && !bad; i++) bad |= ADAMPI_H5(w, adampi__h5_put_int(u, user->name[i], user->value[i]));
  if (u >= 0) H5Gclose(u);
  return bad;
}

adampi_status adampi__ckpt_read_user(adampi *opt, hid_t f, const char *path, adampi_user *user)
{
  memset(user, 0, sizeof *user);
  if (H5Lexists(f, "user", H5P_DEFAULT) <= 0) return ADAMPI_OK;
  hid_t u = H5Gopen2(f, "user", H5P_DEFAULT);
  H5O_info_t oi;
  char msg[600] = "";
  int bad = u < 0 || H5Oget_info2(u, &oi, H5O_INFO_NUM_ATTRS) < 0 || oi.num_attrs > ADAMPI_USER_MAX;
  for (hsize_t k = 0; !bad && k < oi.num_attrs; k++) {
    char name[ADAMPI_USER_NAME + 8];
    ssize_t len = H5Aget_name_by_idx(u, ".", H5_INDEX_CRT_ORDER, H5_ITER_INC, k, name, sizeof name, H5P_DEFAULT);
    if (len < 0) len = H5Aget_name_by_idx(u, ".", H5_INDEX_NAME, H5_ITER_INC, k, name, sizeof name, H5P_DEFAULT);
    int64_t v = 0;
    bad = len <= 0 || len >= ADAMPI_USER_NAME;
    if (!bad) bad = adampi__h5_get_int(u, "/user", name, &v, msg, sizeof msg) != ADAMPI_OK;
    if (!bad) bad = adampi_user_set(user, name, v) != ADAMPI_OK;
  }
  if (u >= 0) H5Gclose(u);
  if (bad)
    return ADAMPI_FAIL(opt, ADAMPI_ERR_FORMAT, "%s: /user holds values that are not named integers%s%s%s", path,
                       msg[0] ? " (" : "", msg, msg[0] ? ")" : "");
  return ADAMPI_OK;
}
