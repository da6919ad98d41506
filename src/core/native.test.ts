/** The native addon's memmove (`copyInto`, through `copyBytes`): exact bytes, bounds checked. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { copyBytes, nativeAddon } from './native.js';

describe('copyBytes', () => {
  it('is built into the addon', () => {
    assert.equal(typeof nativeAddon()?.copyInto, 'function');
  });

  it('copies out of and into shared memory byte for byte', () => {
    const shared = new SharedArrayBuffer(1 << 20);
    const src = Buffer.from(shared, 100, 300_000);
    randomBytes(src.length).copy(src);
    const out = Buffer.alloc(src.length + 10);
    copyBytes(out, 7, src);
    assert.deepEqual(out.subarray(7, 7 + src.length), Buffer.from(src));
    assert.equal(out[6], 0);
    assert.equal(out[7 + src.length], 0);
    const back = new Uint8Array(shared, 500_000, 300_000);
    copyBytes(back, 0, out.subarray(7, 7 + src.length));
    assert.deepEqual(Buffer.from(back), Buffer.from(src));
    copyBytes(out, out.length, new Uint8Array(0));
  });

  it('refuses a copy that does not fit', () => {
    const out = Buffer.alloc(8);
    assert.throws(() => copyBytes(out, 7, Buffer.alloc(2)), RangeError);
    assert.throws(() => copyBytes(out, -1, Buffer.alloc(1)), RangeError);
    assert.deepEqual(out, Buffer.alloc(8));
  });
});
