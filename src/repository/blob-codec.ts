/**
 * Encoding of one blob (a chunk or an index page) as stored in a pack: a codec byte and the
 * payload (zstd-compressed when that pays), sealed with AES-256-GCM in encrypted repositories.
 * Pure functions, used from worker threads and the main thread alike.
 *
 * Format version 2 adds the `checked` codec: the chunk's digest followed by one zstd frame that
 * carries the content size and the content checksum (XXH64). Such a blob checks itself: a reader
 * that trusts the self-check skips recomputing the SHA-256 / HMAC digest, which is the costliest
 * step of a read. Chunks that do not compress are stored as a frame of raw blocks, which
 * decodes at memory speed; chunks that look incompressible (compressibility.ts) get that frame
 * without a zstd attempt, its checksum from the native XXH64. Repositories created with lz4 compression write `checkedLz4` blobs
 * instead: the digest, then one LZ4 frame with its content size and XXH32 content checksum.
 */
import { Compressor, Decompressor } from 'zstd-napi';
import zstd from 'zstd-napi/binding.js';
import { copyBytes, type NativeAddon, nativeAddon, VmvaultError } from '../core/index.js';
import type { Compression } from './config.js';
import { looksIncompressible } from './compressibility.js';
import { digestOf, hex, SEAL_MAX_PARTS, SEAL_OVERHEAD, seal, unsealInto } from './crypto.js';
import {
  COMPRESSION_MIN_SAVING,
  Codec,
  DIGEST_SIZE,
  LZ4_FLG_CONTENT_CHECKSUM,
  LZ4_FLG_CONTENT_SIZE,
  LZ4_FLG_VERSION,
  LZ4_FLG_VERSION_MASK,
  LZ4_MAGIC,
  REPO_FORMAT_VERSION,
  XXH64_SIZE,
  ZSTD_MAGIC,
  ZSTD_MAX_BLOCK,
} from './format.js';

/** Frame header descriptor of a hand-made frame: 4-byte content size, single segment, checksum. */
const RAW_FRAME_DESCRIPTOR = (2 << 6) | (1 << 5) | (1 << 2);
/** Content-checksum bit of a frame header descriptor. */
const FRAME_CHECKSUM_FLAG = 1 << 2;
/** Magic, descriptor, 4-byte content size. */
const RAW_FRAME_HEADER = 4 + 1 + 4;

/** Block header of a raw block of `size` bytes: bit 0 last block, bits 1-2 type (0 = raw), bits 3-23 size. */
function rawBlockHeader(out: Buffer, at: number, size: number, last: boolean): void {
  out.writeUIntLE((size << 3) | (last ? 1 : 0), at, 3);
}

/**
 * A zstd frame of raw (stored) blocks holding `data`, ending with `checksum` (the low 32 bits of
 * XXH64 of `data`, as zstd computed it for the same content), after the bytes of `head` (so a
 * whole blob takes one allocation and one copy of the data, a memmove where the native addon
 * has one: `data` is often a view of a shared segment).
 */
function rawFrame(data: Uint8Array, checksum: Uint8Array, head: readonly Uint8Array[] = []): Buffer {
  const blocks = Math.max(1, Math.ceil(data.length / ZSTD_MAX_BLOCK));
  let at = 0;
  for (const h of head) at += h.length;
  const out = Buffer.allocUnsafe(at + RAW_FRAME_HEADER + 3 * blocks + data.length + 4);
  at = 0;
  for (const h of head) {
    out.set(h, at);
    at += h.length;
  }
  frameHeader(out, at, data.length);
  let p = at + RAW_FRAME_HEADER;
  for (let b = 0; b < blocks; b++) {
    const from = b * ZSTD_MAX_BLOCK;
    const size = Math.min(ZSTD_MAX_BLOCK, data.length - from);
    rawBlockHeader(out, p, size, b === blocks - 1);
    copyBytes(out, p + 3, data.subarray(from, from + size));
    p += 3 + size;
  }
  out.set(checksum, p);
  return out;
}

function frameHeader(out: Buffer, at: number, contentSize: number): void {
  out.writeUInt32LE(ZSTD_MAGIC, at);
  out[at + 4] = RAW_FRAME_DESCRIPTOR;
  out.writeUInt32LE(contentSize, at + 5);
}

/**
 * The bytes of {@link rawFrame} as parts that refer to `data` instead of copying it, for a seal
 * (which encrypts parts as their concatenation); null when that takes more than `maxParts`.
 */
