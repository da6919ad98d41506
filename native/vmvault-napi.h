/* vmvault_native: N-API helpers shared by the addon's parts. */
#ifndef VMVAULT_NAPI_H
#define VMVAULT_NAPI_H
#include <node_api.h>
#include <stddef.h>

/* The bytes of a Uint8Array (a Buffer included); 0 when `v` is anything else. */
static inline int vmvault_bytes(napi_env env, napi_value v, void **data, size_t *len) {
  bool is_typed = false;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed) return 0;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &type, len, data, &ab, &off) != napi_ok) return 0;
  return type == napi_uint8_array;
}
#endif
