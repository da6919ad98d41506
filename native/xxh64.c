/*
 * vmvault_native: XXH64 (seed 0), the hash zstd frames carry as their content checksum (its low
 * 32 bits, little-endian). vmvault writes frames of raw blocks for chunks that do not compress;
 * when it skips the compression attempt it computes their checksum here. Written from the
 * algorithm's description (xxHash specification, XXH64).
 *
 *   xxh64(data) -> bigint
 */
#include <stdint.h>
#include <string.h>

#include "vmvault-napi.h"
#include "vmvault-xxh64.h"

static const uint64_t P1 = 0x9E3779B185EBCA87ULL;
static const uint64_t P2 = 0xC2B2AE3D27D4EB4FULL;
static const uint64_t P3 = 0x165667B19E3779F9ULL;
static const uint64_t P4 = 0x85EBCA77C2B2AE63ULL;
static const uint64_t P5 = 0x27D4EB2F165667C5ULL;

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* Little-endian loads (x86-64 is little-endian; memcpy keeps them alignment-safe). */
static inline uint64_t load64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

static inline uint32_t load32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static inline uint64_t lane_round(uint64_t acc, uint64_t input) {
  acc += input * P2;
  acc = rotl64(acc, 31);
  return acc * P1;
}

static inline uint64_t merge_lane(uint64_t acc, uint64_t lane) {
  acc ^= lane_round(0, lane);
  return acc * P1 + P4;
}

uint64_t vmvault_xxh64(const uint8_t *p, size_t len) {
  const uint8_t *end = p + len;
  uint64_t h;
  if (len >= 32) {
    uint64_t v1 = P1 + P2, v2 = P2, v3 = 0, v4 = (uint64_t)0 - P1;
    const uint8_t *last_stripe = end - 32;
    do {
      v1 = lane_round(v1, load64(p));
      v2 = lane_round(v2, load64(p + 8));
      v3 = lane_round(v3, load64(p + 16));
      v4 = lane_round(v4, load64(p + 24));
      p += 32;
    } while (p <= last_stripe);
    h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
    h = merge_lane(h, v1);
    h = merge_lane(h, v2);
    h = merge_lane(h, v3);
    h = merge_lane(h, v4);
  } else {
    h = P5;
  }
  h += (uint64_t)len;
  for (; p + 8 <= end; p += 8) {
    h ^= lane_round(0, load64(p));
    h = rotl64(h, 27) * P1 + P4;
  }
  if (p + 4 <= end) {
    h ^= (uint64_t)load32(p) * P1;
    h = rotl64(h, 23) * P2 + P3;
    p += 4;
  }
  for (; p < end; p++) {
    h ^= (uint64_t)(*p) * P5;
    h = rotl64(h, 11) * P1;
  }
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

static napi_value js_xxh64(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *data;
  size_t len;
  if (argc < 1 || !vmvault_bytes(env, argv[0], &data, &len)) {
    napi_throw_type_error(env, NULL, "xxh64(data: Uint8Array)");
    return NULL;
  }
  napi_value out;
  napi_create_bigint_uint64(env, vmvault_xxh64((const uint8_t *)data, len), &out);
  return out;
}

void vmvault_xxh64_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"xxh64", NULL, js_xxh64, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
