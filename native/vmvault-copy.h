/* vmvault_native: memmove for shared memory (copy.c). */
#ifndef VMVAULT_COPY_H
#define VMVAULT_COPY_H
#include <node_api.h>
void vmvault_copy_register(napi_env env, napi_value exports);
#endif
