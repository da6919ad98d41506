/** Random access to a restore point: reads match the image and touch only the chunks needed. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { CodecPool, Repository } from '../src/repository/index.js';
import { PointReader } from '../src/restore/index.js';
import { makeExt4Image, makeTree, prng, Workspace } from './helpers.js';

describe('PointReader', () => {
  const ws = new Workspace();
  let id = '';
  before(() => {
    makeTree(ws.path('tree'), { randomMiB: 3 });
    makeExt4Image(ws.path('disk.img'), (40 << 20) + 777, ws.path('tree'));
    ws.ok(['init']);
    id = ws.ok(['backup', ws.path('disk.img'), '--json']).id;
  });
  after(() => ws.cleanup());

  it('reads any range exactly as the image has it', async () => {
    const img = readFileSync(ws.path('disk.img'));
    const repo = await Repository.open(ws.repo, { passphrase: null });
    try {
      const point = await repo.resolvePoint(id);
      const r = new PointReader(repo, point.disks[0]!, { cacheBytes: 1 << 20 });
      const rnd = prng(3);
      for (let i = 0; i < 200; i++) {
        const off = Math.floor(rnd() * img.length);
        const len = Math.min(img.length - off, Math.floor(rnd() * 300_000));
        assert.ok((await r.read(off, len)).equals(img.subarray(off, off + len)), `read ${len} at ${off}`);
      }
      // The tail, which is not a whole chunk.
      assert.ok((await r.read(img.length - 100, 100)).equals(img.subarray(img.length - 100)));
      await assert.rejects(r.read(img.length - 10, 11), /outside the disk/);
    } finally {
      await repo.close();
    }
  });

  it('fetches only the chunks a read covers, and reports zero extents without reading', async () => {
    const repo = await Repository.open(ws.repo, { passphrase: null });
    try {
      const point = await repo.resolvePoint(id);
      const r = new PointReader(repo, point.disks[0]!);
      await r.read(65536 * 3 + 10, 100);
      assert.ok(r.stats.chunkFetches <= 1);
      const ext = await r.extents(0, r.size);
      assert.equal(
        ext.reduce((s, e) => s + e.length, 0),
        r.size,
      );
      assert.ok(ext.some((e) => !e.data) && ext.some((e) => e.data));
      assert.ok(r.stats.chunkFetches <= 1, 'extents come from the tree alone');
    } finally {
      await repo.close();
    }
  });

  it('reads ahead of sequential streams, decoding on workers, and stays exact', async () => {
    const img = readFileSync(ws.path('disk.img'));
    const repo = await Repository.open(ws.repo, { passphrase: null });
    const pool = new CodecPool(repo, 2);
    try {
      const point = await repo.resolvePoint(id);
      const r = new PointReader(repo, point.disks[0]!, { pool, readAheadChunks: 32 });
      // Two interleaved sequential streams of 128 KiB reads, as two NBD connections would send.
      const half = Math.floor(img.length / 2 / 65536) * 65536;
      const step = 128 << 10;
      for (let off = 0; off + step <= half; off += step) {
        const [a, b] = await Promise.all([r.read(off, step), r.read(half + off, step)]);
        assert.ok(a.equals(img.subarray(off, off + step)), `stream 1 at ${off}`);
        assert.ok(b.equals(img.subarray(half + off, half + off + step)), `stream 2 at ${half + off}`);
      }
      assert.ok((r.stats.prefetched ?? 0) > 0, 'sequential reads were read ahead');
      assert.ok(r.stats.cacheHits > 0, 'reads found prefetched chunks');
      assert.ok((r.stats.packReads ?? 0) < r.stats.chunkFetches, 'adjacent blobs read together');
      // Random reads after that are still exact.
      const rnd = prng(9);
      for (let i = 0; i < 50; i++) {
        const off = Math.floor(rnd() * (img.length - 70000));
        assert.ok((await r.read(off, 70000)).equals(img.subarray(off, off + 70000)));
      }
    } finally {
      await pool.close();
      await repo.close();
    }
  });
});
