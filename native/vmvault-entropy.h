/* vmvault_native: sampled order-0 entropy (entropy.c). */
#ifndef VMVAULT_ENTROPY_H
#define VMVAULT_ENTROPY_H
#include <node_api.h>
void vmvault_entropy_register(napi_env env, napi_value exports);
#endif
