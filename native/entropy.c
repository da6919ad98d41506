/*
 * vmvault_native: the order-0 entropy of sampled windows of a chunk, for the guess that it will
 * not compress (src/repository/compressibility.ts holds the rule and a pure-JS twin).
 *
 *   sampledEntropy(data, windows, window) -> bits per byte
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "vmvault-entropy.h"
#include "vmvault-napi.h"

/* c * log2(c) for the counts a sample of up to TABLE_MAX bytes can reach (made on first use). */
#define TABLE_MAX 4096
static double c_log_c[TABLE_MAX + 1];
static int table_ready = 0;

static double clogc(uint32_t c) {
  if (c <= TABLE_MAX) return c_log_c[c];
  return (double)c * log2((double)c);
}

static napi_value js_sampled_entropy(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *data;
  size_t len;
  uint32_t windows = 0, window = 0;
  if (argc < 3 || !vmvault_bytes(env, argv[0], &data, &len) ||
      napi_get_value_uint32(env, argv[1], &windows) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &window) != napi_ok || windows < 2 || window == 0 ||
      (size_t)window > len) {
    napi_throw_type_error(env, NULL, "sampledEntropy(data, windows >= 2, 0 < window <= data.length)");
    return NULL;
  }
  if (!table_ready) {
    for (uint32_t c = 2; c <= TABLE_MAX; c++) c_log_c[c] = (double)c * log2((double)c);
    table_ready = 1;
  }
  uint32_t counts[256];
  memset(counts, 0, sizeof counts);
  const uint8_t *p = (const uint8_t *)data;
  size_t step = (len - window) / (windows - 1);
  for (uint32_t w = 0; w < windows; w++) {
    const uint8_t *q = p + (size_t)w * step;
    for (uint32_t i = 0; i < window; i++) counts[q[i]]++;
  }
  double n = (double)windows * (double)window;
  double sum = 0;
  for (int b = 0; b < 256; b++) sum += clogc(counts[b]);
  napi_value out;
  napi_create_double(env, log2(n) - sum / n, &out);
  return out;
}

void vmvault_entropy_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"sampledEntropy", NULL, js_sampled_entropy, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
