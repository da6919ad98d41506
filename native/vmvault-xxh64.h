/* vmvault_native: XXH64 (xxh64.c). */
#ifndef VMVAULT_XXH64_H
#define VMVAULT_XXH64_H
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>
uint64_t vmvault_xxh64(const uint8_t *p, size_t len);
void vmvault_xxh64_register(napi_env env, napi_value exports);
#endif
