import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isVmvaultError } from '../../core/errors.js';
import { openFilesystem } from '../open.js';
import { probeDisk } from '../probe.js';
import { FileReader, MemoryReader, readAll, run, tempDir } from '../testing/helpers.js';
import { SliceReader } from '../util/volume.js';
import { readPartitionTable } from './table.js';

const tmp = tempDir('parts');

/** Builds a small filesystem image holding one file, for writing into a partition. */
function fsImage(kind: 'ext4' | 'vfat', name: string, size: string, label: string): string {
  const dir = join(tmp.dir, `${name}-src`);
  run('mkdir', ['-p', dir]);
  writeFileSync(join(dir, 'id.txt'), `${name}\n`);
  const img = join(tmp.dir, `${name}.fs`);
  run('truncate', ['-s', size, img]);
  if (kind === 'ext4') run('mkfs.ext4', ['-q', '-F', '-L', label, '-d', dir, img]);
  else {
    run('mkfs.vfat', ['-n', label, img]);
    run('mcopy', ['-i', img, join(dir, 'id.txt'), '::/']);
  }
  return img;
}

function place(disk: string, fsImg: string, startBytes: number): void {
  run('dd', [
    `if=${fsImg}`,
    `of=${disk}`,
    'bs=512',
    `seek=${startBytes / 512}`,
    'conv=notrunc',
    'status=none',
  ]);
}

function starts(disk: string): Array<{ node: string; start: number; size: number }> {
  const j = JSON.parse(run('sfdisk', ['--json', disk])) as {
    partitiontable: { partitions: Array<{ node: string; start: number; size: number }> };
  };
  return j.partitiontable.partitions;
}

async function withDisk<T>(path: string, fn: (r: FileReader) => Promise<T>): Promise<T> {
  const r = await FileReader.open(path);
  try {
    return await fn(r);
  } finally {
    await r.close();
  }
}

