/**
 * Random access to a restore point: reads match the image and touch only the chunks needed;
 * lent chunks stay intact; damage is an error; the priority prefetch queue.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readdirSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CodecPool, Repository } from '../src/repository/index.js';
import { PointReader } from '../src/restore/index.js';
import { makeExt4Image, makeTree, prng, Workspace } from './helpers.js';

const CS = 64 << 10;

/** A raw image of `chunks` 64 KiB chunks: random data, except the `zero` ranges (holes). */
function makeChunkImage(path: string, chunks: number, zero: [number, number][]): Buffer {
  const img = Buffer.alloc(chunks * CS);
  for (let i = 0; i < chunks; i++) {
    if (zero.some(([a, b]) => i >= a && i < b)) continue;
    randomBytes(CS).copy(img, i * CS);
  }
  const fd = openSync(path, 'w');
  writeSync(fd, img);
  closeSync(fd);
  return img;
}

/** Waits (a bounded number of event-loop turns) until `cond` holds. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let n = 0; n < 2000 && !cond(); n++) await new Promise((r) => setTimeout(r, 2));
  assert.ok(cond(), `timed out waiting for ${what}`);
}

/** Lets queued work run for a while (for asserting that nothing more happens). */
async function settleDown(): Promise<void> {
  for (let n = 0; n < 20; n++) await new Promise((r) => setTimeout(r, 2));
}

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

describe('PointReader: shared-memory chunks, damage, format versions', () => {
  const ws = new Workspace();
  let img: Buffer;
  let id = '';
  before(() => {
    img = makeChunkImage(ws.path('disk.img'), 96, [[40, 48]]);
    ws.ok(['init']);
    id = ws.ok(['backup', ws.path('disk.img'), '--json']).id;
  });
  after(() => ws.cleanup());

  it('writes self-checked blobs and lends chunks that stay intact until released', async () => {
    const repo = await Repository.open(ws.repo, { passphrase: null });
    const pool = new CodecPool(repo, 2);
    try {
      assert.equal(repo.config.version, 3);
      const point = await repo.resolvePoint(id);
      const disk = point.disks[0]!;
      const digest = await repo
        .treeReader(Buffer.from(disk.root, 'hex'), disk.size, disk.chunkSize)
        .lookup(3);
      assert.equal((await repo.readStored(digest!)).stored[0], 2, 'codec byte of a self-checked zstd chunk');
      // A cache of 16 chunks, so reading the rest of the disk reuses every slot many times.
      const r = new PointReader(repo, disk, { pool, cacheBytes: 16 * CS, readAheadChunks: 0 });
      const lent = await r.borrow(2, 4);
      for (let i = 0; i < 96; i += 8) await r.chunks(i, 8);
      for (let k = 0; k < 4; k++) {
        assert.ok(lent.chunks[k]!.equals(img.subarray((2 + k) * CS, (3 + k) * CS)), `lent chunk ${2 + k}`);
      }
      lent.release();
      lent.release(); // a second release is harmless
      for (let i = 0; i < 96; i += 8) {
        const got = await r.chunks(i, 8);
        got.forEach((c, k) => {
          const want = img.subarray((i + k) * CS, (i + k + 1) * CS);
          if (i + k >= 40 && i + k < 48) assert.equal(c, null, `chunk ${i + k} is zero`);
          else assert.ok(c!.equals(want), `chunk ${i + k}`);
        });
      }
      assert.ok((await r.read(CS * 10 + 5, CS * 3)).equals(img.subarray(CS * 10 + 5, CS * 13 + 5)));
    } finally {
      await pool.close();
      await repo.close();
    }
  });

  it('fails a read of a damaged chunk, and only that read', async () => {
    const packDir = join(ws.repo, 'packs');
    const packs = readdirSync(packDir).flatMap((d) =>
      readdirSync(join(packDir, d)).map((f) => join(packDir, d, f)),
    );
    const victim = packs.sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
    const original = readFileSync(victim);
    const damaged = Buffer.from(original);
    // The packs hold the chunks in disk order: byte 5 MiB lies in the middle of the data.
    const pos = 5 << 20;
    damaged[pos] = damaged[pos]! ^ 0x01;
    writeFileSync(victim, damaged);
    const repo = await Repository.open(ws.repo, { passphrase: null });
    const pool = new CodecPool(repo, 2);
    try {
      const point = await repo.resolvePoint(id);
      const r = new PointReader(repo, point.disks[0]!, { pool, readAheadChunks: 0 });
      const results = await Promise.allSettled(Array.from({ length: 96 }, (_, i) => r.chunks(i, 1)));
      const failed = results.flatMap((x, i) => (x.status === 'rejected' ? [{ i, err: x.reason }] : []));
      assert.equal(failed.length, 1, 'exactly the damaged chunk fails');
      assert.equal(failed[0]!.err.code, 'E_CHUNK_CORRUPT');
      assert.match(failed[0]!.err.message, /chunk [0-9a-f]{64} in pack [0-9a-f]{64} is damaged/);
      results.forEach((x, i) => {
        if (x.status !== 'fulfilled' || x.value[0] === null) return;
        assert.ok(x.value[0]!.equals(img.subarray(i * CS, (i + 1) * CS)), `chunk ${i} is intact`);
      });
      // And the damaged chunk is not cached as if it were good.
      await assert.rejects(r.read(failed[0]!.i * CS, 10), /is damaged/);
    } finally {
      await pool.close();
      await repo.close();
      writeFileSync(victim, original);
    }
  });

  it('still reads a version 1 repository, checking every digest', async () => {
    const v1 = ws.path('repo-v1');
    await (await Repository.init(v1, { passphrase: null, formatVersion: 1 })).close();
    const bid = ws.ok(['backup', ws.path('disk.img'), '--json'], { VMVAULT_REPO: v1 }).id;
    const repo = await Repository.open(v1, { passphrase: null });
    const pool = new CodecPool(repo, 2);
    try {
      assert.equal(repo.config.version, 1);
      const point = await repo.resolvePoint(bid);
      const disk = point.disks[0]!;
      const digest = await repo
        .treeReader(Buffer.from(disk.root, 'hex'), disk.size, disk.chunkSize)
        .lookup(3);
      assert.ok([0, 1].includes((await repo.readStored(digest!)).stored[0]!), 'version 1 codecs only');
      const r = new PointReader(repo, disk, { pool });
      assert.ok((await r.read(0, img.length)).equals(img));
    } finally {
      await pool.close();
      await repo.close();
    }
  });
});

