/**
 * The digest table: every digest added is found with its number and nothing else is, through
 * growth, duplicates, crafted near-collisions and clearing; and the location index built on it
 * keeps the first pack that holds a blob.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { DigestTable } from './digest-table.js';
import { LocationIndex } from './location-index.js';
import { BlobType } from './format.js';

function table(keys: Buffer[], expected?: number): DigestTable {
  return new DigestTable((n) => keys[n]!, expected);
}

describe('DigestTable', () => {
  it('finds every digest added, with its number, through many doublings', () => {
    const keys: Buffer[] = [];
    const t = table(keys, 4);
    for (let i = 0; i < 50_000; i++) {
      const d = randomBytes(32);
      assert.equal(t.add(d), i);
      keys.push(d);
    }
    assert.equal(t.size, 50_000);
    for (let i = 0; i < keys.length; i += 7) assert.equal(t.get(keys[i]!), i);
    // Views of other memory work as keys too.
    const page = Buffer.concat(keys.slice(100, 110));
    for (let k = 0; k < 10; k++) assert.equal(t.get(page.subarray(k * 32, k * 32 + 32)), 100 + k);
    for (let i = 0; i < 1000; i++) assert.equal(t.get(randomBytes(32)), -1);
  });

  it('refuses a digest it holds, and a key that is not 32 bytes', () => {
    const keys: Buffer[] = [];
    const t = table(keys);
    const d = randomBytes(32);
    assert.equal(t.add(d), 0);
    keys.push(d);
    assert.equal(t.add(Buffer.from(d)), -1);
    assert.equal(t.size, 1);
    assert.throws(() => t.add(randomBytes(31)), RangeError);
  });

  it('tells apart digests that agree on the bytes it hashes and tags', () => {
    const keys: Buffer[] = [];
    const t = table(keys);
    const base = randomBytes(32);
    for (let i = 0; i < 2000; i++) {
      const d = Buffer.from(base);
      d.writeUInt32LE(i, 20); // bytes 0–19 equal for all: same slot, same tag
      assert.equal(t.add(d), i);
      keys.push(d);
    }
    for (let i = 0; i < 2000; i++) assert.equal(t.get(keys[i]!), i);
    const other = Buffer.from(base);
    other.writeUInt32LE(5000, 20);
    assert.equal(t.get(other), -1);
  });

  it('is empty after clear and numbers from 0 again', () => {
    const keys: Buffer[] = [randomBytes(32), randomBytes(32)];
    const t = table(keys);
    t.add(keys[0]!);
    t.add(keys[1]!);
    t.clear();
    assert.equal(t.size, 0);
    assert.equal(t.get(keys[0]!), -1);
    keys.reverse();
    assert.equal(t.add(keys[0]!), 0);
    assert.equal(t.get(keys[0]!), 0);
  });
});

describe('LocationIndex', () => {
  it('locates each blob in the first pack that recorded it', () => {
    const idx = new LocationIndex();
    const a = randomBytes(32);
    const b = randomBytes(32);
    const entry = (digest: Buffer, offset: number) => ({
      type: BlobType.data,
      digest,
      offset,
      length: 10,
      rawLength: 20,
    });
    idx.addPack('p1', [entry(a, 0), entry(b, 10)], true);
    idx.addPack('p2', [entry(Buffer.from(b), 0)], false);
    assert.equal(idx.size, 2);
    assert.equal(idx.get(a)?.pack, 'p1');
    assert.equal(idx.get(b)?.pack, 'p1');
    assert.equal(idx.get(b)?.entry.offset, 10);
    assert.equal(idx.has(randomBytes(32)), false);
    assert.equal(idx.hasPending, true);
    idx.clear();
    assert.equal(idx.size, 0);
    assert.equal(idx.has(a), false);
  });
});