function rawFrameParts(data: Uint8Array, checksum: Uint8Array, maxParts: number): Uint8Array[] | null {
  const blocks = Math.max(1, Math.ceil(data.length / ZSTD_MAX_BLOCK));
  if (2 * blocks + 1 > maxParts) return null;
  const headers = Buffer.allocUnsafe(RAW_FRAME_HEADER + 3 * blocks);
  frameHeader(headers, 0, data.length);
  const parts: Uint8Array[] = [];
  let h = RAW_FRAME_HEADER;
  for (let b = 0; b < blocks; b++) {
    const from = b * ZSTD_MAX_BLOCK;
    const size = Math.min(ZSTD_MAX_BLOCK, data.length - from);
    rawBlockHeader(headers, h, size, b === blocks - 1);
    parts.push(headers.subarray(b === 0 ? 0 : h, h + 3), data.subarray(from, from + size));
    h += 3;
  }
  parts.push(checksum);
  return parts;
}

/** Seals `head` followed by the raw frame of `data`, without copying `data` where it can. */
function sealRawFrame(
  key: Buffer,
  head: readonly Uint8Array[],
  data: Uint8Array,
  checksum: Uint8Array,
): Buffer {
  const parts = rawFrameParts(data, checksum, SEAL_MAX_PARTS - head.length);
  return seal(key, parts ? [...head, ...parts] : [...head, rawFrame(data, checksum)]);
}

/** The native addon, or an E_UNSUPPORTED error saying that LZ4 blobs need it. */
function lz4Addon(): NativeAddon {
  const addon = nativeAddon();
  if (!addon) {
    throw new VmvaultError(
      'E_UNSUPPORTED',
      "this repository uses lz4 compression, which needs vmvault's native addon",
      {
        hint: "run 'npm run build' (it needs the liblz4-dev package)",
      },
    );
  }
  return addon;
}

/** Reusable state of an encoder (one zstd context per thread). */
export class BlobEncoder {
  private readonly compressor: Compressor | null;
  private readonly checked: boolean;
  private readonly lz4: NativeAddon | null;
  private readonly level: number;
  /** Version 3 LZ4 blobs: XXH64 of the content after a frame without checksum (or null). */
  private readonly lz4x: ((data: Uint8Array) => bigint) | null;
  /** XXH64 from the native addon, to skip zstd on chunks that look incompressible; or null. */
  private readonly xxh64: ((data: Uint8Array) => bigint) | null;

  /**
   * @param compression the repository's compression (zstd level 0 or `none`: no compression).
   * @param key AES key, or null for a plain repository.
   * @param formatVersion layout version of the repository: version 2 writes self-checked blobs
   *   (when compression is on); version 1 writes what version 1 readers know.
   */
  constructor(
    compression: Compression,
    private readonly key: Buffer | null,
    formatVersion: number = REPO_FORMAT_VERSION,
  ) {
    const on =
      compression.algorithm !== 'none' && (compression.algorithm === 'lz4' || compression.level !== 0);
    this.level = compression.level;
    this.checked = formatVersion >= 2 && on;
    this.lz4 = on && compression.algorithm === 'lz4' ? lz4Addon() : null;
    const native = on ? nativeAddon() : null;
    const xxh64 = native?.xxh64 ? native.xxh64.bind(native) : null;
    this.lz4x = this.lz4 && formatVersion >= 3 ? xxh64 : null;
    this.xxh64 = this.lz4 ? null : xxh64;
    if (on && !this.lz4) {
      this.compressor = new Compressor();
      this.compressor.setParameters({ compressionLevel: compression.level, checksumFlag: this.checked });
    } else {
      this.compressor = null;
    }
  }