describe('PointReader.prefetch', () => {
  const ws = new Workspace();
  let img: Buffer;
  let big: Buffer;
  let id = '';
  let bigId = '';
  before(() => {
    // 160 chunks: data, except chunks 96-127 which are zero.
    img = makeChunkImage(ws.path('disk.img'), 160, [[96, 128]]);
    big = makeChunkImage(ws.path('big.img'), 640, []);
    ws.ok(['init']);
    id = ws.ok(['backup', ws.path('disk.img'), '--json']).id;
    bigId = ws.ok(['backup', ws.path('big.img'), '--json']).id;
  });
  after(() => ws.cleanup());

  it('fetches queued chunks in priority order, skips zero chunks, and stops at half the cache', async () => {
    const repo = await Repository.open(ws.repo, { passphrase: null });
    const pool = new CodecPool(repo, 1);
    try {
      const point = await repo.resolvePoint(id);
      // 64 chunks of cache: at most 32 prefetched chunks that nobody read yet.
      const r = new PointReader(repo, point.disks[0]!, { pool, cacheBytes: 64 * CS, readAheadChunks: 0 });
      r.prefetch([[128, 160]], 1);
      r.prefetch(
        [
          [96, 128],
          [0, 32],
        ],
        0,
      );
      r.prefetch([[32, 40]], 0);
      assert.equal(r.stats.prefetchQueued, 32 + 32 + 32 + 8);
      // Priority 0 first: the zero chunks cost nothing, then 32 data chunks fill the budget.
      await until(() => r.stats.prefetched === 32, '32 prefetched chunks');
      await settleDown();
      assert.equal(r.stats.prefetched, 32, 'pumping stopped at half the cache');
      assert.equal(r.stats.chunkFetches, 32, 'zero chunks were not fetched');
      assert.equal(r.stats.prefetchQueued, 8 + 32, 'the rest is still queued');
      // They are chunks 0-31: reading them hits the cache, and frees the budget.
      const hits = r.stats.cacheHits;
      const got = await r.chunks(0, 32);
      assert.equal(r.stats.cacheHits - hits, 32);
      assert.equal(r.stats.chunkFetches, 32);
      got.forEach((c, k) => {
        assert.ok(c!.equals(img.subarray(k * CS, (k + 1) * CS)));
      });
      // Next the rest of priority 0 (32-39), then priority 1 (128-159).
      await until(() => r.stats.prefetched === 32 + 8 + 24, 'the next 32 chunks');
      await settleDown();
      assert.equal(r.stats.prefetched, 64);
      const before = r.stats.chunkFetches;
      await r.chunks(32, 8);
      await r.chunks(128, 24);
      assert.equal(r.stats.chunkFetches, before, 'chunks 32-39 and 128-151 came from the cache');
      await until(() => r.stats.prefetchQueued === 0 && r.stats.prefetched === 72, 'the queue to drain');
      assert.ok((await r.read(150 * CS, 10 * CS)).equals(img.subarray(150 * CS, 160 * CS)));
    } finally {
      await pool.close();
      await repo.close();
    }
  });

  it('sends guest reads that arrive while the workers are busy as fewer batches, and answers each', async () => {
    const repo = await Repository.open(ws.repo, { passphrase: null });
    const pool = new CodecPool(repo, 1);
    try {
      const point = await repo.resolvePoint(bigId);
      const r = new PointReader(repo, point.disks[0]!, { pool, readAheadChunks: 0, cacheBytes: 64 << 20 });
      // A first request answered by the worker: it is up (before that, urgent reads decode here).
      await pool.hashShared(new SharedArrayBuffer(CS), 0, CS, CS);
      // The leaf of digests loaded, so each read goes to the worker at once.
      assert.ok((await r.read(0, CS)).equals(big.subarray(0, CS)));
      const before = r.stats.packReads ?? 0;
      // The worker is kept busy (two long hash requests, ~40 ms each) while the reads come, one
      // per event-loop turn, as NBD requests arriving one by one would.
      const busy = new SharedArrayBuffer(64 << 20);
      const hashing = [0, 1].map(() => pool.hashShared(busy, 0, busy.byteLength, CS));
      const reads: Promise<Buffer>[] = [];
      for (let i = 1; i <= 128; i++) {
        reads.push(r.read(i * CS, CS));
        await new Promise((res) => setImmediate(res));
      }
      await Promise.all(hashing);
      const got = await Promise.all(reads);
      for (const [k, b] of got.entries()) {
        assert.ok(b.equals(big.subarray((k + 1) * CS, (k + 2) * CS)), `chunk ${k + 1}`);
      }
      const packReads = (r.stats.packReads ?? 0) - before;
      // The first read goes at once, behind the hashing; the ones after it wait and go together.
      assert.ok(packReads < 64, `128 reads took ${packReads} pack reads`);
    } finally {
      await pool.close();
      await repo.close();
    }
  });

  it('serves a guest read at once while a long prefetch queue is pending', async () => {
    const repo = await Repository.open(ws.repo, { passphrase: null });
    const pool = new CodecPool(repo, 2);
    try {
      const point = await repo.resolvePoint(bigId);
      const r = new PointReader(repo, point.disks[0]!, { pool, readAheadChunks: 0 });
      r.prefetch([[0, 640]], 0);
      assert.equal(r.stats.prefetchQueued, 640);
      // The last chunks of the disk: at the far end of the queue.
      const got = await r.chunks(630, 2);
      assert.ok(got[0]!.equals(big.subarray(630 * CS, 631 * CS)));
      assert.ok(got[1]!.equals(big.subarray(631 * CS, 632 * CS)));
      // Prefetch runs at most two 64-chunk batches at once (one while a guest read waits), so
      // at most three had started when the read was answered: the queue was far from drained.
      assert.ok(r.stats.prefetchQueued! >= 640 - 3 * 64, `queue left: ${r.stats.prefetchQueued}`);
      assert.ok(r.stats.prefetched! <= 3 * 64, `prefetched before the read: ${r.stats.prefetched}`);
      r.clearPrefetch();
      assert.equal(r.stats.prefetchQueued, 0);
      const left = r.stats.prefetched!;
      await settleDown();
      assert.ok(r.stats.prefetched! - left <= 2 * 64, 'nothing new starts after clearPrefetch');
      assert.ok((await r.read(0, 640 * CS)).equals(big));
    } finally {
      await pool.close();
      await repo.close();
    }
  });
});
