/** The pipeline with a parent: unchanged ranges are copied, dirty ones read, holes skipped. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CodecPool, Repository } from '../repository/index.js';
import { PointReader } from '../restore/index.js';
import type { DiskSource, SourceExtent } from '../sources/index.js';
import { backupDisk } from './backup-disk.js';

const CS = 64 * 1024;

/** A source over a buffer whose extents are given by the test. */
function memorySource(data: Buffer, extents: SourceExtent[]): DiskSource & { reads: [number, number][] } {
  const reads: [number, number][] = [];
  return {
    kind: 'memory',
    path: 'mem',
    format: 'raw',
    size: data.length,
    reads,
    async *extents() {
      yield* extents;
    },
    async readInto(buf, offset) {
      reads.push([offset, buf.length]);
      data.copy(buf, 0, offset, offset + buf.length);
    },
    async close() {},
  };
}

function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i + 4 <= size; i += 4) b.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ seed) >>> 0, i);
  return b;
}

describe('backupDisk with a parent', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmvault-pipeline-'));
  let repo: Repository;
  let pool: CodecPool;
  before(async () => {
    repo = await Repository.init(join(dir, 'repo'), { passphrase: null });
    pool = new CodecPool(repo, 1);
  });
  after(async () => {
    await pool.close();
    await repo.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads only changed ranges and restores the new content exactly', async () => {
    const size = 40 * CS + 1000;
    const v1 = pattern(size, 1);
    v1.fill(0, 10 * CS, 20 * CS); // a zero region
    const full = await backupDisk(repo, pool, memorySource(v1, [{ offset: 0, length: size, data: true }]), {
      name: 'disk0',
      method: 'full',
      reason: 'test',
    });
    assert.equal(full.stats.chunksZero, 10);
    await repo.flush();

    const v2 = Buffer.from(v1);
    v2.fill(7, 3 * CS + 100, 3 * CS + 200); // dirty chunk 3
    v2.fill(9, 39 * CS, size); // dirty tail: chunks 39 and 40 (short)
    const src = memorySource(v2, [
      { offset: 0, length: 3 * CS, data: true, unchanged: true },
      { offset: 3 * CS, length: CS, data: true },
      { offset: 4 * CS, length: 35 * CS, data: true, unchanged: true },
      { offset: 39 * CS, length: size - 39 * CS, data: true },
    ]);
    const inc = await backupDisk(repo, pool, src, {
      name: 'disk0',
      method: 'bitmap',
      reason: 'test',
      parent: full,
    });
    assert.equal(inc.stats.bytesRead, CS + CS + 1000);
    assert.deepEqual(src.reads, [
      [3 * CS, CS],
      [39 * CS, CS + 1000],
    ]);
    assert.equal(inc.stats.chunksNew, 3);
    await repo.flush();
    const r = new PointReader(repo, inc);
    assert.ok((await r.read(0, size)).equals(v2));
  });

  it('reads a chunk that is partly dirty and partly unchanged', async () => {
    const size = 8 * CS;
    const v1 = pattern(size, 2);
    const full = await backupDisk(repo, pool, memorySource(v1, [{ offset: 0, length: size, data: true }]), {
      name: 'disk0',
      method: 'full',
      reason: 'test',
    });
    await repo.flush();
    const v2 = Buffer.from(v1);
    v2.fill(1, 2 * CS + CS / 2, 3 * CS);
    const src = memorySource(v2, [
      { offset: 0, length: 2 * CS + CS / 2, data: true, unchanged: true },
      { offset: 2 * CS + CS / 2, length: CS / 2, data: true },
      { offset: 3 * CS, length: 5 * CS, data: true, unchanged: true },
    ]);
    const inc = await backupDisk(repo, pool, src, {
      name: 'disk0',
      method: 'bitmap',
      reason: 'test',
      parent: full,
    });
    assert.deepEqual(src.reads, [[2 * CS, CS]]);
    await repo.flush();
    assert.ok((await new PointReader(repo, inc).read(0, size)).equals(v2));
  });

  it('takes whole unchanged leaf pages from the parent', async () => {
    const small = await Repository.init(join(dir, 'repo4k'), { passphrase: null, chunkSize: 4096 });
    const pool4k = new CodecPool(small, 1);
    try {
      const size = 1300 * 4096 + 77; // three leaf pages, the last one partial
      const v1 = pattern(size, 4);
      v1.fill(0, 520 * 4096, 530 * 4096);
      const full = await backupDisk(
        small,
        pool4k,
        memorySource(v1, [{ offset: 0, length: size, data: true }]),
        {
          name: 'disk0',
          method: 'full',
          reason: 'test',
        },
      );
      await small.flush();
      const v2 = Buffer.from(v1);
      v2.fill(5, 700 * 4096, 700 * 4096 + 10);
      const src = memorySource(v2, [
        { offset: 0, length: 700 * 4096, data: true, unchanged: true },
        { offset: 700 * 4096, length: 4096, data: true },
        { offset: 701 * 4096, length: size - 701 * 4096, data: true, unchanged: true },
      ]);
      const inc = await backupDisk(small, pool4k, src, {
        name: 'disk0',
        method: 'bitmap',
        reason: 'test',
        parent: full,
      });
      assert.deepEqual(src.reads, [[700 * 4096, 4096]]);
      await small.flush();
      assert.ok((await new PointReader(small, inc).read(0, size)).equals(v2));
      // Leaf 0 and leaf 2 are the parent's own pages.
      const a = small.treeReader(Buffer.from(full.root, 'hex'), size, 4096);
      const b = small.treeReader(Buffer.from(inc.root, 'hex'), size, 4096);
      assert.deepEqual(await b.entry(1, 0), await a.entry(1, 0));
      assert.deepEqual(await b.entry(1, 2), await a.entry(1, 2));
      assert.notDeepEqual(await b.entry(1, 1), await a.entry(1, 1));
    } finally {
      await pool4k.close();
      await small.close();
    }
  });

  it('fails with E_IO when a read fails while later segments are read ahead, and leaves nothing behind', async () => {
    const size = 40 * CS;
    const v = pattern(size, 9);
    const src = memorySource(v, [{ offset: 0, length: size, data: true }]);
    const failAt = 10 * CS;
    const read = src.readInto.bind(src);
    src.readInto = async (buf, offset) => {
      // The segments after the failing one are still being read when it fails.
      if (offset > failAt) await new Promise((r) => setTimeout(r, 20));
      if (offset === failAt) throw new Error('injected read error');
      return read(buf, offset);
    };
    const opts = { name: 'disk0', method: 'full', reason: 'test', segmentSize: 2 * CS } as const;
    await assert.rejects(backupDisk(repo, pool, src, opts), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'E_IO');
      assert.match(e.message, /backup of mem failed: injected read error/);
      return true;
    });
    assert.ok(
      src.reads.some(([o]) => o > failAt),
      'segments after the failing one had been started (read ahead)',
    );
    // The same repository and pool back the disk up afterwards, and it reads back exactly.
    const ok = memorySource(v, [{ offset: 0, length: size, data: true }]);
    const d = await backupDisk(repo, pool, ok, opts);
    await repo.flush();
    assert.ok((await new PointReader(repo, d).read(0, size)).equals(v));
  });

  it('reads unchanged ranges when there is no parent', async () => {
    const v = pattern(4 * CS, 3);
    const src = memorySource(v, [{ offset: 0, length: 4 * CS, data: true, unchanged: true }]);
    const d = await backupDisk(repo, pool, src, { name: 'disk0', method: 'full', reason: 'test' });
    assert.equal(d.stats.bytesRead, 4 * CS);
  });
});
