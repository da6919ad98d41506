/* vmvault_native: LZ4 frame functions (lz4.c). */
#ifndef VMVAULT_LZ4_H
#define VMVAULT_LZ4_H
#include <node_api.h>
void vmvault_lz4_register(napi_env env, napi_value exports);
#endif
