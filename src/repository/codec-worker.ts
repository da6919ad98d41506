/**
 * Worker thread body of the {@link CodecPool}: encodes (compress + seal) and decodes (open +
 * decompress + check digest) blobs off the main thread.
 */
import { readSync, writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { alignedBuffer, StagedWriter, StagePool, VmvaultError } from '../core/index.js';
import { BlobDecoder, BlobEncoder, type DecodeOptions } from './blob-codec.js';
import type { Compression } from './config.js';
import { digestOf } from './crypto.js';
import { DIGEST_SIZE } from './format.js';

interface Init {
  compression: Compression;
  /** Layout version of the repository (what the encoder writes). */
  version: number;
  key: Uint8Array | null;
  macKey: Uint8Array | null;
}

// The repository's settings come as workerData, or, for a thread started before the repository
// was open (`prestartCodecWorkers`), as the first message.
let encoder: BlobEncoder;
let decoder: BlobDecoder;
let macKey: Buffer | null = null;
function setUp(init: Init): void {
  const key = init.key ? Buffer.from(init.key) : null;
  encoder = new BlobEncoder(init.compression, key, init.version);
  macKey = init.macKey ? Buffer.from(init.macKey) : null;
  decoder = new BlobDecoder(key, macKey);
}
if (workerData) setUp(workerData as Init);
const ZEROS = Buffer.alloc(16 << 20);

type Request =
  | { id: number; op: 'encode'; data: Uint8Array; digest: Uint8Array }
  | { id: number; op: 'decode'; data: Uint8Array; digest: Uint8Array; rawLength: number; where: string }
  | { id: number; op: 'hash'; shared: SharedArrayBuffer; offset: number; length: number; chunkSize: number }
  | {
      id: number;
      op: 'encodeShared';
      shared: SharedArrayBuffer;
      offset: number;
      length: number;
      digest: Uint8Array;
    }
  | {
      id: number;
      op: 'encodeMany';
      shared: SharedArrayBuffer;
      ranges: [number, number][];
      /** The ranges' digests, 32 bytes each, back to back. */
      digests: Uint8Array;
    }
  | {
      id: number;
      op: 'decodeRun';
      shared: SharedArrayBuffer;
      items: RunItem[];
      where: string;
      fd: number | null;
      /** The same file opened with O_DIRECT, for aligned extents (see core/direct-io.ts). */
      directFd: number | null;
      trustSelfCheck: boolean;
    }
  | ({ id: number; op: 'decodeInto'; shared: SharedArrayBuffer } & IntoItems)
  | ({ id: number; op: 'readDecode'; fd: number; position: number; length: number } & IntoItems);

/**
 * Blobs of a run to decode into shared memory (see CodecPool.decodeInto), packed to keep the
 * message small: per item {@link INTO_FIELDS} numbers in `meta` (offset in the run, stored
 * length, raw length, index into `targets`, byte offset there) and 32 digest bytes in `digests`.
 */
interface IntoItems {
  meta: Float64Array;
  digests: Uint8Array;
  targets: SharedArrayBuffer[];
  where: string;
  trustSelfCheck: boolean;
}

const INTO_FIELDS = 5;

/** What a failed item reports back. */
interface ItemError {
  code: string;
  message: string;
  hint?: string;
  details?: Record<string, unknown>;
}

/** One blob of a run read into a shared buffer (see CodecPool.decodeRun). */
interface RunItem {
  offset: number;
  length: number;
  digest: Uint8Array;
  rawLength: number;
  /** Where to write the decoded bytes (with an fd), or -1 to return them. */
  fileOffset: number;
}

/** This thread's buffer for chunks it decodes and writes itself. */
let writeScratch = Buffer.allocUnsafeSlow(0);
/** This thread's aligned staging buffers for direct writes of decoded chunks: 4 × 2 MiB. */
const stages = new StagePool(2 << 20, 4);
/** Direct writes failed here once (EINVAL): write through the page cache from then on. */
let directRefused = false;

/** True while direct writes may be used here: not refused, and aligned memory can be had. */
function canStage(): boolean {
  alignedMemory ??= alignedBuffer(1) !== null;
  return alignedMemory && !directRefused;
}
let alignedMemory: boolean | undefined;

/** Decodes the blobs of a run; writes them to `fd` or returns them back to back. */
function decodeRun(
  shared: SharedArrayBuffer,
  items: RunItem[],
  where: string,
  fd: number | null,
  opts: DecodeOptions,
): Uint8Array[] {
  const outs: Uint8Array[] = [];
  for (const it of items) {
    const stored = Buffer.from(shared, it.offset, it.length);
    const digest = Buffer.from(it.digest);
    if (fd === null) {
      outs.push(toTransferable(decoder.decode(stored, digest, it.rawLength, where, opts)));
      continue;
    }
    if (writeScratch.length < it.rawLength)
      writeScratch = Buffer.allocUnsafeSlow(Math.max(it.rawLength, 1 << 20));
    decoder.decodeInto(stored, digest, it.rawLength, where, writeScratch, opts);
    for (let done = 0; done < it.rawLength; ) {
      done += writeSync(fd, writeScratch, done, it.rawLength - done, it.fileOffset + done);
    }
  }
  return outs;
}

/**
 * {@link decodeRun} to a file through O_DIRECT: blobs that land next to each other in the
 * file are decoded side by side into an aligned staging buffer, which is written with one
 * call (on the thread pool) each time the next blob does not follow or the buffer is full,
 * while this thread decodes on into the next buffer. Resolves once every write is done. A
 * blob that fails to decode fails the request; what was staged before it may be written.
 */
async function decodeRunDirect(
  shared: SharedArrayBuffer,
  items: RunItem[],
  where: string,
  fd: number,
  directFd: number,
  opts: DecodeOptions,
): Promise<void> {
  // Every write ends before the request does, failed or not.
  const direct = await StagedWriter.run(fd, directFd, stages, async (w) => {
    for (const it of items) {
      const stored = Buffer.from(shared, it.offset, it.length);
      const digest = Buffer.from(it.digest);
      if (it.rawLength > stages.bytes) {
        const out = decoder.decode(stored, digest, it.rawLength, where, opts);
        for (let done = 0; done < out.length; )
          done += writeSync(fd, out, done, out.length - done, it.fileOffset + done);
        continue;
      }
      const into = await w.reserve(it.fileOffset, it.rawLength);
      decoder.decodeInto(stored, digest, it.rawLength, where, into, opts);
      w.commit(it.rawLength);
    }
  });
  if (!direct) directRefused = true;
}

/** Decodes every item of `run` into its target; the failures, per item (null when it decoded). */
function decodeInto(run: Uint8Array, req: IntoItems): (ItemError | null)[] {
  const { meta, digests, targets } = req;
  const out: (ItemError | null)[] = [];
  for (let n = 0; n * INTO_FIELDS < meta.length; n++) {
    const m = n * INTO_FIELDS;
    const rawLength = meta[m + 2]!;
    try {
      decoder.decodeInto(
        run.subarray(meta[m]!, meta[m]! + meta[m + 1]!),
        digests.subarray(n * DIGEST_SIZE, (n + 1) * DIGEST_SIZE),
        rawLength,
        req.where,
        new Uint8Array(targets[meta[m + 3]!]!, meta[m + 4]!, rawLength),
        { trustSelfCheck: req.trustSelfCheck },
      );
      out.push(null);
    } catch (err) {
      out.push(errorInfo(err));
    }
  }
  return out;
}

/** This thread's buffer for runs it reads itself. */
let scratch = Buffer.allocUnsafeSlow(0);

/** Reads `length` bytes at `position` of `fd` into the scratch buffer (E_CORRUPT when short). */
function readRun(fd: number, position: number, length: number, where: string): Buffer {
  if (scratch.length < length) scratch = Buffer.allocUnsafeSlow(Math.max(length, 4 << 20));
  for (let done = 0; done < length; ) {
    const n = readSync(fd, scratch, done, length - done, position + done);
    if (n === 0) {
      throw new VmvaultError('E_CORRUPT', `${where} is truncated: wanted ${length} bytes at ${position}`);
    }
    done += n;
  }
  return scratch.subarray(0, length);
}

function errorInfo(err: unknown): ItemError {
  const e = err instanceof VmvaultError ? err : null;
  return {
    code: e?.code ?? 'E_INTERNAL',
    message: (err as Error).message,
    ...(e?.hint ? { hint: e.hint } : {}),
    ...(e?.details ? { details: e.details } : {}),
  };
}

/**
 * Digests of the chunks of a shared segment: 32 bytes per chunk, all zero for a chunk that
 * reads as zeros (it is not hashed).
 */
function hashChunks(buf: Buffer, chunkSize: number): Uint8Array {
  const n = Math.ceil(buf.length / chunkSize);
  const out = new Uint8Array(n * DIGEST_SIZE);
  for (let i = 0; i < n; i++) {
    const c = buf.subarray(i * chunkSize, Math.min(buf.length, (i + 1) * chunkSize));
    if (c.equals(ZEROS.subarray(0, c.length))) continue;
    out.set(digestOf(c, macKey), i * DIGEST_SIZE);
  }
  return out;
}

function toTransferable(b: Uint8Array): Uint8Array {
  // Copy out of Node's pool or a shared buffer when needed so the ArrayBuffer can be transferred.
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && !(b.buffer instanceof SharedArrayBuffer))
    return b;
  // Not `new Uint8Array(b)`: that copies element by element when `b` is shared memory.
  const copy = new Uint8Array(new ArrayBuffer(b.byteLength));
  copy.set(b);
  return copy;
}

