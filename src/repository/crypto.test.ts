import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { nativeAddon } from '../core/index.js';
import { SEAL_OVERHEAD, nodeSeal, nodeUnseal, seal, unseal, unsealInto } from './crypto.js';

const key = randomBytes(32);
const other = randomBytes(32);
const sizes = [0, 1, 15, 16, 17, 4096, 65536 + 3];

describe('seal / unseal', () => {
  it('uses the native AES-GCM when the addon is built (the set-up builds it)', () => {
    assert.equal(typeof nativeAddon()?.gcmSealInto, 'function');
  });

  it('opens into one reused buffer, and a damaged or foreign seal gives null', () => {
    const dst = Buffer.alloc(65536 + 3);
    for (const n of [...sizes].reverse()) {
      const plain = randomBytes(n);
      const sealed = seal(key, plain);
      const out = unsealInto(key, sealed, dst);
      assert.ok(out && out.buffer === dst.buffer && out.byteOffset === dst.byteOffset, 'a view of dst');
      assert.deepEqual(out, plain);
      assert.equal(unsealInto(other, sealed, dst), null);
      const bad = Buffer.from(sealed);
      bad[bad.length - 1]! ^= 1;
      assert.equal(unsealInto(key, bad, dst), null);
    }
    assert.equal(unsealInto(key, Buffer.alloc(SEAL_OVERHEAD - 1), dst), null);
    assert.throws(() => unsealInto(key, seal(key, randomBytes(100)), Buffer.alloc(99)), /too small/);
  });

  for (const n of sizes) {
    it(`native and Node seals of ${n} bytes open with either`, () => {
      const plain = randomBytes(n);
      for (const [s, u] of [
        [seal, nodeUnseal],
        [nodeSeal, unseal],
        [seal, unseal],
      ] as const) {
        const sealed = s(key, plain);
        assert.equal(sealed.length, n + SEAL_OVERHEAD);
        assert.deepEqual(u(key, sealed), plain);
      }
    });
  }

  it('seals parts as their concatenation, with a fresh nonce each time', () => {
    const a = randomBytes(100);
    const b = randomBytes(3000);
    const sealed = seal(key, [a, Buffer.alloc(0), b]);
    assert.deepEqual(nodeUnseal(key, sealed), Buffer.concat([a, b]));
    assert.notDeepEqual(seal(key, a).subarray(0, 12), seal(key, a).subarray(0, 12));
  });

  it('returns null for every flipped bit, a wrong key, or a truncated seal', () => {
    const sealed = seal(key, randomBytes(300));
    for (let i = 0; i < sealed.length; i += 7) {
      const bad = Buffer.from(sealed);
      bad[i]! ^= 1 << (i % 8);
      assert.equal(unseal(key, bad), null, `flip at ${i}`);
      assert.equal(nodeUnseal(key, bad), null, `flip at ${i} (node)`);
    }
    assert.equal(unseal(other, sealed), null);
    assert.equal(unseal(key, sealed.subarray(0, sealed.length - 1)), null);
    assert.equal(unseal(key, sealed.subarray(0, SEAL_OVERHEAD - 1)), null);
  });

  it('opens views of shared memory in place', () => {
    const plain = randomBytes(5000);
    const sealed = seal(key, plain);
    const shared = new Uint8Array(new SharedArrayBuffer(sealed.length + 64));
    shared.set(sealed, 32);
    assert.deepEqual(unseal(key, shared.subarray(32, 32 + sealed.length)), plain);
  });

  it('rejects a target that is too small instead of writing past it', () => {
    const gcm = nativeAddon()!;
    const dst = Buffer.alloc(10);
    assert.throws(() => gcm.gcmSealInto(key, randomBytes(12), [randomBytes(20)], dst, 0), /dst too small/);
    assert.throws(() => gcm.gcmSealInto(key, randomBytes(11), [], dst, 0), TypeError);
  });
});
