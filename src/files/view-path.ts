/**
 * View paths of a restore point's files ("/part1/etc/hosts"), without the filesystem readers, so
 * commands answered from the catalog can parse them without loading those.
 */
import { VmvaultError } from '../core/errors.js';

/** Splits a view path into its parts, rejecting `..` escapes. */
export function splitPath(path: string): string[] {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new VmvaultError('E_USAGE', `paths may not contain '..': ${path}`);
  return parts;
}
