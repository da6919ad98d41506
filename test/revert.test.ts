/**
 * Revert: a disk that drifted from a restore point is rolled back by writing exactly the chunks
 * that differ — raw files (also sparse, smaller and larger ones), qcow2 images through
 * qemu-nbd, and encrypted repositories (keyed digests).
 */
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, openSync, readFileSync, statSync, truncateSync, writeSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { isVmvaultError } from '../src/core/index.js';
import { run } from '../src/protocols/nbd/test-helpers.js';
import { CodecPool, type DiskRecord, Repository } from '../src/repository/index.js';
import { type RevertProgress, restoreDisk, revertDisk } from '../src/restore/index.js';
import { fileHash, makeExt4Image, makeTree, prng, Workspace } from './helpers.js';

const CS = 65536;
const SIZE = (24 << 20) + 8192; // the last chunk is short

/** Chunk numbers of `path` that hold data and that are all zeros. */
function chunkKinds(path: string): { data: number[]; zero: number[] } {
  const b = readFileSync(path);
  const data: number[] = [];
  const zero: number[] = [];
  for (let i = 0; i * CS < b.length; i++) {
    const c = b.subarray(i * CS, Math.min(b.length, (i + 1) * CS));
    (c.every((x) => x === 0) ? zero : data).push(i);
  }
  return { data, zero };
}

/**
 * Changes chunks of `path`: random bytes over some data chunks, one byte flipped in another,
 * zeros over a data chunk, data into a zero chunk and into the short last chunk. Returns the
 * distinct chunks changed.
 */
function drift(path: string, seed: number): number[] {
  const { data, zero } = chunkKinds(path);
  const rnd = prng(seed);
  const pick = (from: number[]): number => from[Math.floor(rnd() * from.length)]!;
  const fd = openSync(path, 'r+');
  const changed = new Set<number>();
  const put = (off: number, buf: Buffer): void => {
    writeSync(fd, buf, 0, buf.length, off);
    changed.add(Math.floor(off / CS));
  };
  try {
    const last = Math.ceil(SIZE / CS) - 1;
    for (let k = 0; k < 3; k++) {
      const c = pick(data.filter((x) => x !== last));
      const noise = Buffer.alloc(CS);
      for (let j = 0; j < CS; j++) noise[j] = Math.floor(rnd() * 256);
      put(c * CS, noise);
    }
    const flip = pick(data.filter((x) => !changed.has(x) && x !== last));
    const one = readFileSync(path).subarray(flip * CS + 777, flip * CS + 778);
    put(flip * CS + 777, Buffer.from([one[0]! ^ 0x40]));
    const zeroed = pick(data.filter((x) => !changed.has(x) && x !== last));
    put(zeroed * CS, Buffer.alloc(CS));
    put(pick(zero.filter((x) => x !== last)) * CS + 4096, Buffer.alloc(100, 0x5a));
    put(last * CS + 10, Buffer.alloc(20, 0x33));
  } finally {
    closeSync(fd);
  }
  return [...changed].sort((a, b) => a - b);
}