parentPort!.on('message', (req: Request | ({ op: 'init' } & Init)) => {
  if (req.op === 'init') {
    setUp(req);
    return;
  }
  try {
    let out: Buffer | Uint8Array;
    if (req.op === 'decodeRun' && req.fd !== null && req.directFd !== null && !directRefused && canStage()) {
      const id = req.id;
      decodeRunDirect(req.shared, req.items, req.where, req.fd, req.directFd, {
        trustSelfCheck: req.trustSelfCheck,
      }).then(
        () => parentPort!.postMessage({ id, parts: [] }),
        (err: unknown) => parentPort!.postMessage({ id, error: errorInfo(err) }),
      );
      return;
    }
    if (req.op === 'decodeRun') {
      const parts = decodeRun(req.shared, req.items, req.where, req.fd, {
        trustSelfCheck: req.trustSelfCheck,
      });
      parentPort!.postMessage(
        { id: req.id, parts },
        parts.map((part) => part.buffer as ArrayBuffer),
      );
      return;
    }
    if (req.op === 'decodeInto' || req.op === 'readDecode') {
      const run =
        req.op === 'decodeInto'
          ? new Uint8Array(req.shared)
          : readRun(req.fd, req.position, req.length, req.where);
      parentPort!.postMessage({ id: req.id, errors: decodeInto(run, req) });
      return;
    }
    if (req.op === 'encodeMany') {
      const parts = req.ranges.map(([o, l], n) =>
        toTransferable(
          encoder.encode(
            Buffer.from(req.shared, o, l),
            req.digests.subarray(n * DIGEST_SIZE, (n + 1) * DIGEST_SIZE),
          ),
        ),
      );
      parentPort!.postMessage(
        { id: req.id, parts },
        parts.map((part) => part.buffer as ArrayBuffer),
      );
      return;
    }
    if (req.op === 'hash') {
      out = hashChunks(Buffer.from(req.shared, req.offset, req.length), req.chunkSize);
    } else if (req.op === 'encodeShared') {
      out = encoder.encode(Buffer.from(req.shared, req.offset, req.length), req.digest);
    } else {
      const input = Buffer.from(req.data.buffer, req.data.byteOffset, req.data.byteLength);
      out =
        req.op === 'encode'
          ? encoder.encode(input, req.digest)
          : decoder.decode(input, Buffer.from(req.digest), req.rawLength, req.where);
    }
    const t = toTransferable(out);
    parentPort!.postMessage({ id: req.id, data: t }, [t.buffer as ArrayBuffer]);
  } catch (err) {
    parentPort!.postMessage({ id: req.id, error: errorInfo(err) });
  }
});

// Tells the pool this thread can take work (until then it may decode urgent reads itself).
parentPort!.postMessage({ ready: true });
