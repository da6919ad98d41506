/** What a server connection needs from its {@link NbdServer}: resolved limits, exports, error reporting. */
import type { NbdExport } from './export.js';

/** Limits and timeouts of a server (all resolved, see NbdServerOptions). */
export interface ServerLimits {
  handshakeTimeoutMs: number;
  requestDataTimeoutMs: number;
  maxOptions: number;
  maxOptionLength: number;
  maxInFlight: number;
  maxInFlightBytes: number;
  maxWriteBuffer: number;
  maxExtentsPerReply: number;
}

/** What a connection needs from its server. */
export interface ServerContext {
  readonly limits: ServerLimits;
  readonly shuttingDown: boolean;
  lookup(name: string): { name: string; exp: NbdExport } | undefined;
  list(): { name: string; description: string }[];
  report(err: unknown, where: string): void;
}
