/* vmvault_native: AES-256-GCM functions (gcm.c). */
#ifndef VMVAULT_GCM_H
#define VMVAULT_GCM_H
#include <node_api.h>
void vmvault_gcm_register(napi_env env, napi_value exports);
#endif
