/**
 * A pool of worker threads that encode and decode blobs, so compression, encryption and
 * checking run on every core while the main thread reads, hashes and writes.
 */
import { readSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { type ErrorCode, SlabPool, VmvaultError } from '../core/index.js';
import { BlobDecoder, type DecodeOptions } from './blob-codec.js';
import { DIGEST_SIZE } from './format.js';
import type { Repository } from './repository.js';

/** What a worker sends back for a request. */
type Reply = Buffer | Buffer[] | (VmvaultError | null)[];

interface Pending {
  resolve: (b: Reply) => void;
  reject: (e: unknown) => void;
}

/** A failure as a worker reports it. */
interface WireError {
  code: ErrorCode;
  message: string;
  hint?: string;
  details?: Record<string, unknown>;
}

function fromWire(e: WireError): VmvaultError {
  return new VmvaultError(e.code, e.message, {
    ...(e.hint ? { hint: e.hint } : {}),
    details: e.details ?? {},
  });
}

/** One blob of a run for {@link CodecPool.decodeInto}. */
export interface DecodeIntoItem {
  /** Where the stored blob lies in the run buffer, and its stored length. */
  offset: number;
  length: number;
  digest: Buffer;
  rawLength: number;
  /** Shared memory to write the decoded content to, at `targetOffset`. */
  target: SharedArrayBuffer;
  targetOffset: number;
}

interface Slot {
  worker: Worker;
  busy: number;
  /** The worker has loaded and said so. */
  ready: boolean;
}

const WORKER_URL = new URL('./codec-worker.js', import.meta.url);

/** A worker thread started before its repository was open, and what it said so far. */
interface Spare {
  worker: Worker;
  ready: boolean;
  error: unknown;
}

/** Threads from {@link prestartCodecWorkers} that no pool has taken yet. */
let spares: Spare[] = [];

/**
 * Starts the codec worker threads of the next {@link CodecPool} now, before its repository is
 * open: a thread takes ~70 ms to load, which then overlaps the passphrase's key derivation
 * (scrypt, ~0.2 s) instead of following it. The next pool of as many threads takes them and
 * sends them the repository's settings; threads no pool takes do not keep the process alive.
 */
export function prestartCodecWorkers(threads = defaultThreads()): void {
  while (spares.length < threads) {
    const spare: Spare = { worker: new Worker(WORKER_URL, { workerData: null }), ready: false, error: null };
    spare.worker.on('message', (m: { ready?: boolean }) => {
      if (m.ready) spare.ready = true;
    });
    spare.worker.on('error', (err) => {
      spare.error = err;
    });
    spare.worker.unref();
    spares.push(spare);
  }
}

/** A thread per core. */
function defaultThreads(): number {
  return Math.max(1, availableParallelism());
}

/** Takes `n` healthy pre-started threads, or none. Threads that died are dropped. */
function takeSpares(n: number): Spare[] | null {
  spares = spares.filter((s) => s.error === null);
  if (spares.length < n) return null;
  const taken = spares.splice(0, n);
  for (const s of taken) {
    s.worker.removeAllListeners('message');
    s.worker.removeAllListeners('error');
    s.worker.ref();
  }
  return taken;
}

/** Worker threads doing blob encode/decode for one repository. */
export class CodecPool {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending & { slot: Slot }>();
  private nextId = 1;
  private closed = false;
  /** A decoder on this thread for urgent reads that come before any worker is up (lazy). */
  private inline: BlobDecoder | null = null;
  private readonly keys: { seal: Buffer | null; mac: Buffer | null };
  private readonly slabPools = new Map<string, SlabPool>();

  constructor(repo: Repository, threads = defaultThreads()) {
    const workerData = {
      compression: repo.config.compression,
      version: repo.config.version,
      key: repo.sealKey ? new Uint8Array(repo.sealKey) : null,
      macKey: repo.macKey ? new Uint8Array(repo.macKey) : null,
    };
    this.keys = { seal: repo.sealKey, mac: repo.macKey };
    const started = takeSpares(threads);
    for (let i = 0; i < threads; i++) {
      const spare = started?.[i];
      // A pre-started thread gets the settings as its first message, before any request.
      spare?.worker.postMessage({ op: 'init', ...workerData });
      const worker = spare?.worker ?? new Worker(WORKER_URL, { workerData });
      const slot: Slot = { worker, busy: 0, ready: spare?.ready ?? false };
      worker.on(
        'message',
        (m: {
          ready?: boolean;
          id: number;
          data?: Uint8Array;
          parts?: Uint8Array[];
          errors?: (WireError | null)[];
          error?: WireError;
        }) => {
          if (m.ready) {
            slot.ready = true;
            return;
          }
          const p = this.pending.get(m.id);
          if (!p) return;
          this.pending.delete(m.id);
          p.slot.busy--;
          if (m.error) {
            p.reject(fromWire(m.error));
          } else if (m.errors) {
            p.resolve(m.errors.map((e) => (e ? fromWire(e) : null)));
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

  private send<T extends Reply = Buffer>(msg: Record<string, unknown>, transfer: ArrayBuffer[]): Promise<T> {
    if (this.closed) return Promise.reject(new VmvaultError('E_INTERNAL', 'codec pool is closed'));
    let slot = this.slots[0]!;
    for (const s of this.slots) if (s.busy < slot.busy) slot = s;
    const id = this.nextId++;
    slot.busy++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (b: Reply) => void, reject, slot });
      slot.worker.postMessage({ ...msg, id }, transfer);
    });
  }

  /**
   * Encodes a chunk whose digest is `digest`. When `data` owns its whole ArrayBuffer, that
   * buffer is transferred (the caller must not use it afterwards); otherwise it is copied.
   */
  encode(data: Uint8Array, digest: Buffer): Promise<Buffer> {
    const owned = transferable(data);
    return this.send({ op: 'encode', data: owned, digest: new Uint8Array(digest) }, [
      owned.buffer as ArrayBuffer,
    ]);
  }

  /**
   * Hashes the chunks of `length` bytes at `offset` of a shared segment: 32 bytes per chunk,
   * all-zero for chunks that read as zeros.
   */
  hashShared(shared: SharedArrayBuffer, offset: number, length: number, chunkSize: number): Promise<Buffer> {
    return this.send({ op: 'hash', shared, offset, length, chunkSize }, []);
  }

  /**
   * Encodes `length` bytes at `offset` of a shared segment, whose digest is `digest` (no copy,
   * no transfer).
   */
  encodeShared(shared: SharedArrayBuffer, offset: number, length: number, digest: Buffer): Promise<Buffer> {
    return this.send({ op: 'encodeShared', shared, offset, length, digest: new Uint8Array(digest) }, []);
  }

  /**
   * Decodes and checks blobs lying in a shared buffer (a run read from one pack). With `fd`,
   * the worker writes each at its `fileOffset` (positioned writes) and nothing comes back;
   * without, the decoded blobs come back, one buffer each, in item order. With
   * `opts.trustSelfCheck`, self-checked blobs are not re-hashed (see `DecodeOptions` in
   * blob-codec.ts). With `opts.directFd` (the same file opened by `core.openDirect`), extents
   * of adjacent blobs are written through it (O_DIRECT), unaligned bytes through `fd`.
   */
  decodeRun(
    shared: SharedArrayBuffer,
    items: { offset: number; length: number; digest: Buffer; rawLength: number; fileOffset: number }[],
    where: string,
    fd: number | null,
    opts: DecodeOptions & { directFd?: number | null } = {},
  ): Promise<Buffer[]> {
    const wire = items.map((it) => ({ ...it, digest: new Uint8Array(it.digest) }));
    const trustSelfCheck = opts.trustSelfCheck === true;
    const directFd = fd === null ? null : (opts.directFd ?? null);
    return this.send<Buffer[]>(
      { op: 'decodeRun', shared, items: wire, where, fd, directFd, trustSelfCheck },
      [],
    );
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
    opts: DecodeOptions & { parts?: number; directFd?: number | null } = {},
  ): Promise<Buffer[]> {
    const n = Math.max(1, Math.min(opts.parts ?? this.size, items.length));
    const per = Math.ceil(items.length / n);
    const out = await Promise.all(
      Array.from({ length: n }, (_, k) =>
        this.decodeRun(shared, items.slice(k * per, (k + 1) * per), where, fd, opts),
      ),
    );
    return out.flat();
  }

  /**
   * Encodes several ranges of a shared segment in one message, `digests[n]` being the digest of
   * range `n`; results in range order.
   */
  encodeSharedMany(
    shared: SharedArrayBuffer,
    ranges: [number, number][],
    digests: readonly Buffer[],
  ): Promise<Buffer[]> {
    if (digests.length !== ranges.length) {
      return Promise.reject(new VmvaultError('E_INTERNAL', 'encodeSharedMany needs one digest per range'));
    }
    return this.send<Buffer[]>({ op: 'encodeMany', shared, ranges, digests: Buffer.concat(digests) }, []);
  }

  /**
   * Decodes and checks blobs lying in `shared` (a run read from one pack) straight into shared
   * memory, in one message and without copies back. Resolves with one entry per item: null when
   * it decoded, else its E_CHUNK_CORRUPT error (the other items are unaffected). With
   * `trustSelfCheck`, self-checked blobs are not re-hashed (see `DecodeOptions` in blob-codec.ts).
   */
  decodeInto(
    shared: SharedArrayBuffer,
    items: readonly DecodeIntoItem[],
    where: string,
    trustSelfCheck: boolean,
    urgent = false,
  ): Promise<(VmvaultError | null)[]> {
    if (urgent && this.starting()) {
      return Promise.resolve(this.decodeHere(new Uint8Array(shared), 0, items, where, trustSelfCheck));
    }
    return this.send<(VmvaultError | null)[]>(
      { op: 'decodeInto', shared, ...packItems(items, where, trustSelfCheck) },
      [],
    );
  }

  /**
   * {@link decodeInto} of a run the worker reads itself: `length` bytes at `position` of the
   * open file `fd` (item offsets are relative to `position`). Saves the main thread the read
   * and its thread-pool round trip. Rejects when the read fails (E_CORRUPT when short); the
   * caller must keep `fd` open until the promise settles. `urgent` (a guest is waiting): while
   * no worker has started yet, this thread reads and decodes the run itself.
   */
  readAndDecodeInto(
    fd: number,
    position: number,
    length: number,
    items: readonly DecodeIntoItem[],
    where: string,
    trustSelfCheck: boolean,
    urgent = false,
  ): Promise<(VmvaultError | null)[]> {
    if (urgent && this.starting()) {
      try {
        const run = Buffer.allocUnsafe(length);
        for (let done = 0; done < length; ) {
          const n = readSync(fd, run, done, length - done, position + done);
          if (n === 0) {
            throw new VmvaultError(
              'E_CORRUPT',
              `${where} is truncated: wanted ${length} bytes at ${position}`,
            );
          }
          done += n;
        }
        return Promise.resolve(this.decodeHere(run, 0, items, where, trustSelfCheck));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return this.send<(VmvaultError | null)[]>(
      { op: 'readDecode', fd, position, length, ...packItems(items, where, trustSelfCheck) },
      [],
    );
  }

  /** True while no worker has started: the first reads of a fresh mount come then. */
  private starting(): boolean {
    return !this.closed && !this.slots.some((s) => s.ready);
  }

  /** What a worker's decodeInto does, on this thread (item offsets relative to `base`). */
  private decodeHere(
    run: Uint8Array,
    base: number,
    items: readonly DecodeIntoItem[],
    where: string,
    trustSelfCheck: boolean,
  ): (VmvaultError | null)[] {
    this.inline ??= new BlobDecoder(this.keys.seal, this.keys.mac);
    return items.map((it) => {
      try {
        this.inline!.decodeInto(
          run.subarray(base + it.offset, base + it.offset + it.length),
          it.digest,
          it.rawLength,
          where,
          new Uint8Array(it.target, it.targetOffset, it.rawLength),
          { trustSelfCheck },
        );
        return null;
      } catch (err) {
        return err instanceof VmvaultError ? err : new VmvaultError('E_INTERNAL', (err as Error).message);
      }
    });
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

  /**
   * `count` shared buffers of `bytes` each for a pipeline that reads into shared memory and
   * hands it to these workers, made once and kept as long as the pool: memory already touched
   * costs no page faults, and a resident server reuses it from job to job.
   */
  slabs(bytes: number, count: number): SlabPool {
    const key = `${bytes}x${count}`;
    let p = this.slabPools.get(key);
    if (!p) {
      p = new SlabPool(bytes, count);
      this.slabPools.set(key, p);
    }
    return p;
  }

  /** Stops the workers. */
  async close(): Promise<void> {
    this.slabPools.clear();
    this.closed = true;
    this.failAll(new VmvaultError('E_INTERNAL', 'codec pool closed'));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}

/** Numbers per item in the packed form of {@link DecodeIntoItem}s (see codec-worker.ts). */
const INTO_FIELDS = 5;

/** The compact message form of decode-into items. */
function packItems(items: readonly DecodeIntoItem[], where: string, trustSelfCheck: boolean) {
  const targets: SharedArrayBuffer[] = [];
  const meta = new Float64Array(items.length * INTO_FIELDS);
  const digests = new Uint8Array(items.length * DIGEST_SIZE);
  items.forEach((it, n) => {
    let t = targets.indexOf(it.target);
    if (t < 0) t = targets.push(it.target) - 1;
    meta.set([it.offset, it.length, it.rawLength, t, it.targetOffset], n * INTO_FIELDS);
    digests.set(it.digest, n * DIGEST_SIZE);
  });
  return { meta, digests, targets, where, trustSelfCheck };
}

/** `b` itself when it owns its whole ArrayBuffer (so it can be transferred), else a copy. */
function transferable(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b : new Uint8Array(b);
}
