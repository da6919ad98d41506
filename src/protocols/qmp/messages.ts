/**
 * Wire shapes of the QEMU Machine Protocol (docs/interop/qmp-spec.rst) and a line splitter.
 *
 * The server writes one JSON object per line, each terminated by CRLF: a greeting, command
 * replies (`return` or `error`, echoing the command's `id`) and asynchronous events.
 */
import { VmvaultError } from '../../core/errors.js';

/** QEMU's version triple as in the greeting and `query-version`. */
export interface QmpVersion {
  qemu: { major: number; minor: number; micro: number };
  /** Distribution package string, e.g. `Debian 1:7.2+dfsg-7+deb12u18`. */
  package: string;
}

/** The greeting a QMP server sends right after a client connects. */
export interface QmpGreeting {
  version: QmpVersion;
  /** Protocol capabilities offered, e.g. `["oob"]`. */
  capabilities: string[];
}

/** An asynchronous event, with the client's arrival sequence number. */
export interface QmpEvent<D = Record<string, unknown>> {
  /** Event name, e.g. `BLOCK_JOB_COMPLETED`. */
  event: string;
  /** Event-specific payload (`{}` when the server sent none). */
  data: D;
  /** Server time of the event. */
  timestamp: { seconds: number; microseconds: number };
  /** Monotonic sequence number assigned on arrival (starts at 1, survives reconnects). */
  seq: number;
}

/** A decoded server message. */
export type QmpMessage =
  | { kind: 'greeting'; greeting: QmpGreeting }
  | { kind: 'return'; id: unknown; value: unknown }
  | { kind: 'error'; id: unknown; errorClass: string; desc: string }
  | {
      kind: 'event';
      event: string;
      data: Record<string, unknown>;
      timestamp: { seconds: number; microseconds: number };
    };

/** Decodes one JSON line from a QMP server; throws `E_PROTOCOL` for anything unexpected. */
export function decodeQmpLine(line: string): QmpMessage {
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch (err) {
    throw new VmvaultError('E_PROTOCOL', `QMP: invalid JSON from server: ${truncate(line)}`, { cause: err });
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new VmvaultError('E_PROTOCOL', `QMP: expected a JSON object, got ${truncate(line)}`);
  }
  const m = obj as Record<string, unknown>;
  if ('QMP' in m) {
    const g = m.QMP as Partial<QmpGreeting> | undefined;
    return {
      kind: 'greeting',
      greeting: {
        version: (g?.version ?? { qemu: { major: 0, minor: 0, micro: 0 }, package: '' }) as QmpVersion,
        capabilities: Array.isArray(g?.capabilities) ? g.capabilities.map(String) : [],
      },
    };
  }
  if ('return' in m) return { kind: 'return', id: m.id, value: m.return };
  if ('error' in m) {
    const e = (m.error ?? {}) as { class?: unknown; desc?: unknown };
    return {
      kind: 'error',
      id: m.id,
      errorClass: typeof e.class === 'string' ? e.class : 'GenericError',
      desc: typeof e.desc === 'string' ? e.desc : 'unknown error',
    };
  }
  if (typeof m.event === 'string') {
    const ts = (m.timestamp ?? { seconds: -1, microseconds: -1 }) as {
      seconds: number;
      microseconds: number;
    };
    const data = typeof m.data === 'object' && m.data !== null ? (m.data as Record<string, unknown>) : {};
    return { kind: 'event', event: m.event, data, timestamp: ts };
  }
  throw new VmvaultError('E_PROTOCOL', `QMP: unrecognised message: ${truncate(line)}`);
}

/**
 * Splits a byte stream into lines (LF-terminated, an optional CR stripped). Bytes are decoded as
 * UTF-8 only once a full line is present, so multi-byte characters split across chunks survive.
 */
export class LineSplitter {
  private pending: Buffer[] = [];

  /** Feeds bytes; returns the complete lines they finish. */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      this.pending.push(chunk.subarray(start, nl));
      let text = Buffer.concat(this.pending).toString('utf8');
      if (text.endsWith('\r')) text = text.slice(0, -1);
      lines.push(text);
      this.pending = [];
      start = nl + 1;
    }
    if (start < chunk.length) this.pending.push(chunk.subarray(start));
    return lines;
  }

  /** Drops any partial line. */
  reset(): void {
    this.pending = [];
  }
}

/** Shortens text for error messages. */
export function truncate(text: string, max = 200): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}