describe('partition tables and probing', () => {
  after(() => tmp.cleanup());

  it('reads a GPT with three partitions and falls back to the backup header', async () => {
    const disk = join(tmp.dir, 'gpt.img');
    run('truncate', ['-s', '64M', disk]);
    run('sgdisk', [
      '-n',
      '1:2048:+16M',
      '-t',
      '1:8300',
      '-c',
      '1:root',
      '-n',
      '2:0:+8M',
      '-t',
      '2:0700',
      '-c',
      '2:data',
      '-n',
      '3:0:0',
      '-t',
      '3:8300',
      disk,
    ]);
    const p = starts(disk);
    assert.equal(p.length, 3);
    place(disk, fsImage('ext4', 'one', '16M', 'ROOTFS'), p[0]!.start * 512);
    place(disk, fsImage('vfat', 'two', '8M', 'DATA'), p[1]!.start * 512);
    // The third is formatted in place with an offset.
    run('mkfs.ext4', [
      '-q',
      '-F',
      '-L',
      'third',
      '-E',
      `offset=${p[2]!.start * 512}`,
      disk,
      `${Math.floor((p[2]!.size * 512) / 4096)}`,
    ]);
    await withDisk(disk, async (r) => {
      const t = await readPartitionTable(r);
      assert.equal(t?.scheme, 'gpt');
      assert.equal(t?.header, 'primary');
      const vols = await probeDisk(r);
      assert.deepEqual(
        vols.map((v) => [v.index, v.type, v.label, v.start, v.partitionName]),
        [
          [1, 'ext4', 'ROOTFS', p[0]!.start * 512, 'root'],
          [2, 'vfat', 'DATA', p[1]!.start * 512, 'data'],
          [3, 'ext4', 'third', p[2]!.start * 512, ''],
        ],
      );
      assert.equal(vols[0]!.partitionType, '0FC63DAF-8483-4772-8E79-3D69D8477DE4');
      const one = await openFilesystem(new SliceReader(r, vols[0]!.start, vols[0]!.size));
      assert.equal((await readAll(one, '/id.txt')).toString(), 'one\n');
      const ext = await one.extents('/id.txt');
      const raw = await r.read(vols[0]!.start + ext[0]!.diskOffset, 4);
      assert.equal(raw.toString(), 'one\n');
      const two = await openFilesystem(new SliceReader(r, vols[1]!.start, vols[1]!.size));
      assert.equal((await readAll(two, '/id.txt')).toString(), 'two\n');
    });
    const data = readFileSync(disk);
    data[512 + 40] = data[512 + 40]! ^ 0xff; // break the primary header's CRC
    const t2 = await readPartitionTable(new MemoryReader(data));
    assert.equal(t2?.header, 'backup');
    assert.equal(t2?.partitions.length, 3);
    data[data.length - 512 + 40] = data[data.length - 512 + 40]! ^ 0xff; // and the backup's
    await assert.rejects(readPartitionTable(new MemoryReader(data)), (e) =>
      isVmvaultError(e, 'E_FS_CORRUPT'),
    );
  });

  it('reads an MBR with an extended partition holding two logical partitions', async () => {
    const disk = join(tmp.dir, 'mbr.img');
    run('truncate', ['-s', '48M', disk]);
    run('sh', ['-c', `printf 'label: dos\\n,12M,83\\n,,5\\n,8M,83\\n,,c\\n' | sfdisk -q ${disk}`]);
    const p = starts(disk);
    assert.equal(p.length, 4);
    place(disk, fsImage('ext4', 'prim', '12M', 'PRIM'), p[0]!.start * 512);
    place(disk, fsImage('ext4', 'log5', '8M', 'LOG5'), p[2]!.start * 512);
    place(disk, fsImage('vfat', 'log6', String(p[3]!.size * 512), 'LOG6'), p[3]!.start * 512);
    await withDisk(disk, async (r) => {
      const vols = await probeDisk(r);
      assert.deepEqual(
        vols.map((v) => [v.index, v.type, v.label, v.partitionType]),
        [
          [1, 'ext4', 'PRIM', '0x83'],
          [5, 'ext4', 'LOG5', '0x83'],
          [6, 'vfat', 'LOG6', '0x0c'],
        ],
      );
      const fs6 = await openFilesystem(new SliceReader(r, vols[2]!.start, vols[2]!.size));
      assert.equal((await readAll(fs6, '/id.txt')).toString(), 'log6\n');
    });
    // Point the second EBR's link at itself: the chain loops.
    const data = readFileSync(disk);
    const ext = p[1]!.start * 512;
    const rel = data.readUInt32LE(ext + 446 + 16 + 8);
    const second = ext + rel * 512;
    data[second + 446 + 16 + 4] = 0x05;
    data.writeUInt32LE(rel, second + 446 + 16 + 8);
    data.writeUInt32LE(1, second + 446 + 16 + 12);
    await assert.rejects(
      readPartitionTable(new MemoryReader(data)),
      (e) => isVmvaultError(e, 'E_FS_CORRUPT') && /loop/.test(e.message),
    );
  });

  it('reports a whole-disk filesystem as volume 0', async () => {
    const ext = fsImage('ext4', 'whole', '8M', 'WHOLE');
    const fat = fsImage('vfat', 'wholefat', '8M', 'WFAT');
    await withDisk(ext, async (r) => {
      assert.equal(await readPartitionTable(r), null);
      const v = await probeDisk(r);
      assert.deepEqual(
        v.map((x) => [x.index, x.type, x.label, x.start, x.size]),
        [[0, 'ext4', 'WHOLE', 0, r.size]],
      );
    });
    await withDisk(fat, async (r) => {
      assert.equal(await readPartitionTable(r), null);
      assert.deepEqual(
        (await probeDisk(r)).map((x) => [x.index, x.type, x.label]),
        [[0, 'vfat', 'WFAT']],
      );
    });
    const empty = await probeDisk(new MemoryReader(Buffer.alloc(1 << 20)));
    assert.deepEqual(
      empty.map((x) => [x.index, x.type]),
      [[0, 'unknown']],
    );
  });
});
