/**
 * Encoding of one blob (a chunk or an index page) as stored in a pack: a codec byte and the
 * payload (zstd-compressed when that pays), sealed with AES-256-GCM in encrypted repositories.
 * Pure functions, used from worker threads and the main thread alike.
 */
import { Compressor, Decompressor } from 'zstd-napi';
import { VmvaultError } from '../core/index.js';
import { digestOf, hex, seal, unseal } from './crypto.js';
import { COMPRESSION_MIN_SAVING, Codec } from './format.js';

/** Reusable state of an encoder (one zstd context per thread). */
export class BlobEncoder {
  private readonly compressor: Compressor | null;

  /**
   * @param level zstd level (negative levels are the fast ones), or 0 for no compression.
   * @param key AES key, or null for a plain repository.
   */
  constructor(
    level: number,
    private readonly key: Buffer | null,
  ) {
    if (level !== 0) {
      this.compressor = new Compressor();
      this.compressor.setParameters({ compressionLevel: level });
    } else {
      this.compressor = null;
    }
  }

  /** Encodes `data` for storage. */
  encode(data: Uint8Array): Buffer {
    let codec: number = Codec.raw;
    let payload: Uint8Array = data;
    if (this.compressor && data.length >= 128) {
      const z = this.compressor.compress(data);
      if (z.length <= data.length * (1 - COMPRESSION_MIN_SAVING)) {
        codec = Codec.zstd;
        payload = z;
      }
    }
    const head = Buffer.of(codec);
    return this.key ? seal(this.key, [head, payload]) : Buffer.concat([head, payload]);
  }
}

/** Reusable state of a decoder. */
export class BlobDecoder {
  private readonly decompressor = new Decompressor();

  constructor(
    private readonly key: Buffer | null,
    private readonly macKey: Buffer | null,
  ) {}

  /**
   * Decodes a stored blob and checks it against its digest. Throws E_CHUNK_CORRUPT naming the
   * digest when the bytes were damaged: wrong data never leaves this function.
   */
  decode(stored: Uint8Array, digest: Uint8Array, rawLength: number, where: string): Buffer {
    const fail = (why: string): never => {
      throw new VmvaultError('E_CHUNK_CORRUPT', `chunk ${hex(digest)} in ${where} is damaged: ${why}`, {
        hint: "run 'vmvault verify' to list the restore points that use it",
        details: { digest: hex(digest), where },
      });
    };
    let plain: Buffer;
    if (this.key) {
      const p = unseal(this.key, stored);
      if (!p) return fail('authentication failed');
      plain = p;
    } else {
      plain = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
    }
    if (plain.length < 1) return fail('empty');
    const codec = plain[0];
    let data: Buffer;
    if (codec === Codec.raw) {
      data = plain.subarray(1);
    } else if (codec === Codec.zstd) {
      try {
        data = this.decompressor.decompress(plain.subarray(1));
      } catch (e) {
        return fail(`zstd: ${(e as Error).message}`);
      }
    } else {
      return fail(`unknown codec ${codec}`);
    }
    if (data.length !== rawLength) return fail(`length ${data.length}, expected ${rawLength}`);
    if (!digestOf(data, this.macKey).equals(digest)) return fail('digest mismatch');
    return data;
  }
}