  /** Encodes `data`, the content named `digest`, for storage. */
  encode(data: Uint8Array, digest: Uint8Array): Buffer {
    if (this.lz4) {
      // LZ4 frames store incompressible blocks raw by themselves: no second form is needed.
      const at = 1 + DIGEST_SIZE;
      const x = this.lz4x;
      const out = Buffer.allocUnsafe(at + this.lz4.lz4Bound(data.length) + (x ? XXH64_SIZE : 0));
      out[0] = x ? Codec.checkedLz4x : Codec.checkedLz4;
      out.set(digest, 1);
      let end = at + this.lz4.lz4CompressInto(data, out, at, this.level, !x);
      if (x) {
        out.writeBigUInt64LE(x(data), end);
        end += XXH64_SIZE;
      }
      const plain = out.subarray(0, end);
      return this.key ? seal(this.key, [plain]) : plain;
    }
    if (this.checked) {
      const head = [Buffer.of(Codec.checked), digest];
      if (this.xxh64 && looksIncompressible(data)) {
        // The frame zstd's failed attempt would have led to, without the attempt.
        const sum = Buffer.allocUnsafe(4);
        sum.writeUInt32LE(Number(this.xxh64(data) & 0xffffffffn), 0);
        return this.key ? sealRawFrame(this.key, head, data, sum) : rawFrame(data, sum, head);
      }
      const z = this.compressor!.compress(data);
      const compressed = z.length <= data.length * (1 - COMPRESSION_MIN_SAVING);
      if (this.key) {
        return compressed
          ? seal(this.key, [...head, z])
          : sealRawFrame(this.key, head, data, z.subarray(z.length - 4));
      }
      return compressed ? Buffer.concat([...head, z]) : rawFrame(data, z.subarray(z.length - 4), head);
    }
    let codec: number = Codec.raw;
    let payload: Uint8Array = data;
    if (this.compressor && data.length >= 128 && !looksIncompressible(data)) {
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

/** How a {@link BlobDecoder} checks what it decodes. */
export interface DecodeOptions {
  /**
   * Accept a self-checked blob (codec `checked`) on its own checks (embedded digest, frame
   * checksum, size, and the seal in an encrypted repository) without recomputing the digest.
   * Other blobs always have their digest recomputed. Default false: every digest is recomputed.
   */
  trustSelfCheck?: boolean;
}

/** Reusable state of a decoder. */
export class BlobDecoder {
  /** Where sealed blobs are opened (grown on demand, reused: see {@link decodeInto}). */
  private scratch = Buffer.alloc(0);
  private readonly decompressor = new Decompressor();
  private readonly dctx = new zstd.DCtx();

  constructor(
    private readonly key: Buffer | null,
    private readonly macKey: Buffer | null,
  ) {}

  /**
   * Decodes a stored blob and checks it against its digest. Throws E_CHUNK_CORRUPT naming the
   * digest when the bytes were damaged: wrong data never leaves this function.
   */
  decode(
    stored: Uint8Array,
    digest: Uint8Array,
    rawLength: number,
    where: string,
    opts: DecodeOptions = {},
  ): Buffer {
    const out = Buffer.allocUnsafe(rawLength);
    this.decodeInto(stored, digest, rawLength, where, out, opts);
    return out;
  }

  /**
   * {@link decode} into `out` (at least `rawLength` bytes; a view of shared memory is fine):
   * writes the `rawLength` content bytes at its start, or throws E_CHUNK_CORRUPT. On failure
   * `out` may hold partial or wrong bytes.
   */
  decodeInto(
    stored: Uint8Array,
    digest: Uint8Array,
    rawLength: number,
    where: string,
    out: Uint8Array,
    opts: DecodeOptions = {},
  ): void {
    const damaged = (why: string): VmvaultError =>
      new VmvaultError('E_CHUNK_CORRUPT', `chunk ${hex(digest)} in ${where} is damaged: ${why}`, {
        hint: "run 'vmvault verify' to list the restore points that use it",
        details: { digest: hex(digest), where },
      });
    if (out.length < rawLength) throw new VmvaultError('E_INTERNAL', 'decode target is too small');
    const target = out.subarray(0, rawLength);
    let plain: Buffer;
    if (this.key) {
      // Opened into this decoder's scratch: the plaintext is only needed until the content is
      // in `out` (no buffer per blob).
      const need = Math.max(0, stored.length - SEAL_OVERHEAD);
      if (this.scratch.length < need) this.scratch = Buffer.allocUnsafeSlow(Math.max(need, 64 << 10));
      const p = unsealInto(this.key, stored, this.scratch);
      if (!p) throw damaged('authentication failed');
      plain = p;
    } else {
      plain = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
    }
    if (plain.length < 1) throw damaged('empty');
    const codec = plain[0];
    let selfChecked = false;
    if (codec === Codec.raw) {
      if (plain.length - 1 !== rawLength) throw damaged(`length ${plain.length - 1}, expected ${rawLength}`);
      target.set(plain.subarray(1));
    } else if (codec === Codec.zstd) {
      let data: Buffer;
      try {
        data = this.decompressor.decompress(plain.subarray(1));
      } catch (e) {
        throw damaged(`zstd: ${(e as Error).message}`);
      }
      if (data.length !== rawLength) throw damaged(`length ${data.length}, expected ${rawLength}`);
      target.set(data);
    } else if (codec === Codec.checked) {
      if (plain.length < 1 + DIGEST_SIZE + RAW_FRAME_HEADER) throw damaged('too short');
      if (!plain.subarray(1, 1 + DIGEST_SIZE).equals(digest))
        throw damaged('it was stored for another chunk');
      const frame = plain.subarray(1 + DIGEST_SIZE);
      // Only a single frame that carries a checksum checks itself.
      if (frame.readUInt32LE(0) !== ZSTD_MAGIC || (frame[4]! & FRAME_CHECKSUM_FLAG) === 0) {
        throw damaged('not a checksummed zstd frame');
      }
      let frameSize: number;
      let n = -1;
      try {
        frameSize = zstd.findFrameCompressedSize(frame);
        if (frameSize === frame.length) n = this.dctx.decompress(target, frame);
      } catch (e) {
        throw damaged(`zstd: ${(e as Error).message}`);
      }
      if (frameSize !== frame.length) throw damaged('trailing bytes after the frame');
      if (n !== rawLength) throw damaged(`length ${n}, expected ${rawLength}`);
      selfChecked = true;
    } else if (codec === Codec.checkedLz4 || codec === Codec.checkedLz4x) {
      decodeLz4(plain, digest, rawLength, target, codec === Codec.checkedLz4x, damaged);
      selfChecked = true;
    } else {
      throw damaged(`unknown codec ${codec}`);
    }
    if (selfChecked && opts.trustSelfCheck) return;
    if (!digestOf(target, this.macKey).equals(digest)) throw damaged('digest mismatch');
  }
}

/**
 * Decodes the payload of a codec 3 or 4 blob (`plain` from its codec byte on) into `target`
 * and checks it: the embedded digest, the frame header, the content size, and the frame's XXH32
 * (codec 3) or the trailing XXH64 of the content (codec 4, `xxh64Trailer`). Throws what
 * `damaged` makes.
 */
function decodeLz4(
  plain: Buffer,
  digest: Uint8Array,
  rawLength: number,
  target: Uint8Array,
  xxh64Trailer: boolean,
  damaged: (why: string) => VmvaultError,
): void {
  const trailer = xxh64Trailer ? XXH64_SIZE : 0;
  // FLG, BD, content size (8), header checksum, end mark (4): the smallest valid frame.
  if (plain.length < 1 + DIGEST_SIZE + 4 + 2 + 8 + 1 + 4 + trailer) throw damaged('too short');
  if (!plain.subarray(1, 1 + DIGEST_SIZE).equals(digest)) throw damaged('it was stored for another chunk');
  const frame = plain.subarray(1 + DIGEST_SIZE, plain.length - trailer);
  const flg = frame[4]!;
  if (
    frame.readUInt32LE(0) !== LZ4_MAGIC ||
    (flg & LZ4_FLG_VERSION_MASK) !== LZ4_FLG_VERSION ||
    (flg & LZ4_FLG_CONTENT_SIZE) === 0 ||
    (!xxh64Trailer && (flg & LZ4_FLG_CONTENT_CHECKSUM) === 0)
  ) {
    throw damaged(xxh64Trailer ? 'not an LZ4 frame with its content size' : 'not a checksummed LZ4 frame');
  }
  const size = frame.readBigUInt64LE(6);
  if (size !== BigInt(rawLength)) throw damaged(`length ${size}, expected ${rawLength}`);
  const addon = lz4Addon();
  if (xxh64Trailer && !addon.xxh64) {
    throw new VmvaultError('E_UNSUPPORTED', "this repository's LZ4 blobs need a newer native addon", {
      hint: "run 'npm run build'",
    });
  }
  let n: number;
  try {
    n = addon.lz4DecompressInto(frame, target);
  } catch (e) {
    throw damaged(`lz4: ${(e as Error).message}`);
  }
  if (n !== rawLength) throw damaged(`length ${n}, expected ${rawLength}`);
  if (xxh64Trailer && addon.xxh64!(target) !== plain.readBigUInt64LE(plain.length - XXH64_SIZE))
    throw damaged('content checksum mismatch');
}
