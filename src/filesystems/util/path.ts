/** Path handling shared by the filesystem readers. */
import { VmvaultError } from '../../core/errors.js';

/** Most components a path may have (hostile symlink chains are cut off here). */
export const MAX_PATH_COMPONENTS = 4096;

/** Splits an absolute or relative path into components, dropping empty ones and `.`. */
export function splitPath(path: string): string[] {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length > MAX_PATH_COMPONENTS) {
    throw new VmvaultError('E_USAGE', `path has more than ${MAX_PATH_COMPONENTS} components`);
  }
  return parts;
}

/** Joins a directory path and a name. */
export function joinPath(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}
