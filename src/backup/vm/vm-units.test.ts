/** Unit tests of the pure parts of the VM backup: extent composition and change-tracking plans. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { RestorePoint } from '../../repository/index.js';
import { bitmapSeq, chainPrefix } from './bitmap-names.js';
import { composeExtents } from './extents.js';
import { toChunkRanges } from './priorities.js';
import { createEmptyQcow2, emptyQcow2 } from './scratch-image.js';
import { planDisk } from './tracking-plan.js';
import type { VmDiskInfo, VmPointRecord } from './types.js';

const K = 1024;
const CS = 64 * K;

describe('composeExtents', () => {
  it('marks clean chunks unchanged and reads dirty chunks whole', () => {
    const size = 10 * CS;
    const alloc = [{ offset: 0, length: size, data: true }];
    const dirty = [{ offset: 2 * CS + 100, length: 10, data: true }];
    assert.deepEqual(composeExtents(size, CS, alloc, dirty), [
      { offset: 0, length: 2 * CS, data: true, unchanged: true },
      { offset: 2 * CS, length: CS, data: true },
      { offset: 3 * CS, length: 7 * CS, data: true, unchanged: true },
    ]);
  });

  it('records whole zero chunks inside dirty ranges as zero, partial ones as data', () => {
    const size = 4 * CS;
    const alloc = [
      { offset: 0, length: CS + 4 * K, data: true },
      { offset: CS + 4 * K, length: 3 * CS - 4 * K, data: false },
    ];
    const dirty = [{ offset: 0, length: 4 * CS, data: true }];
    assert.deepEqual(composeExtents(size, CS, alloc, dirty), [
      { offset: 0, length: 2 * CS, data: true },
      { offset: 2 * CS, length: 2 * CS, data: false },
    ]);
  });

  it('passes the allocation through without a bitmap', () => {
    const alloc = [{ offset: 0, length: CS, data: false }];
    assert.deepEqual(composeExtents(CS, CS, alloc), alloc);
  });
});

describe('planDisk', () => {
  const chain = chainPrefix('0123456789abcdef', 'vm1');
  const disk = (bitmaps: Partial<VmDiskInfo['bitmaps'][number]>[], format = 'qcow2'): VmDiskInfo => ({
    name: 'vda',
    node: 'disk0',
    format,
    filename: '/x.qcow2',
    size: 1 << 20,
    bitmaps: bitmaps.map((b) => ({
      name: 'x',
      count: 0,
      granularity: CS,
      recording: true,
      busy: false,
      persistent: true,
      ...b,
    })),
  });
  const point = (bitmap: string): RestorePoint => ({
    version: 1,
    id: 'p1',
    name: 'vm1',
    time: '',
    hostname: '',
    parent: null,
    durationMs: 0,
    tags: [],
    disks: [
      {
        name: 'vda',
        size: 1 << 20,
        chunkSize: CS,
        root: '',
        source: { kind: 'qemu-vm', path: '' },
        method: 'full',
        reason: '',
        stats: { bytesRead: 0, bytesStored: 0, chunksNew: 0, chunksReused: 0, chunksZero: 0 },
      },
    ],
    vm: {
      kind: 'qemu',
      chain,
      tracking: { vda: { node: 'disk0', bitmap, persistent: true, format: 'qcow2', filename: '' } },
    } as unknown as VmPointRecord,
  });

  it('uses the bitmap the parent started', () => {
    const p = planDisk({
      disk: disk([{ name: `${chain}3` }]),
      chain,
      parent: point(`${chain}3`),
      name: 'vm1',
    });
    assert.equal(p.method, 'bitmap');
    assert.equal(p.oldBitmap, `${chain}3`);
    assert.equal(bitmapSeq(chain, p.newBitmap), 4);
  });

  it('restarts the chain when the bitmap is missing, inconsistent, disabled or busy', () => {
    const cases: [Partial<VmDiskInfo['bitmaps'][number]>[], RegExp][] = [
      [[], /missing/],
      [[{ name: `${chain}3`, inconsistent: true }], /inconsistent/],
      [[{ name: `${chain}3`, recording: false }], /not recording/],
      [[{ name: `${chain}3`, busy: true }], /in use/],
      [[{ name: `${chain}4` }], /later restore point of vm1 was deleted/],
    ];
    for (const [bitmaps, re] of cases) {
      const p = planDisk({ disk: disk(bitmaps), chain, parent: point(`${chain}3`), name: 'vm1' });
      assert.equal(p.method, 'read-compare');
      assert.match(p.reason, re);
      assert.deepEqual(
        p.removeBitmaps,
        bitmaps.map((b) => b.name),
      );
    }
  });

  it('never touches bitmaps of other chains or tools', () => {
    const p = planDisk({
      disk: disk([{ name: 'backup-tool' }, { name: `${chainPrefix('ffff0000', 'vm1')}1` }]),
      chain,
      parent: null,
      name: 'vm1',
    });
    assert.equal(p.method, 'full');
    assert.deepEqual(p.removeBitmaps, []);
  });

  it('uses non-persistent bitmaps for raw disks', () => {
    assert.equal(planDisk({ disk: disk([], 'raw'), chain, parent: null, name: 'vm1' }).persistent, false);
  });
});

describe('toChunkRanges', () => {
  it('merges byte ranges into chunk ranges', () => {
    assert.deepEqual(
      toChunkRanges(
        [
          [0, 512],
          [CS * 3, CS * 3 + 1],
          [100, CS + 1],
        ],
        CS,
        10 * CS,
      ),
      [
        [0, 2],
        [3, 4],
      ],
    );
  });
});

describe('createEmptyQcow2', () => {
  it('writes the layout qemu-img create writes, which qemu-img checks clean', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'vmvault-qcow2-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const run = promisify(execFile);
    for (const size of [4 * 1024 * K * K, 1000 * K * K + 512 * 3, 3 * 1024 * 1024 * K * K]) {
      const mine = join(dir, `mine-${size}.qcow2`);
      await createEmptyQcow2(mine, size);
      const info = JSON.parse((await run('qemu-img', ['info', '--output=json', mine])).stdout) as {
        format: string;
        'virtual-size': number;
        'cluster-size': number;
      };
      assert.equal(info.format, 'qcow2');
      assert.equal(info['virtual-size'], size);
      assert.equal(info['cluster-size'], 64 * K);
      await run('qemu-img', ['check', '-q', mine]); // exit code 0: no leaks, no corruption
      const ref = join(dir, `ref-${size}.qcow2`);
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', ref, String(size)]);
      const theirs = (await run('qemu-img', ['map', '--output=json', ref])).stdout;
      assert.equal((await run('qemu-img', ['map', '--output=json', mine])).stdout, theirs);
    }
    await assert.rejects(createEmptyQcow2(join(dir, 'mine-4294967296.qcow2'), 1), /cannot create/);
    assert.throws(() => emptyQcow2(0), /bad virtual size/);
  });
});
