/**
 * Errors raised by the QMP and guest-agent clients.
 *
 * Transport problems use the shared {@link VmvaultError} codes (`E_TIMEOUT`, `E_CLOSED`,
 * `E_PROTOCOL`); an `{"error": …}` reply from the server becomes a {@link QmpError}.
 */
import { VmvaultError } from '../../core/errors.js';

/**
 * An error reply from a QMP server (QEMU, qemu-storage-daemon or the guest agent).
 *
 * `code` is always `E_PROTOCOL`; `errorClass` is QEMU's class (`GenericError`, `CommandNotFound`,
 * `DeviceNotFound`, `DeviceNotActive`, `KVMMissingCap`), `desc` its human-readable text (never
 * parse it) and `command` the command that failed.
 */
export class QmpError extends VmvaultError {
  /** QEMU's error class, e.g. `GenericError`. */
  readonly errorClass: string;
  /** QEMU's description of the failure. */
  readonly desc: string;
  /** The QMP command that failed. */
  readonly command: string;

  constructor(command: string, errorClass: string, desc: string) {
    super('E_PROTOCOL', `QMP command ${command} failed: ${desc} (${errorClass})`, {
      details: { command, class: errorClass, desc },
    });
    this.name = 'QmpError';
    this.errorClass = errorClass;
    this.desc = desc;
    this.command = command;
  }
}

/** True when `err` is a {@link QmpError}, optionally of the given QEMU error class. */
export function isQmpError(err: unknown, errorClass?: string): err is QmpError {
  return err instanceof QmpError && (errorClass === undefined || err.errorClass === errorClass);
}

/** The error every pending command receives when the connection goes away. */
export function closedError(what: string, reason: string, cause?: unknown): VmvaultError {
  return new VmvaultError('E_CLOSED', `${what}: connection closed (${reason})`, {
    cause,
    hint: 'the QEMU process may have exited; reconnect once it is back',
  });
}

/** A timeout error with the operation and the limit in its message. */
export function timeoutError(what: string, ms: number, hint?: string): VmvaultError {
  return new VmvaultError('E_TIMEOUT', `${what}: no answer within ${ms} ms`, hint ? { hint } : {});
}
