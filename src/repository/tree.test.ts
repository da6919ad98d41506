/** The restore-point tree: build and read back, zero pages, odd sizes, malformed pages. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { PAGE_FANOUT } from './format.js';
import { decodePage, encodePage, levelsFor, TreeBuilder, TreeReader } from './tree.js';

function memoryStore() {
  const pages = new Map<string, Buffer>();
  return {
    pages,
    store: async (_level: number, page: Buffer) => {
      const d = createHash('sha256').update(page).digest();
      pages.set(d.toString('hex'), page);
      return d;
    },
    load: async (d: Buffer) => {
      const p = pages.get(d.toString('hex'));
      if (!p) throw new Error('missing page');
      return p;
    },
  };
}

const digestFor = (i: number) => createHash('sha256').update(`chunk ${i}`).digest();

describe('restore-point tree', () => {
  for (const count of [1, 511, 512, 513, PAGE_FANOUT * PAGE_FANOUT + 3]) {
    it(`round-trips ${count} chunks with gaps`, async () => {
      const m = memoryStore();
      const b = new TreeBuilder(count, m.store);
      const present = new Set<number>();
      for (let i = 0; i < count; i += i < 2000 ? 3 : 7919) {
        present.add(i);
        await b.set(i, digestFor(i));
      }
      const root = await b.finish();
      const r = new TreeReader(root, count, m.load);
      for (const i of [0, 1, 2, 3, count - 1, Math.floor(count / 2)]) {
        assert.deepEqual(await r.lookup(i), present.has(i) ? digestFor(i) : null, `chunk ${i}`);
      }
      let seen = 0;
      for await (const leaf of r.leaves()) {
        leaf.entries.forEach((e, k) => {
          if (e) {
            assert.ok(present.has(leaf.first + k));
            assert.deepEqual(e, digestFor(leaf.first + k));
            seen++;
          }
        });
      }
      assert.equal(seen, present.size);
      assert.equal(r.levels, levelsFor(count));
    });
  }

  it('stores nothing for an all-zero disk', async () => {
    const m = memoryStore();
    const b = new TreeBuilder(100_000, m.store);
    await b.set(5, null);
    const root = await b.finish();
    assert.ok(root.equals(Buffer.alloc(32)));
    assert.equal(m.pages.size, 0);
  });

  it('shares unchanged pages between trees', async () => {
    const m = memoryStore();
    const build = async (changed: number | null) => {
      const b = new TreeBuilder(4096, m.store);
      for (let i = 0; i < 4096; i++) await b.set(i, i === changed ? digestFor(-1) : digestFor(i));
      return b.finish();
    };
    await build(null);
    const before = m.pages.size;
    await build(100);
    // One leaf and the root are new; the other seven leaves are shared.
    assert.equal(m.pages.size - before, 2);
  });

  it('builds the same tree from whole leaves as from single chunks', async () => {
    const m = memoryStore();
    const count = PAGE_FANOUT * 3 + 17;
    const digest = (i: number) =>
      i % 5 === 0 || (i >= PAGE_FANOUT && i < 2 * PAGE_FANOUT) ? null : digestFor(i);
    const one = new TreeBuilder(count, m.store);
    for (let i = 0; i < count; i++) await one.set(i, digest(i));
    const rootOne = await one.finish();
    const whole = new TreeBuilder(count, m.store);
    for (let leaf = 0; leaf * PAGE_FANOUT < count; leaf++) {
      const first = leaf * PAGE_FANOUT;
      const n = Math.min(PAGE_FANOUT, count - first);
      await whole.setLeafEntries(
        leaf,
        Array.from({ length: n }, (_, k) => digest(first + k)),
      );
    }
    assert.deepEqual(await whole.finish(), rootOne);
    const mixed = new TreeBuilder(count, m.store);
    await mixed.set(3, digest(3));
    await assert.rejects(() => mixed.setLeafEntries(0, []), /out of order/);
    await assert.rejects(
      () => mixed.setLeafEntries(3, new Array(PAGE_FANOUT + 1).fill(null)),
      /out of order/,
    );
  });

  it('rejects malformed pages', () => {
    const page = encodePage(0, [digestFor(1), null, digestFor(3)])!;
    const d = Buffer.alloc(32);
    assert.throws(() => decodePage(page, 1, 3, d), /level 0, expected 1/);
    assert.throws(() => decodePage(page, 0, 4, d), /entries, expected 4/);
    assert.throws(() => decodePage(page.subarray(0, page.length - 1), 0, 3, d), /truncated|trailing/);
    const bad = Buffer.from(page);
    bad[0] = 0;
    assert.throws(() => decodePage(bad, 0, 3, d), /bad magic/);
  });
});
