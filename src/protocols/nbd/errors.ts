/** NBD-specific error construction and errno mapping on top of the shared {@link VmvaultError}. */
import { VmvaultError, errnoCode } from '../../core/errors.js';
import {
  NBD_CMD_NAMES,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOMEM,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ERRNO_NAMES,
  NBD_ESHUTDOWN,
} from './constants.js';

/** A protocol violation by the peer (bad magic, unknown cookie, oversize length...). */
export function protocolError(message: string, details: Record<string, unknown> = {}): VmvaultError {
  return new VmvaultError('E_PROTOCOL', `NBD protocol error: ${message}`, { details });
}

/** The connection is gone (closed by us, by the peer, or broken). */
export function closedError(message = 'NBD connection closed', cause?: unknown): VmvaultError {
  return new VmvaultError('E_CLOSED', message, cause === undefined ? {} : { cause });
}

/** Name of a wire error value (`EINVAL`...), or `E<number>` for values outside the specification. */
export function nbdErrnoName(value: number): string {
  return NBD_ERRNO_NAMES[value] ?? `E${value}`;
}

/**
 * The error a client raises when the server answers a command with an error value. `code` is
 * `E_UNSUPPORTED` for ENOTSUP and `E_IO` otherwise; `details.errno` holds the errno name.
 */
export function serverReplyError(
  errValue: number,
  command: number,
  offset: number,
  length: number,
  message?: string,
): VmvaultError {
  const errno = nbdErrnoName(errValue);
  const cmd = NBD_CMD_NAMES[command] ?? `command ${command}`;
  const text = `NBD server failed ${cmd} at offset ${offset} length ${length}: ${errno}${message ? ` (${message})` : ''}`;
  return new VmvaultError(errValue === NBD_ENOTSUP ? 'E_UNSUPPORTED' : 'E_IO', text, {
    details: { errno, errnoValue: errValue, command: cmd, offset, length, ...(message ? { message } : {}) },
  });
}

/**
 * Maps any error thrown by an export backend to one of the wire error values the specification
 * allows. A {@link VmvaultError} may carry `details.errno` (an errno name) to choose the value.
 */
export function errorToNbdErrno(err: unknown): number {
  let code = errnoCode(err);
  if (err instanceof VmvaultError && typeof err.details.errno === 'string') code = err.details.errno;
  switch (code) {
    case 'EPERM':
    case 'EACCES':
    case 'EROFS':
      return NBD_EPERM;
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return NBD_ENOSPC;
    case 'EINVAL':
      return NBD_EINVAL;
    case 'ENOMEM':
      return NBD_ENOMEM;
    case 'EOVERFLOW':
      return NBD_EOVERFLOW;
    case 'ENOTSUP':
    case 'EOPNOTSUPP':
      return NBD_ENOTSUP;
    case 'ESHUTDOWN':
      return NBD_ESHUTDOWN;
    default:
      return NBD_EIO;
  }
}
