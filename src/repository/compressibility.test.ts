/**
 * The incompressibility guess and the XXH64 that lets a chunk skip zstd: random and compressed
 * data are recognised, anything with structure or a hole is not, and a skipped chunk's frame
 * carries the very checksum zstd would have written.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { deflateSync } from 'node:zlib';
import { Compressor } from 'zstd-napi';
import { nativeAddon } from '../core/index.js';
import { BlobDecoder, BlobEncoder } from './blob-codec.js';
import { jsSampledEntropy, looksIncompressible, sampledEntropy } from './compressibility.js';
import { digestOf, unseal } from './crypto.js';
import { Codec } from './format.js';

const KiB = 1024;

function text(n: number): Buffer {
  const words = ['backup', 'restore', 'chunk', 'pack', 'index', 'qemu', 'bitmap', 'disk'];
  const out: string[] = [];
  for (let i = 0, len = 0; len < n; i++) {
    const w = `${words[(i * 7) % words.length]} ${i} `;
    out.push(w);
    len += w.length;
  }
  return Buffer.from(out.join('')).subarray(0, n);
}

/** `n` bytes of words drawn at random from a large vocabulary (compresses about 3:1). */
function varied(n: number): Buffer {
  const vocab = Array.from({ length: 5000 }, () =>
    randomBytes(3 + (randomBytes(1)[0]! % 8)).toString('base64url'),
  );
  const pick = randomBytes(n);
  const out: string[] = [];
  for (let i = 0, len = 0; len < n; i += 2) {
    const w = vocab[((pick[i % n]! << 8) | pick[(i + 1) % n]!) % vocab.length]!;
    out.push(w, ' ');
    len += w.length + 1;
  }
  return Buffer.from(out.join('')).subarray(0, n);
}

/** zstd's content checksum of `data`: the last 4 bytes of a checksummed frame. */
function zstdChecksum(data: Buffer): number {
  const c = new Compressor();
  c.setParameters({ compressionLevel: 1, checksumFlag: true });
  const z = c.compress(data);
  return z.readUInt32LE(z.length - 4);
}

describe('incompressibility guess', () => {
  it('takes random and already-compressed chunks as incompressible', () => {
    for (let i = 0; i < 20; i++) {
      const r = randomBytes(64 * KiB);
      const h = sampledEntropy(r);
      assert.ok(h > 7.85 && h < 7.96, `random: ${h} bits per byte`);
      assert.equal(looksIncompressible(r), true);
    }
    // zstd and deflate output of varied text is close to random to an order-0 model.
    const words = varied(4 << 20);
    const c = new Compressor();
    c.setParameters({ compressionLevel: 19 });
    const z = c.compress(words);
    assert.ok(z.length > 128 * KiB);
    assert.equal(looksIncompressible(z.subarray(64 * KiB, 128 * KiB)), true);
    const d = deflateSync(words, { level: 9 });
    assert.equal(looksIncompressible(d.subarray(64 * KiB, 128 * KiB)), true);
  });

  it('leaves zeros, text, mixed data, holes and short chunks to zstd', () => {
    assert.equal(looksIncompressible(Buffer.alloc(64 * KiB)), false);
    assert.equal(looksIncompressible(text(64 * KiB)), false);
    const halves = Buffer.concat([randomBytes(32 * KiB), text(32 * KiB)]);
    assert.equal(looksIncompressible(halves), false);
    // A hole of 8 KiB anywhere in a random chunk is seen (one window falls in it).
    for (let at = 0; at + 8 * KiB <= 64 * KiB; at += 4 * KiB) {
      const r = randomBytes(64 * KiB);
      r.fill(0, at, at + 8 * KiB);
      assert.equal(looksIncompressible(r), false, `hole at ${at}`);
    }
    assert.equal(looksIncompressible(randomBytes(16 * KiB - 1)), false);
    assert.equal(looksIncompressible(randomBytes(16 * KiB)), true);
  });
});

describe('sampled entropy', () => {
  it('is the same from the native addon and from JavaScript', () => {
    const holed = randomBytes(64 * KiB).fill(0, 20 * KiB, 30 * KiB);
    for (const d of [
      randomBytes(64 * KiB),
      text(64 * KiB),
      Buffer.alloc(64 * KiB),
      holed,
      randomBytes(200 * KiB),
      randomBytes(16 * KiB),
    ]) {
      assert.ok(Math.abs(sampledEntropy(d) - jsSampledEntropy(d)) < 1e-9);
    }
  });
});

const addon = nativeAddon();
describe('XXH64 of the native addon', { skip: addon?.xxh64 ? false : 'native addon without xxh64' }, () => {
  it('matches the reference value and zstd frame checksums', () => {
    assert.equal(addon!.xxh64!(Buffer.alloc(0)), 0xef46db3751d8e999n);
    for (const n of [1, 3, 4, 5, 7, 8, 9, 15, 16, 31, 32, 33, 63, 64, 65, 100, 4096, 65535, 65536, 65537]) {
      const d = randomBytes(n);
      assert.equal(Number(addon!.xxh64!(d) & 0xffffffffn), zstdChecksum(d), `length ${n}`);
    }
  });

  it('gives a skipped chunk the frame zstd would have made, and it decodes and checks', () => {
    const enc = new BlobEncoder({ algorithm: 'zstd', level: 3 }, null, 2);
    const dec = new BlobDecoder(null, null);
    const data = randomBytes(64 * KiB);
    const digest = digestOf(data, null);
    const stored = enc.encode(data, digest);
    assert.equal(stored[0], Codec.checked);
    assert.equal(stored.readUInt32LE(stored.length - 4), zstdChecksum(data));
    assert.deepEqual(dec.decode(stored, digest, data.length, 'p', { trustSelfCheck: true }), data);
    // A flipped data byte fails the frame checksum even when the self-check is trusted.
    const bad = Buffer.from(stored);
    bad[bad.length - 100]! ^= 1;
    assert.throws(
      () => dec.decode(bad, digest, data.length, 'p', { trustSelfCheck: true }),
      (e: Error & { code?: string }) => e.code === 'E_CHUNK_CORRUPT',
    );
  });

  it('seals a skipped chunk of shared memory as the same frame, in parts or whole', () => {
    const key = randomBytes(32);
    const sealer = new BlobEncoder({ algorithm: 'zstd', level: 1 }, key, 3);
    const plainEnc = new BlobEncoder({ algorithm: 'zstd', level: 1 }, null, 3);
    const dec = new BlobDecoder(key, null);
    // 1 and 2 raw blocks go to the seal as parts (no copy); 3 blocks are too many parts.
    for (const size of [64 * KiB, 256 * KiB, 384 * KiB]) {
      const shared = new SharedArrayBuffer(size + 4096);
      const data = Buffer.from(shared, 4096, size);
      randomBytes(size).copy(data);
      const digest = digestOf(data, null);
      const sealed = sealer.encode(data, digest);
      const frame = unseal(key, sealed);
      assert.ok(frame, `${size}: opens`);
      assert.deepEqual(frame, plainEnc.encode(data, digest), `${size}: the frame a plain repository stores`);
      assert.equal(frame[0], Codec.checked);
      assert.deepEqual(dec.decode(sealed, digest, size, 'p', { trustSelfCheck: true }), Buffer.from(data));
    }
  });
});
