import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isVmvaultError } from '../../core/errors.js';
import { openFilesystem } from '../open.js';
import { detectFilesystem } from '../probe.js';
import { FileReader, compareTree, readAll, run, tempDir } from '../testing/helpers.js';
import { FatFilesystem } from './filesystem.js';
import { shortNameChecksum } from './directory.js';

const tmp = tempDir('fat');
const src = join(tmp.dir, 'src');

/** A tree of names and sizes that exercises 8.3 case flags, long names and multi-cluster dirs. */
function buildFatTree(root: string): void {
  const w = (rel: string, data: Buffer | string) => {
    const p = join(root, rel);
    writeFileSync(p, data);
    utimesSync(p, new Date('2021-06-07T08:09:10Z'), new Date('2020-02-03T04:05:06Z'));
  };
  mkdirSync(join(root, 'Sub Dir/nested/deeper'), { recursive: true });
  mkdirSync(join(root, 'many'));
  w('UPPER.TXT', 'upper\n');
  w('lower.txt', 'lower\n');
  w('MiXeD.Txt', 'mixed\n');
  w('A Long File Name With Spaces.text', 'long\n');
  w('ünïcødé.txt', 'short name in code page 850\n');
  w('Ünïcødé long name – with dash.txt', 'long unicode name\n');
  w('empty', '');
  for (const n of [1, 511, 512, 513, 2048, 4097]) w(`size-${n}.bin`, randomBytes(n));
  w('big.bin', randomBytes(150 * 1024));
  w('Sub Dir/nested/deeper/leaf.dat', randomBytes(3000));
  w('Sub Dir/readme', 'sub\n');
  for (let i = 0; i < 150; i++) w(`many/entry number ${i} with a long name.txt`, `${i}\n`);
}

function mkfat(bits: 12 | 16 | 32, size: string, extra: string[] = []): string {
  const img = join(tmp.dir, `fat${bits}.img`);
  run('truncate', ['-s', size, img]);
  run('mkfs.vfat', ['-F', String(bits), '-n', `VOL${bits}`, ...extra, img]);
  run('mcopy', [
    '-i',
    img,
    '-s',
    '-m',
    '-Q',
    ...['UPPER.TXT', 'lower.txt', 'MiXeD.Txt'].map((n) => join(src, n)),
    '::/',
  ]);
  const rest = [
    'A Long File Name With Spaces.text',
    'ünïcødé.txt',
    'Ünïcødé long name – with dash.txt',
    'empty',
    'big.bin',
    'Sub Dir',
    'many',
    ...[1, 511, 512, 513, 2048, 4097].map((n) => `size-${n}.bin`),
  ];
  run('mcopy', ['-i', img, '-s', '-m', '-Q', ...rest.map((n) => join(src, n)), '::/']);
  return img;
}

describe('FAT reader', () => {
  before(() => {
    mkdirSync(src);
    buildFatTree(src);
  });
  after(() => tmp.cleanup());

  const cases: Array<{ bits: 12 | 16 | 32; size: string; extra?: string[] }> = [
    { bits: 12, size: '4M' },
    { bits: 16, size: '32M' },
    { bits: 32, size: '40M', extra: ['-s', '1'] },
  ];
  for (const c of cases) {
    it(`reads FAT${c.bits} made by mkfs.vfat and mcopy`, async () => {
      const img = mkfat(c.bits, c.size, c.extra);
      const r = await FileReader.open(img);
      try {
        const d = await detectFilesystem(r);
        assert.equal(d.type, 'vfat');
        assert.equal(d.label, `VOL${c.bits}`);
        const fs = await openFilesystem(r);
        assert.ok(fs instanceof FatFilesystem);
        assert.equal(fs.boot.fatType, c.bits);
        assert.equal(fs.label, `VOL${c.bits}`);
        assert.match(fs.uuid ?? '', /^[0-9A-F]{4}-[0-9A-F]{4}$/);
        const n = await compareTree(fs, src, { mtimeSlackMs: 2000, image: img });
        assert.ok(n > 160);
        const names = (await fs.readdir('/')).map((e) => e.name).sort();
        assert.ok(names.includes('lower.txt') && names.includes('UPPER.TXT') && names.includes('MiXeD.Txt'));
        assert.equal((await readAll(fs, '/sub dir/README')).toString(), 'sub\n', 'case-insensitive lookup');
        assert.equal((await fs.readdir('/many')).length, 150);
      } finally {
        await r.close();
      }
    });
  }

  it('computes the long-name checksum of a short name', () => {
    assert.equal(
      shortNameChecksum(Buffer.from('README  TXT', 'latin1')),
      shortNameChecksum(Buffer.from('README  TXT')),
    );
    assert.notEqual(
      shortNameChecksum(Buffer.from('README  TXT')),
      shortNameChecksum(Buffer.from('README  TXU')),
    );
  });

  it('detects a cluster chain loop', async () => {
    const img = mkfat(16, '32M');
    const { readFileSync, writeFileSync: wf } = await import('node:fs');
    const data = readFileSync(img);
    const r0 = await FileReader.open(img);
    const fs0 = (await openFilesystem(r0)) as FatFilesystem;
    const first = (await fs0.extents('/big.bin'))[0]!;
    await r0.close();
    const cluster = (first.diskOffset - fs0.boot.dataOffset) / fs0.boot.clusterSize + 2;
    // Point the file's second cluster back at its first.
    data.writeUInt16LE(cluster, fs0.boot.fatOffset + (cluster + 1) * 2);
    wf(img, data);
    const r = await FileReader.open(img);
    const fs = await openFilesystem(r);
    await assert.rejects(readAll(fs, '/big.bin'), (e) => isVmvaultError(e, 'E_FS_CORRUPT'));
    await r.close();
  });
});
