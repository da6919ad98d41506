/**
 * The bitmap incremental as a patch of the parent's tree: the same tree a full backup of the new
 * content makes, only dirty chunks read, and a parent with missing pieces refused.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { VmvaultError } from '../../core/index.js';
import {
  CodecPool,
  type DiskRecord,
  fromHex,
  hex,
  PAGE_FANOUT,
  Repository,
  TreeBuilder,
} from '../../repository/index.js';
import { PointReader } from '../../restore/index.js';
import type { DiskSource, SourceExtent } from '../../sources/index.js';
import { backupDisk } from '../backup-disk.js';
import { type PatchSource, patchDisk } from './patch-disk.js';

const CS = 4096;

function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i + 4 <= size; i += 4) b.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ seed) >>> 0, i);
  return b;
}

/** Chunk-aligned extents: chunks in `dirty` are data, chunks in `zero` zero, the rest unchanged. */
function extentsOf(size: number, dirty: Set<number>, zero: Set<number> = new Set()): SourceExtent[] {
  const out: SourceExtent[] = [];
  for (let i = 0; i * CS < size; i++) {
    const length = Math.min(CS, size - i * CS);
    if (dirty.has(i)) out.push({ offset: i * CS, length, data: true });
    else if (zero.has(i)) out.push({ offset: i * CS, length, data: false });
    else out.push({ offset: i * CS, length, data: true, unchanged: true });
  }
  return out;
}

function patchSource(data: Buffer, extents: SourceExtent[]): PatchSource & { reads: number[] } {
  const reads: number[] = [];
  return {
    size: data.length,
    extents,
    reads,
    async read(offset, target) {
      reads.push(offset);
      data.copy(target, 0, offset, offset + target.length);
    },
    record: { kind: 'memory', path: 'mem', format: 'raw' },
  };
}

describe('patchDisk', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmvault-patch-'));
  let repo: Repository;
  let pool: CodecPool;
  // Three leaf pages, the last one partial.
  const size = (2 * PAGE_FANOUT + 100) * CS + 77;
  const v1 = pattern(size, 1);
  let parent: DiskRecord;

  before(async () => {
    repo = await Repository.init(join(dir, 'repo'), { passphrase: null, chunkSize: CS });
    pool = new CodecPool(repo, 2);
    parent = await fullBackup(v1);
    await repo.flush();
  });
  /** A full backup of `data` (not flushed). */
  function fullBackup(data: Buffer): Promise<DiskRecord> {
    const source: DiskSource = {
      kind: 'memory',
      path: 'mem',
      format: 'raw',
      size: data.length,
      async *extents() {
        yield { offset: 0, length: data.length, data: true };
      },
      async readInto(buf, offset) {
        data.copy(buf, 0, offset, offset + buf.length);
      },
      async close() {},
    };
    return backupDisk(repo, pool, source, { name: 'disk0', method: 'full', reason: 'test' });
  }
  after(async () => {
    await pool.close();
    await repo.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('makes the tree a full backup of the new content makes, reading only dirty chunks', async () => {
    const v2 = Buffer.from(v1);
    const dirty = new Set([3, 5, PAGE_FANOUT * 2 + 100]); // leaves 0 and 2; the last chunk is short
    randomBytes(CS).copy(v2, 3 * CS);
    v2.fill(0, 5 * CS, 6 * CS); // dirty, and zero once read
    v2.fill(9, (PAGE_FANOUT * 2 + 100) * CS);
    const zero = new Set([7]); // reported zero: not read
    v2.fill(0, 7 * CS, 8 * CS);
    const src = patchSource(v2, extentsOf(size, dirty, zero));
    const inc = await patchDisk(repo, pool, src, {
      name: 'disk0',
      reason: 'test',
      parent,
      batchBytes: 2 * CS,
    });
    await repo.flush();
    assert.deepEqual(
      src.reads.sort((a, b) => a - b),
      [...dirty].map((i) => i * CS),
    );
    assert.equal(inc.stats.bytesRead, 2 * CS + 77);
    assert.equal(inc.stats.chunksNew, 2);
    assert.equal(inc.stats.chunksZero, 2);
    assert.equal(inc.stats.chunksReused, Math.ceil(size / CS) - 4);
    assert.ok((await new PointReader(repo, inc).read(0, size)).equals(v2));
    // The content-addressed tree of a full backup of v2 has the same root.
    const full = await fullBackup(v2);
    assert.equal(inc.root, full.root);
  });

  /** The parent's tree with leaf `leaf` replaced by `entries` or by the page digest `page`. */
  async function damagedParent(leaf: number, change: { chunk?: number; page?: Buffer }): Promise<DiskRecord> {
    const chunkCount = Math.ceil(size / CS);
    const reader = repo.treeReader(fromHex(parent.root), size, CS);
    const tree = new TreeBuilder(chunkCount, (_level, page) => repo.storePage(page));
    for (let l = 0; l < Math.ceil(chunkCount / PAGE_FANOUT); l++) {
      if (l === leaf && change.page) await tree.setLeaf(l, change.page);
      else if (l === leaf && change.chunk !== undefined) {
        const entries = [...(await reader.leaf(l))];
        entries[change.chunk - l * PAGE_FANOUT] = randomBytes(32); // never stored
        await tree.setLeafEntries(l, entries);
      } else await tree.setLeaf(l, await reader.entry(1, l));
    }
    const root = await tree.finish();
    await repo.flush();
    return { ...parent, root: hex(root) };
  }

  it('refuses a parent whose unchanged chunk is gone, naming it', async () => {
    const bad = await damagedParent(1, { chunk: PAGE_FANOUT + 10 });
    const src = patchSource(v1, extentsOf(size, new Set([PAGE_FANOUT + 11])));
    await assert.rejects(
      patchDisk(repo, pool, src, { name: 'disk0', reason: 'test', parent: bad }),
      (e: unknown) =>
        e instanceof VmvaultError && e.code === 'E_CHUNK_MISSING' && /chunk [0-9a-f]{64}/.test(e.message),
    );
  });

  it('refuses a parent whose untouched leaf page is gone', async () => {
    const bad = await damagedParent(2, { page: randomBytes(32) });
    const src = patchSource(v1, extentsOf(size, new Set([1])));
    await assert.rejects(
      patchDisk(repo, pool, src, { name: 'disk0', reason: 'test', parent: bad }),
      (e: unknown) =>
        e instanceof VmvaultError && e.code === 'E_CHUNK_MISSING' && /index page/.test(e.message),
    );
  });
});
