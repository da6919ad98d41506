/**
 * Worker thread body of the {@link CodecPool}: encodes (compress + seal) and decodes (open +
 * decompress + check digest) blobs off the main thread.
 */
import { writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { VmvaultError } from '../core/index.js';
import { BlobDecoder, BlobEncoder } from './blob-codec.js';
import { digestOf } from './crypto.js';
import { DIGEST_SIZE } from './format.js';

interface Init {
  level: number;
  key: Uint8Array | null;
  macKey: Uint8Array | null;
}

const init = workerData as Init;
const key = init.key ? Buffer.from(init.key) : null;
const encoder = new BlobEncoder(init.level, key);
const macKey = init.macKey ? Buffer.from(init.macKey) : null;
const decoder = new BlobDecoder(key, macKey);
const ZEROS = Buffer.alloc(16 << 20);

type Request =
  | { id: number; op: 'encode'; data: Uint8Array }
  | { id: number; op: 'decode'; data: Uint8Array; digest: Uint8Array; rawLength: number; where: string }
  | { id: number; op: 'hash'; shared: SharedArrayBuffer; offset: number; length: number; chunkSize: number }
  | { id: number; op: 'encodeShared'; shared: SharedArrayBuffer; offset: number; length: number }
  | { id: number; op: 'encodeMany'; shared: SharedArrayBuffer; ranges: [number, number][] }
  | {
      id: number;
      op: 'decodeRun';
      shared: SharedArrayBuffer;
      items: RunItem[];
      where: string;
      fd: number | null;
    };

/** One blob of a run read into a shared buffer (see CodecPool.decodeRun). */
interface RunItem {
  offset: number;
  length: number;
  digest: Uint8Array;
  rawLength: number;
  /** Where to write the decoded bytes (with an fd), or -1 to return them. */
  fileOffset: number;
}

/** Decodes the blobs of a run; writes them to `fd` or returns them back to back. */
function decodeRun(
  shared: SharedArrayBuffer,
  items: RunItem[],
  where: string,
  fd: number | null,
): Uint8Array[] {
  const outs: Uint8Array[] = [];
  for (const it of items) {
    const plain = decoder.decode(
      Buffer.from(shared, it.offset, it.length),
      Buffer.from(it.digest),
      it.rawLength,
      where,
    );
    if (fd === null) {
      outs.push(toTransferable(plain));
      continue;
    }
    for (let done = 0; done < plain.length; ) {
      done += writeSync(fd, plain, done, plain.length - done, it.fileOffset + done);
    }
  }
  return outs;
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
  return new Uint8Array(b);
}

parentPort!.on('message', (req: Request) => {
  try {
    let out: Buffer | Uint8Array;
    if (req.op === 'decodeRun') {
      const parts = decodeRun(req.shared, req.items, req.where, req.fd);
      parentPort!.postMessage(
        { id: req.id, parts },
        parts.map((part) => part.buffer as ArrayBuffer),
      );
      return;
    }
    if (req.op === 'encodeMany') {
      const parts = req.ranges.map(([o, l]) => toTransferable(encoder.encode(Buffer.from(req.shared, o, l))));
      parentPort!.postMessage(
        { id: req.id, parts },
        parts.map((part) => part.buffer as ArrayBuffer),
      );
      return;
    }
    if (req.op === 'hash') {
      out = hashChunks(Buffer.from(req.shared, req.offset, req.length), req.chunkSize);
    } else if (req.op === 'encodeShared') {
      out = encoder.encode(Buffer.from(req.shared, req.offset, req.length));
    } else {
      const input = Buffer.from(req.data.buffer, req.data.byteOffset, req.data.byteLength);
      out =
        req.op === 'encode'
          ? encoder.encode(input)
          : decoder.decode(input, Buffer.from(req.digest), req.rawLength, req.where);
    }
    const t = toTransferable(out);
    parentPort!.postMessage({ id: req.id, data: t }, [t.buffer as ArrayBuffer]);
  } catch (err) {
    const e = err instanceof VmvaultError ? err : null;
    parentPort!.postMessage({
      id: req.id,
      error: {
        code: e?.code ?? 'E_INTERNAL',
        message: (err as Error).message,
        hint: e?.hint,
        details: e?.details,
      },
    });
  }
});
