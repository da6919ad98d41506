/*
 * vmvault_native, AES-256-GCM part: sealing and opening blobs with one OpenSSL cipher context
 * per thread, kept between calls, and no intermediate buffers. OpenSSL is the one inside
 * Node.js (its symbols are exported to addons; headers come with Node's). The output is
 * exactly what Node's createCipheriv('aes-256-gcm') gives, so either side opens the other's.
 *
 *   gcmSealInto(key, nonce, parts, dst, at) -> n   ciphertext of the concatenated parts, then
 *                                                  the 16-byte tag, written to dst[at..at+n)
 *   gcmOpenInto(key, nonce, body, tag, dst) -> ok  plaintext of body into dst; false when the
 *                                                  tag does not authenticate (dst is then
 *                                                  scratch)
 */
#include <node_api.h>
#include <openssl/evp.h>
#include <stdint.h>

#include "vmvault-gcm.h"
#include "vmvault-napi.h"

/* Most parts one seal takes (vmvault seals at most three: codec, digest, payload). */
#define MAX_PARTS 8

#define KEY_SIZE 32
#define NONCE_SIZE 12
#define TAG_SIZE 16

/* One context per thread (the main thread and each worker have their own Node environment). */
static __thread EVP_CIPHER_CTX *tls_ctx;

static void free_ctx(void *arg) {
  (void)arg;
  EVP_CIPHER_CTX_free(tls_ctx);
  tls_ctx = NULL;
}

static EVP_CIPHER_CTX *ctx_for(napi_env env) {
  if (!tls_ctx) {
    tls_ctx = EVP_CIPHER_CTX_new();
    if (tls_ctx && napi_add_env_cleanup_hook(env, free_ctx, NULL) != napi_ok) free_ctx(NULL);
  }
  return tls_ctx;
}

/* The bytes of a Uint8Array argument, typed for this file. */
static int bytes_of(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  void *p = NULL;
  int ok = vmvault_bytes(env, v, &p, len);
  *data = p;
  return ok;
}

static napi_value fail(napi_env env, const char *msg) {
  napi_throw_error(env, "E_GCM", msg);
  return NULL;
}

static napi_value js_seal(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint8_t *key, *nonce, *dst;
  size_t key_len, nonce_len, dst_len;
  int64_t at;
  uint32_t nparts = 0;
  bool is_array = false;
  if (argc != 5 || !bytes_of(env, argv[0], &key, &key_len) || key_len != KEY_SIZE ||
      !bytes_of(env, argv[1], &nonce, &nonce_len) || nonce_len != NONCE_SIZE ||
      napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[2], &nparts) != napi_ok ||
      !bytes_of(env, argv[3], &dst, &dst_len) || napi_get_value_int64(env, argv[4], &at) != napi_ok ||
      at < 0 || (size_t)at > dst_len) {
    napi_throw_type_error(env, NULL, "gcmSealInto(key, nonce, parts, dst, at)");
    return NULL;
  }
  if (nparts > MAX_PARTS) return fail(env, "gcmSealInto: too many parts");
  /* Collect and check every part and the room first: nothing is written unless all of it fits. */
  uint8_t *part_data[MAX_PARTS];
  size_t part_len[MAX_PARTS], total = 0;
  for (uint32_t i = 0; i < nparts; i++) {
    napi_value part;
    if (napi_get_element(env, argv[2], i, &part) != napi_ok ||
        !bytes_of(env, part, &part_data[i], &part_len[i])) {
      napi_throw_type_error(env, NULL, "gcmSealInto: parts must be Uint8Arrays");
      return NULL;
    }
    total += part_len[i];
  }
  if (total > INT32_MAX || dst_len - (size_t)at < total + TAG_SIZE) return fail(env, "gcmSealInto: dst too small");
  EVP_CIPHER_CTX *c = ctx_for(env);
  if (!c) return fail(env, "cannot create a cipher context");
  uint8_t *out = dst + at;
  int n = 0;
  if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) != 1) return fail(env, "AES-GCM init failed");
  for (uint32_t i = 0; i < nparts; i++) {
    if (part_len[i] == 0) continue;
    if (EVP_EncryptUpdate(c, out, &n, part_data[i], (int)part_len[i]) != 1) return fail(env, "AES-GCM encrypt failed");
    out += n;
  }
  if (EVP_EncryptFinal_ex(c, out, &n) != 1) return fail(env, "AES-GCM final failed");
  out += n;
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_SIZE, out) != 1) return fail(env, "AES-GCM tag failed");
  out += TAG_SIZE;
  napi_value res;
  napi_create_int64(env, (int64_t)(out - (dst + at)), &res);
  return res;
}

static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint8_t *key, *nonce, *body, *tag, *dst;
  size_t key_len, nonce_len, body_len, tag_len, dst_len;
  if (argc != 5 || !bytes_of(env, argv[0], &key, &key_len) || key_len != KEY_SIZE ||
      !bytes_of(env, argv[1], &nonce, &nonce_len) || nonce_len != NONCE_SIZE ||
      !bytes_of(env, argv[2], &body, &body_len) || !bytes_of(env, argv[3], &tag, &tag_len) ||
      tag_len != TAG_SIZE || !bytes_of(env, argv[4], &dst, &dst_len) || body_len > INT32_MAX) {
    napi_throw_type_error(env, NULL, "gcmOpenInto(key, nonce, body, tag, dst)");
    return NULL;
  }
  if (dst_len < body_len) return fail(env, "gcmOpenInto: dst too small");
  EVP_CIPHER_CTX *c = ctx_for(env);
  if (!c) return fail(env, "cannot create a cipher context");
  int n = 0, ok = EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) == 1;
  if (ok && body_len > 0) ok = EVP_DecryptUpdate(c, dst, &n, body, (int)body_len) == 1;
  /* The tag is copied by OpenSSL; the final call compares it in constant time. */
  if (ok) ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_SIZE, tag) == 1;
  if (ok) ok = EVP_DecryptFinal_ex(c, dst + n, &n) == 1;
  napi_value res;
  napi_get_boolean(env, ok != 0, &res);
  return res;
}

void vmvault_gcm_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"gcmSealInto", NULL, js_seal, NULL, NULL, NULL, napi_default, NULL},
      {"gcmOpenInto", NULL, js_open, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
