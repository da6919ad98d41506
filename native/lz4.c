/*
 * vmvault_native, LZ4 part: one LZ4 frame (lz4 frame format 1.6.x) per blob, with the content
 * size and the content checksum (XXH32) in the frame, so that a blob checks itself.
 *
 *   lz4Bound(n) -> number                     worst-case frame size for n content bytes
 *   lz4CompressInto(src, dst, at, level[, checksum]) -> n
 *                                             frame written to dst[at..at+n); checksum false
 *                                             leaves the XXH32 content checksum out
 *   lz4DecompressInto(frame, dst) -> n        content bytes written to dst; throws when the
 *                                             frame is damaged, its checksum fails, it has
 *                                             trailing bytes or does not fit dst
 */
#include <lz4frame.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmvault-lz4.h"
#include "vmvault-napi.h"

static void prefs_for(LZ4F_preferences_t *p, size_t n, int level, int checksum) {
  memset(p, 0, sizeof *p);
  /* The smallest block size that holds the content in one block: a reader whose output buffer
   * is exactly the content size then decodes straight into it, with no staging copy. */
  p->frameInfo.blockSizeID = n <= (64u << 10)    ? LZ4F_max64KB
                             : n <= (256u << 10) ? LZ4F_max256KB
                             : n <= (1u << 20)   ? LZ4F_max1MB
                                                 : LZ4F_max4MB;
  p->frameInfo.blockMode = LZ4F_blockIndependent;
  p->frameInfo.contentChecksumFlag = checksum ? LZ4F_contentChecksumEnabled : LZ4F_noContentChecksum;
  p->frameInfo.contentSize = (unsigned long long)n;
  p->compressionLevel = level;
  /* Each update is the whole content and is flushed at once: no internal staging buffer. */
  p->autoFlush = 1;
}

static napi_value number(napi_env env, int64_t n) {
  napi_value out;
  napi_create_int64(env, n, &out);
  return out;
}

static napi_value js_lz4_bound(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int64_t n;
  if (argc != 1 || napi_get_value_int64(env, argv[0], &n) != napi_ok || n < 0) {
    napi_throw_type_error(env, NULL, "lz4Bound(n)");
    return NULL;
  }
  LZ4F_preferences_t p;
  prefs_for(&p, (size_t)n, 0, 1);
  /* With auto-flush the bound includes the end mark and the content checksum. */
  return number(env, (int64_t)(LZ4F_HEADER_SIZE_MAX + LZ4F_compressBound((size_t)n, &p)));
}

/* The compression and decompression contexts of one addon instance (one per thread), made on
 * first use and kept: a fresh context per blob costs allocations and state resets each time. */
struct contexts {
  LZ4F_cctx *c;
  LZ4F_dctx *d;
};

static void free_contexts(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct contexts *x = data;
  if (x->c) LZ4F_freeCompressionContext(x->c);
  if (x->d) LZ4F_freeDecompressionContext(x->d);
  free(x);
}

static struct contexts *contexts_for(napi_env env) {
  void *data = NULL;
  if (napi_get_instance_data(env, &data) == napi_ok && data) return data;
  struct contexts *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  if (napi_set_instance_data(env, x, free_contexts, NULL) != napi_ok) {
    free(x);
    return NULL;
  }
  return x;
}

static LZ4F_cctx *cctx_for(napi_env env) {
  struct contexts *x = contexts_for(env);
  if (!x) return NULL;
  if (!x->c && LZ4F_isError(LZ4F_createCompressionContext(&x->c, LZ4F_VERSION))) x->c = NULL;
  return x->c;
}

static LZ4F_dctx *dctx_for(napi_env env) {
  struct contexts *x = contexts_for(env);
  if (!x) return NULL;
  if (!x->d && LZ4F_isError(LZ4F_createDecompressionContext(&x->d, LZ4F_VERSION))) x->d = NULL;
  return x->d;
}

static napi_value js_lz4_compress(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *src, *dst;
  size_t src_len, dst_len;
  int64_t at;
  int32_t level;
  bool checksum = true;
  if (argc >= 5 && napi_get_value_bool(env, argv[4], &checksum) != napi_ok) argc = 0;
  if (argc < 4 || !vmvault_bytes(env, argv[0], &src, &src_len) ||
      !vmvault_bytes(env, argv[1], &dst, &dst_len) ||
      napi_get_value_int64(env, argv[2], &at) != napi_ok ||
      napi_get_value_int32(env, argv[3], &level) != napi_ok || at < 0 || (size_t)at > dst_len) {
    napi_throw_type_error(env, NULL, "lz4CompressInto(src, dst, at, level[, checksum])");
    return NULL;
  }
  LZ4F_cctx *c = cctx_for(env);
  if (!c) {
    napi_throw_error(env, "E_LZ4", "cannot create an LZ4 compression context");
    return NULL;
  }
  LZ4F_preferences_t p;
  prefs_for(&p, src_len, level, checksum);
  char *out = (char *)dst + at;
  size_t room = dst_len - (size_t)at, n = 0;
  /* One frame: header, the content as one flushed update, end mark and content checksum. */
  size_t r = LZ4F_compressBegin(c, out, room, &p);
  if (!LZ4F_isError(r)) {
    n += r;
    r = LZ4F_compressUpdate(c, out + n, room - n, src, src_len, NULL);
  }
  if (!LZ4F_isError(r)) {
    n += r;
    r = LZ4F_compressEnd(c, out + n, room - n, NULL);
  }
  if (LZ4F_isError(r)) {
    napi_throw_error(env, "E_LZ4", LZ4F_getErrorName(r));
    return NULL;
  }
  return number(env, (int64_t)(n + r));
}

static napi_value js_lz4_decompress(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *src, *dst;
  size_t src_len, dst_len;
  if (argc != 2 || !vmvault_bytes(env, argv[0], &src, &src_len) ||
      !vmvault_bytes(env, argv[1], &dst, &dst_len)) {
    napi_throw_type_error(env, NULL, "lz4DecompressInto(frame, dst)");
    return NULL;
  }
  LZ4F_dctx *d = dctx_for(env);
  if (!d) {
    napi_throw_error(env, "E_LZ4", "cannot create an LZ4 decompression context");
    return NULL;
  }
  size_t in_done = 0, out_done = 0;
  const char *why = NULL;
  for (;;) {
    size_t in_n = src_len - in_done, out_n = dst_len - out_done;
    size_t r = LZ4F_decompress(d, (char *)dst + out_done, &out_n, (const char *)src + in_done,
                               &in_n, NULL);
    in_done += in_n;
    out_done += out_n;
    if (LZ4F_isError(r)) {
      why = LZ4F_getErrorName(r);
      break;
    }
    if (r == 0) break; /* frame complete, checksum verified */
    if (in_done == src_len) {
      why = "truncated frame";
      break;
    }
    if (out_done == dst_len && in_n == 0 && out_n == 0) {
      why = "content larger than expected";
      break;
    }
  }
  if (why) {
    LZ4F_resetDecompressionContext(d);
    napi_throw_error(env, "E_LZ4", why);
    return NULL;
  }
  if (in_done != src_len) {
    napi_throw_error(env, "E_LZ4", "trailing bytes after the frame");
    return NULL;
  }
  return number(env, (int64_t)out_done);
}

void vmvault_lz4_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"lz4Bound", NULL, js_lz4_bound, NULL, NULL, NULL, napi_default, NULL},
      {"lz4CompressInto", NULL, js_lz4_compress, NULL, NULL, NULL, napi_default, NULL},
      {"lz4DecompressInto", NULL, js_lz4_decompress, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
