/** Public option and result types of {@link NbdClient} (re-exported by `client.ts`). */
import type { NbdTarget } from './connect.js';

/** Options of {@link NbdClient.connect}. */
export interface NbdClientOptions extends NbdTarget {
  /** Metadata contexts to select, e.g. `['base:allocation', 'qemu:dirty-bitmap:bk1']`. */
  metaContexts?: string[];
  /** Negotiate structured replies (default true; required for metadata contexts). */
  structuredReplies?: boolean;
  /** Deadline for connecting plus the whole handshake (default 10 s). */
  handshakeTimeoutMs?: number;
  /** Deadline for each request; 0 disables (default 60 s). */
  requestTimeoutMs?: number;
  /** Requests sent before waiting for replies; more are queued locally (default 64). */
  maxInFlight?: number;
}

/** One extent reported by NBD_CMD_BLOCK_STATUS; `flags` are the context's status bits. */
export interface NbdExtent {
  offset: number;
  length: number;
  flags: number;
}

/** Flags of write-like commands. */
export interface NbdWriteOptions {
  /** Force unit access: the reply comes after the data is on stable storage. */
  fua?: boolean;
}

/** Flags of NBD_CMD_WRITE_ZEROES. */
export interface NbdWriteZeroesOptions extends NbdWriteOptions {
  /** The server must allocate (not punch a hole). */
  noHole?: boolean;
  /** Fail fast with ENOTSUP (E_UNSUPPORTED) unless zeroing is cheaper than writing. */
  fastZero?: boolean;
}
