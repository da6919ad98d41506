/** Error helpers shared by the partition-table and filesystem readers. */
import { VmvaultError, isVmvaultError } from '../../core/errors.js';

/** A structure on disk is inconsistent or hostile. */
export function fsCorrupt(message: string, details: Record<string, unknown> = {}): VmvaultError {
  return new VmvaultError('E_FS_CORRUPT', message, {
    details,
    hint: 'the disk image is damaged or not what it claims to be',
  });
}

/** A valid structure uses a feature this reader does not implement. */
export function fsUnsupported(message: string, details: Record<string, unknown> = {}): VmvaultError {
  return new VmvaultError('E_FS_UNSUPPORTED', message, { details });
}

/** A path does not exist inside the filesystem. */
export function fsNotFound(path: string): VmvaultError {
  return new VmvaultError('E_NOT_FOUND', `no such file or directory: ${path}`, { details: { path } });
}

/**
 * Turns anything thrown while parsing into a {@link VmvaultError}: our own errors pass through,
 * `RangeError`/`TypeError` from buffer access on hostile data become `E_FS_CORRUPT`.
 */
export function asFsError(err: unknown, context: string): VmvaultError {
  if (isVmvaultError(err)) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new VmvaultError('E_FS_CORRUPT', `${context}: ${message}`, { cause: err });
}

/** Runs `fn`, converting unexpected exceptions with {@link asFsError}. */
export async function guard<T>(context: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw asFsError(err, context);
  }
}
