/**
 * Worker thread body of the {@link CodecPool}: encodes (compress + seal) and decodes (open +
 * decompress + check digest) blobs off the main thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { VmvaultError } from '../core/index.js';
import { BlobDecoder, BlobEncoder } from './blob-codec.js';

interface Init {
  level: number;
  key: Uint8Array | null;
  macKey: Uint8Array | null;
}

const init = workerData as Init;
const key = init.key ? Buffer.from(init.key) : null;
const encoder = new BlobEncoder(init.level, key);
const decoder = new BlobDecoder(key, init.macKey ? Buffer.from(init.macKey) : null);

type Request =
  | { id: number; op: 'encode'; data: Uint8Array }
  | { id: number; op: 'decode'; data: Uint8Array; digest: Uint8Array; rawLength: number; where: string };

function toTransferable(b: Buffer): Uint8Array {
  // Copy out of Node's shared pool when needed so the ArrayBuffer can be transferred.
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength) return b;
  return new Uint8Array(b);
}

parentPort!.on('message', (req: Request) => {
  try {
    const input = Buffer.from(req.data.buffer, req.data.byteOffset, req.data.byteLength);
    const out =
      req.op === 'encode'
        ? encoder.encode(input)
        : decoder.decode(input, Buffer.from(req.digest), req.rawLength, req.where);
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
