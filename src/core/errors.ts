/**
 * Typed errors shared by every vmvault subsystem.
 *
 * Every failure that reaches a user carries a stable `code` (for scripts and the API) and a
 * one-line message that says what failed and, where possible, what to do about it.
 */

/** Stable error codes. Add new ones at the end of their group; never rename one. */
export type ErrorCode =
  // usage and configuration
  | 'E_USAGE'
  | 'E_NO_REPO'
  | 'E_REPO_EXISTS'
  | 'E_REPO_VERSION'
  | 'E_PASSWORD_REQUIRED'
  | 'E_BAD_PASSWORD'
  | 'E_NOT_FOUND'
  | 'E_AMBIGUOUS'
  | 'E_UNAUTHORIZED'
  // data integrity
  | 'E_CORRUPT'
  | 'E_CHUNK_MISSING'
  | 'E_CHUNK_CORRUPT'
  | 'E_PACK_MISSING'
  | 'E_PACK_CORRUPT'
  | 'E_INDEX_CORRUPT'
  // concurrency
  | 'E_LOCKED'
  // sources, targets and I/O
  | 'E_SOURCE'
  | 'E_TARGET'
  | 'E_IO'
  | 'E_VM'
  // protocols
  | 'E_PROTOCOL'
  | 'E_TIMEOUT'
  | 'E_CLOSED'
  | 'E_UNSUPPORTED'
  | 'E_SERVER'
  // filesystems
  | 'E_FS_CORRUPT'
  | 'E_FS_UNSUPPORTED'
  | 'E_INTERNAL';

/** Base class of every error vmvault raises on purpose. */
export class VmvaultError extends Error {
  /** Stable machine-readable code. */
  readonly code: ErrorCode;
  /** Optional advice for the user: what to do next. */
  readonly hint: string | undefined;
  /** Structured details (digest, pack id, offset...) for JSON output and logs. */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    code: ErrorCode,
    message: string,
    options: { hint?: string; cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'VmvaultError';
    this.code = code;
    this.hint = options.hint;
    this.details = options.details ?? {};
  }

  /** The one-line form shown on stderr: message plus hint. */
  oneLine(): string {
    return this.hint ? `${this.message}; ${this.hint}` : this.message;
  }
}

/** True when `err` is a {@link VmvaultError}, optionally with the given code. */
export function isVmvaultError(err: unknown, code?: ErrorCode): err is VmvaultError {
  return err instanceof VmvaultError && (code === undefined || err.code === code);
}

/** The errno code (`ENOENT`, ...) of a Node.js system error, if any. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const c = (err as { code: unknown }).code;
    return typeof c === 'string' ? c : undefined;
  }
  return undefined;
}
