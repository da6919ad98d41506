/** Public surface of `backends`: where repository objects are stored. */
export type { Backend, ObjectInfo, ReadDescriptor } from './backend.js';
export { LocalBackend } from './local.js';