describe('revert', { timeout: 240_000 }, () => {
  const ws = new Workspace();
  const image = ws.path('disk.img');
  let repo: Repository;
  let pool: CodecPool;
  let disk: DiskRecord;

  before(async () => {
    makeTree(ws.path('tree'), { randomMiB: 3 });
    makeExt4Image(image, SIZE, ws.path('tree'));
    ws.ok(['init']);
    const id = ws.ok(['backup', image, '--json']).id as string;
    repo = await Repository.open(ws.repo, { passphrase: null });
    pool = new CodecPool(repo, 2);
    disk = (await repo.resolvePoint(id)).disks[0]!;
  });

  after(async () => {
    await pool?.close();
    await repo?.close();
    ws.cleanup();
  });

  it('writes exactly the chunks that differ, and nothing for an identical disk', async () => {
    const target = ws.path('drifted.img');
    copyFileSync(image, target);
    const changed = drift(target, 1);
    assert.equal(changed.length, 7);
    assert.notEqual(fileHash(target), fileHash(image));
    const seen: RevertProgress[] = [];
    const r = await revertDisk(repo, pool, disk, target, { onProgress: (p) => seen.push({ ...p }) });
    assert.equal(fileHash(target), fileHash(image));
    assert.equal(r.format, 'raw');
    assert.equal(r.chunksCompared, Math.ceil(SIZE / CS));
    assert.equal(r.chunksWritten, changed.length);
    assert.equal(r.bytesWritten, (changed.length - 1) * CS + (SIZE % CS));
    assert.equal(seen[seen.length - 1]!.done, SIZE);
    assert.ok(seen.length > 2);

    const again = await revertDisk(repo, pool, disk, target);
    assert.equal(again.chunksWritten, 0);
    assert.equal(again.bytesWritten, 0);
    assert.equal(again.chunksCompared, Math.ceil(SIZE / CS));
  });

  it('does not read the holes of a sparse target', async () => {
    const target = ws.path('sparse.img');
    await restoreDisk(repo, pool, disk, target); // sparse: zero chunks are holes
    const changed = drift(target, 2);
    const r = await revertDisk(repo, pool, disk, target);
    assert.equal(fileHash(target), fileHash(image));
    assert.equal(r.chunksWritten, changed.length);
    assert.ok(r.bytesRead < SIZE / 2, `read ${r.bytesRead} of ${SIZE}`);
  });

  it('extends a smaller raw file and refuses a larger one unless allowed', async () => {
    const small = ws.path('small.img');
    copyFileSync(image, small);
    truncateSync(small, SIZE - 3 * CS - 100);
    const r = await revertDisk(repo, pool, disk, small);
    assert.equal(r.extended, true);
    assert.equal(fileHash(small), fileHash(image));

    const big = ws.path('big.img');
    copyFileSync(image, big);
    truncateSync(big, SIZE + (1 << 20));
    const fd = openSync(big, 'r+');
    writeSync(fd, Buffer.alloc(4096, 0x77), 0, 4096, SIZE + 1000); // past the disk: left alone
    writeSync(fd, Buffer.alloc(4096, 0x78), 0, 4096, 3 * CS); // inside: reverted
    closeSync(fd);
    await assert.rejects(revertDisk(repo, pool, disk, big), (e) => {
      assert.ok(isVmvaultError(e, 'E_TARGET'));
      assert.match(
        e.message,
        new RegExp(`holds ${SIZE + (1 << 20)} bytes; the restore point's disk has ${SIZE}`),
      );
      return true;
    });
    const r2 = await revertDisk(repo, pool, disk, big, { allowLarger: true });
    assert.equal(r2.chunksWritten, 1);
    const b = readFileSync(big);
    assert.equal(b.length, SIZE + (1 << 20));
    assert.ok(b.subarray(0, SIZE).equals(readFileSync(image)));
    assert.ok(b.subarray(SIZE + 1000, SIZE + 5096).equals(Buffer.alloc(4096, 0x77)));
    await assert.rejects(revertDisk(repo, pool, disk, ws.path('missing.img')), /does not exist/);
  });

  it('reverts a qcow2 image through qemu-nbd', async () => {
    const q = ws.path('disk.qcow2');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=65536', image, q]);
    const { data } = chunkKinds(image);
    const hit = [data[1]!, data[20]!, data[21]!];
    await run('qemu-io', [
      '-f',
      'qcow2',
      '-c',
      `write -P 0x61 ${hit[0]! * CS + 512} 512`,
      '-c',
      `write -P 0x62 ${hit[1]! * CS} ${2 * CS}`,
      '-c',
      `write -z ${data[30]! * CS} ${CS}`,
      '-c',
      `write -P 0x63 ${200 * CS} 4096`,
      q,
    ]);
    assert.ok(!chunkKinds(image).data.includes(200));
    const before = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', image, q], {
      allowFail: true,
    });
    assert.equal(before.code, 1);
    const r = await revertDisk(repo, pool, disk, q);
    assert.equal(r.format, 'qcow2');
    assert.equal(r.chunksWritten, 5);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', image, q], { allowFail: true });
    assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
    const again = await revertDisk(repo, pool, disk, q, { format: 'qcow2' });
    assert.equal(again.chunksWritten, 0);
    assert.ok(statSync(q).size < SIZE, 'the image stays thin');
  });
});

describe('revert with an encrypted repository', { timeout: 240_000 }, () => {
  const ws = new Workspace();
  const env = { VMVAULT_PASSWORD: 'revert me' };
  const image = ws.path('disk.img');

  before(() => {
    makeTree(ws.path('tree'), { randomMiB: 2 });
    makeExt4Image(image, SIZE, ws.path('tree'));
  });
  after(() => ws.cleanup());

  it('compares keyed digests and writes exactly the drifted chunks', async () => {
    ws.ok(['init', '--encrypt'], env);
    const id = ws.ok(['backup', image, '--json'], env).id as string;
    const repo = await Repository.open(ws.repo, { passphrase: env.VMVAULT_PASSWORD });
    const pool = new CodecPool(repo, 2);
    try {
      assert.ok(repo.macKey, 'digests are keyed');
      const disk = (await repo.resolvePoint(id)).disks[0]!;
      const target = ws.path('drifted.img');
      copyFileSync(image, target);
      const changed = drift(target, 3);
      const r = await revertDisk(repo, pool, disk, target);
      assert.equal(r.chunksWritten, changed.length);
      assert.equal(fileHash(target), fileHash(image));
      assert.equal((await revertDisk(repo, pool, disk, target)).chunksWritten, 0);
    } finally {
      await pool.close();
      await repo.close();
    }
  });
});
