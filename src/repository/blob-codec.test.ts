/** Blob codecs: every codec round-trips, and damage of any kind is E_CHUNK_CORRUPT. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { BlobDecoder, BlobEncoder } from './blob-codec.js';
import type { Compression } from './config.js';
import { digestOf } from './crypto.js';
import { Codec, DIGEST_SIZE, LZ4_MAGIC } from './format.js';

/** 64 KiB that compress about 2:1 (random bytes each followed by zeros). */
function compressible(): Buffer {
  const b = Buffer.alloc(64 << 10);
  for (let i = 0; i < b.length; i += 64) randomBytes(32).copy(b, i);
  return b;
}

interface Setup {
  label: string;
  compression: Compression;
  encrypted: boolean;
  codec: number;
  version: number;
}

function setup(
  label: string,
  algorithm: Compression['algorithm'],
  encrypted: boolean,
  codec: number,
  version: number,
): Setup {
  return {
    label,
    compression: { algorithm, level: algorithm === 'zstd' ? 1 : 0 },
    encrypted,
    codec,
    version,
  };
}

const SETUPS: Setup[] = [
  setup('zstd', 'zstd', false, Codec.checked, 2),
  setup('lz4 (format 2)', 'lz4', false, Codec.checkedLz4, 2),
  setup('lz4, encrypted (format 2)', 'lz4', true, Codec.checkedLz4, 2),
  setup('lz4 (format 3: XXH64)', 'lz4', false, Codec.checkedLz4x, 3),
  setup('lz4, encrypted (format 3: XXH64)', 'lz4', true, Codec.checkedLz4x, 3),
  setup('none', 'none', false, Codec.raw, 2),
];

function corrupt(fn: () => unknown, why: RegExp): void {
  assert.throws(fn, (e: Error & { code?: string }) => {
    assert.equal(e.code, 'E_CHUNK_CORRUPT');
    assert.match(e.message, why);
    return true;
  });
}

for (const s of SETUPS) {
  describe(`blob codec: ${s.label}`, () => {
    const key = s.encrypted ? randomBytes(32) : null;
    const macKey = s.encrypted ? randomBytes(32) : null;
    const enc = new BlobEncoder(s.compression, key, s.version);
    const dec = new BlobDecoder(key, macKey);

    for (const [what, data] of [
      ['compressible', compressible()],
      ['random', randomBytes(64 << 10)],
      ['small', Buffer.from('x')],
    ] as const) {
      it(`round-trips ${what} data, trusted and fully checked`, () => {
        const digest = digestOf(data, macKey);
        const stored = enc.encode(data, digest);
        if (!key) assert.equal(stored[0], s.codec);
        if (what === 'compressible' && s.compression.algorithm !== 'none') {
          assert.ok(stored.length < data.length * 0.7, `stored ${stored.length} of ${data.length}`);
        }
        assert.deepEqual(dec.decode(stored, digest, data.length, 'p'), data);
        assert.deepEqual(dec.decode(stored, digest, data.length, 'p', { trustSelfCheck: true }), data);
      });
    }

    it('never returns wrong data for a flipped byte, even when trusting the self-check', () => {
      const data = compressible();
      const digest = digestOf(data, macKey);
      const stored = enc.encode(data, digest);
      // Every byte of the header region, then a sample across the rest.
      const positions = new Set<number>();
      for (let i = 0; i < Math.min(64, stored.length); i++) positions.add(i);
      for (let i = 64; i < stored.length; i += 97) positions.add(i);
      positions.add(stored.length - 1);
      let detected = 0;
      for (const at of positions) {
        const bad = Buffer.from(stored);
        bad[at]! ^= 0x10;
        // Wrong data never comes out: either the damage is reported, or the flipped bit is one
        // the format ignores (an unused header bit) and the content is exactly right.
        let out: Buffer | null = null;
        try {
          out = dec.decode(bad, digest, data.length, 'p', { trustSelfCheck: true });
        } catch (e) {
          assert.equal((e as { code?: string }).code, 'E_CHUNK_CORRUPT');
          detected++;
        }
        if (out) assert.deepEqual(out, data, `flip at ${at} of ${stored.length} gave wrong data`);
      }
      // A few flips are harmless: a match offset that moves within a run of zeros, say.
      assert.ok(detected >= positions.size * 0.9, `only ${detected} of ${positions.size} flips reported`);
    });

    it('rejects a truncated blob, a wrong length and another chunk’s blob', () => {
      const data = compressible();
      const digest = digestOf(data, macKey);
      const stored = enc.encode(data, digest);
      corrupt(() => dec.decode(stored.subarray(0, stored.length - 3), digest, data.length, 'p'), /damaged/);
      corrupt(
        () => dec.decode(stored, digest, data.length - 1, 'p', { trustSelfCheck: true }),
        /length|damaged/,
      );
      const other = compressible();
      const otherStored = enc.encode(other, digestOf(other, macKey));
      corrupt(
        () => dec.decode(otherStored, digest, data.length, 'p', { trustSelfCheck: true }),
        /another chunk|mismatch|authentication/,
      );
    });
  });
}

describe('blob codec: lz4 frames that do not check themselves', () => {
  it('refuses a frame without a content checksum', () => {
    const data = compressible();
    const digest = digestOf(data, null);
    const stored = new BlobEncoder({ algorithm: 'lz4', level: 0 }, null, 2).encode(data, digest);
    const frameAt = 1 + DIGEST_SIZE;
    assert.equal(stored.readUInt32LE(frameAt), LZ4_MAGIC);
    const bad = Buffer.from(stored);
    bad[frameAt + 4]! &= ~0x04; // clear the content-checksum flag
    corrupt(
      () => new BlobDecoder(null, null).decode(bad, digest, data.length, 'p', { trustSelfCheck: true }),
      /not a checksummed LZ4 frame/,
    );
  });
});

describe('blob codec: lz4 with XXH64 (format 3)', () => {
  it('checks the content against the trailing XXH64, and reads format 2 blobs too', () => {
    const data = compressible();
    const digest = digestOf(data, null);
    const stored = new BlobEncoder({ algorithm: 'lz4', level: 0 }, null, 3).encode(data, digest);
    assert.equal(stored[0], Codec.checkedLz4x);
    const frameAt = 1 + DIGEST_SIZE;
    assert.equal(stored.readUInt32LE(frameAt), LZ4_MAGIC);
    assert.equal(stored[frameAt + 4]! & 0x04, 0, 'the frame carries no checksum of its own');
    const dec = new BlobDecoder(null, null);
    assert.deepEqual(dec.decode(stored, digest, data.length, 'p', { trustSelfCheck: true }), data);
    const bad = Buffer.from(stored);
    bad[bad.length - 1]! ^= 0x01;
    corrupt(
      () => dec.decode(bad, digest, data.length, 'p', { trustSelfCheck: true }),
      /content checksum mismatch/,
    );
    const v2 = new BlobEncoder({ algorithm: 'lz4', level: 0 }, null, 2).encode(data, digest);
    assert.equal(v2[0], Codec.checkedLz4);
    assert.deepEqual(dec.decode(v2, digest, data.length, 'p', { trustSelfCheck: true }), data);
  });
});
