/*
 * vmvault_native: the few system calls Node.js does not expose.
 *
 *   lseek(fd, offset, whence) -> number   whence: 0 SET, 1 CUR, 2 END, 3 DATA, 4 HOLE
 *     returns -1 when the kernel answers ENXIO (no more data/hole past offset);
 *     throws on any other error.
 *   blkGetSize64(fd) -> number            size of a block device (BLKGETSIZE64)
 *   alignOffset(bytes, alignment) -> n    bytes to skip from the start of `bytes` (a
 *     Uint8Array) for an address that is a multiple of `alignment` (a power of two), as
 *     O_DIRECT writes need
 *   lz4Bound / lz4CompressInto / lz4DecompressInto   LZ4 frames (lz4.c)
 *   gcmSealInto / gcmOpenInto                        AES-256-GCM (gcm.c)
 *   copyInto                                         memmove into/out of shared memory (copy.c)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <node_api.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmvault-copy.h"
#include "vmvault-entropy.h"
#include "vmvault-gcm.h"
#include "vmvault-xxh64.h"
#include "vmvault-lz4.h"
#include "vmvault-napi.h"

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[128];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, err == EBADF ? "EBADF" : err == EINVAL ? "EINVAL" : "EIO", msg);
  return NULL;
}

static napi_value js_lseek(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 3) {
    napi_throw_type_error(env, NULL, "lseek(fd, offset, whence)");
    return NULL;
  }
  int32_t fd, whence;
  int64_t offset;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int32(env, argv[2], &whence) != napi_ok) {
    napi_throw_type_error(env, NULL, "lseek: numeric arguments expected");
    return NULL;
  }
  off_t r = lseek(fd, (off_t)offset, whence);
  if (r == (off_t)-1) {
    if (errno == ENXIO) {
      napi_value out;
      napi_create_int64(env, -1, &out);
      return out;
    }
    return throw_errno(env, "lseek", errno);
  }
  napi_value out;
  napi_create_int64(env, (int64_t)r, &out);
  return out;
}

static napi_value js_blk_size(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc != 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "blkGetSize64(fd)");
    return NULL;
  }
  uint64_t size = 0;
  if (ioctl(fd, BLKGETSIZE64, &size) != 0) return throw_errno(env, "ioctl(BLKGETSIZE64)", errno);
  napi_value out;
  napi_create_int64(env, (int64_t)size, &out);
  return out;
}

static napi_value js_align_offset(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *data = NULL;
  size_t len = 0;
  uint32_t align = 0;
  if (argc != 2 || !vmvault_bytes(env, argv[0], &data, &len) ||
      napi_get_value_uint32(env, argv[1], &align) != napi_ok || align == 0 || (align & (align - 1)) != 0) {
    napi_throw_type_error(env, NULL, "alignOffset(bytes, alignment): a Uint8Array and a power of two");
    return NULL;
  }
  uintptr_t addr = (uintptr_t)data;
  napi_value out;
  napi_create_uint32(env, (uint32_t)((align - (addr & (align - 1))) & (align - 1)), &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"lseek", NULL, js_lseek, NULL, NULL, NULL, napi_default, NULL},
      {"blkGetSize64", NULL, js_blk_size, NULL, NULL, NULL, napi_default, NULL},
      {"alignOffset", NULL, js_align_offset, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  vmvault_lz4_register(env, exports);
  vmvault_gcm_register(env, exports);
  vmvault_xxh64_register(env, exports);
  vmvault_entropy_register(env, exports);
  vmvault_copy_register(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
