/**
 * A pool of worker threads that encode and decode blobs, so compression, encryption and
 * checking run on every core while the main thread reads, hashes and writes.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { type ErrorCode, VmvaultError } from '../core/index.js';
import type { Repository } from './repository.js';

interface Pending {
  resolve: (b: Buffer | Buffer[]) => void;
  reject: (e: unknown) => void;
}

interface Slot {
  worker: Worker;
  busy: number;
}

/** Worker threads doing blob encode/decode for one repository. */
export class CodecPool {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending & { slot: Slot }>();
  private nextId = 1;
  private closed = false;

  constructor(repo: Repository, threads = Math.max(1, availableParallelism())) {
    const workerData = {
      level: repo.config.compression.level,
      key: repo.sealKey ? new Uint8Array(repo.sealKey) : null,
      macKey: repo.macKey ? new Uint8Array(repo.macKey) : null,
    };
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(new URL('./codec-worker.js', import.meta.url), { workerData });
      const slot: Slot = { worker, busy: 0 };
      worker.on(
        'message',
        (m: {
          id: number;
          data?: Uint8Array;
          parts?: Uint8Array[];
          error?: { code: ErrorCode; message: string; hint?: string; details?: Record<string, unknown> };
        }) => {
          const p = this.pending.get(m.id);
          if (!p) return;
          this.pending.delete(m.id);
          p.slot.busy--;
          if (m.error) {
            p.reject(
              new VmvaultError(m.error.code, m.error.message, {
                ...(m.error.hint ? { hint: m.error.hint } : {}),
                details: m.error.details ?? {},
              }),
            );
          } else if (m.parts) {
            p.resolve(m.parts.map((d) => Buffer.from(d.buffer, d.byteOffset, d.byteLength)));
          } else {
            const d = m.data!;
            p.resolve(Buffer.from(d.buffer, d.byteOffset, d.byteLength));
          }
        },
      );
      worker.on('error', (err) => this.failAll(err));
      this.slots.push(slot);
    }
  }

  /** Number of requests in flight. */
  get inFlight(): number {
    return this.pending.size;
  }

  private failAll(err: unknown): void {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(err);
    }
  }

  private send<T extends Buffer | Buffer[] = Buffer>(
    msg: Record<string, unknown>,
    transfer: ArrayBuffer[],
  ): Promise<T> {
    if (this.closed) return Promise.reject(new VmvaultError('E_INTERNAL', 'codec pool is closed'));
    let slot = this.slots[0]!;
    for (const s of this.slots) if (s.busy < slot.busy) slot = s;
    const id = this.nextId++;
    slot.busy++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (b: Buffer | Buffer[]) => void, reject, slot });
      slot.worker.postMessage({ ...msg, id }, transfer);
    });
  }

  /**
   * Encodes a chunk. When `data` owns its whole ArrayBuffer, that buffer is transferred (the
   * caller must not use it afterwards); otherwise it is copied.
   */
  encode(data: Uint8Array): Promise<Buffer> {
    const owned = transferable(data);
    return this.send({ op: 'encode', data: owned }, [owned.buffer as ArrayBuffer]);
  }

  /**
   * Hashes the chunks of `length` bytes at `offset` of a shared segment: 32 bytes per chunk,
   * all-zero for chunks that read as zeros.
   */
  hashShared(shared: SharedArrayBuffer, offset: number, length: number, chunkSize: number): Promise<Buffer> {
    return this.send({ op: 'hash', shared, offset, length, chunkSize }, []);
  }

  /** Encodes `length` bytes at `offset` of a shared segment (no copy, no transfer). */
  encodeShared(shared: SharedArrayBuffer, offset: number, length: number): Promise<Buffer> {
    return this.send({ op: 'encodeShared', shared, offset, length }, []);
  }

  /**
   * Decodes and checks blobs lying in a shared buffer (a run read from one pack). With `fd`,
   * the worker writes each at its `fileOffset` (positioned writes) and nothing comes back;
   * without, the decoded blobs come back, one buffer each, in item order.
   */
  decodeRun(
    shared: SharedArrayBuffer,
    items: { offset: number; length: number; digest: Buffer; rawLength: number; fileOffset: number }[],
    where: string,
    fd: number | null,
  ): Promise<Buffer[]> {
    const wire = items.map((it) => ({ ...it, digest: new Uint8Array(it.digest) }));
    return this.send<Buffer[]>({ op: 'decodeRun', shared, items: wire, where, fd }, []);
  }

  /**
   * {@link decodeRun} split into `parts` messages (one per worker, at most) so the blobs of one
   * run are decoded in parallel; results in item order.
   */
  async decodeRunSplit(
    shared: SharedArrayBuffer,
    items: { offset: number; length: number; digest: Buffer; rawLength: number; fileOffset: number }[],
    where: string,
    fd: number | null,
    parts = this.size,
  ): Promise<Buffer[]> {
    const n = Math.max(1, Math.min(parts, items.length));
    const per = Math.ceil(items.length / n);
    const out = await Promise.all(
      Array.from({ length: n }, (_, k) =>
        this.decodeRun(shared, items.slice(k * per, (k + 1) * per), where, fd),
      ),
    );
    return out.flat();
  }

  /** Encodes several ranges of a shared segment in one message; results in range order. */
  encodeSharedMany(shared: SharedArrayBuffer, ranges: [number, number][]): Promise<Buffer[]> {
    return this.send<Buffer[]>({ op: 'encodeMany', shared, ranges }, []);
  }

  /** Number of worker threads. */
  get size(): number {
    return this.slots.length;
  }

  /** Decodes and checks a stored blob (transferred like {@link encode}'s input). */
  decode(stored: Uint8Array, digest: Buffer, rawLength: number, where: string): Promise<Buffer> {
    const owned = transferable(stored);
    return this.send({ op: 'decode', data: owned, digest: new Uint8Array(digest), rawLength, where }, [
      owned.buffer as ArrayBuffer,
    ]);
  }

  /** Stops the workers. */
  async close(): Promise<void> {
    this.closed = true;
    this.failAll(new VmvaultError('E_INTERNAL', 'codec pool closed'));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}

/** `b` itself when it owns its whole ArrayBuffer (so it can be transferred), else a copy. */
function transferable(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b : new Uint8Array(b);
}
