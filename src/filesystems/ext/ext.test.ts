import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isVmvaultError } from '../../core/errors.js';
import { openFilesystem } from '../open.js';
import { detectFilesystem } from '../probe.js';
import { FileReader, compareTree, readAll, run, tempDir } from '../testing/helpers.js';
import { buildPosixTree } from '../testing/source-tree.js';
import { ExtFilesystem } from './filesystem.js';
import { INODE_FLAGS } from './inode.js';

const tmp = tempDir('ext');
const src = join(tmp.dir, 'src');
/** Without the 3000-file directory and the 71 MiB sparse file (faster; inline_data mis-sizes the latter). */
const small = join(tmp.dir, 'small');
const inline = join(tmp.dir, 'inline');

function mkfs(name: string, args: string[], size = '48M', from = src): string {
  const img = join(tmp.dir, `${name}.img`);
  run('truncate', ['-s', size, img]);
  run('mkfs.ext4', ['-q', '-F', '-E', 'root_owner=0:0', ...args, '-d', from, img]);
  return img;
}

async function withFs<T>(img: string, fn: (fs: ExtFilesystem) => Promise<T>): Promise<T> {
  const r = await FileReader.open(img);
  try {
    const fs = await openFilesystem(r);
    assert.ok(fs instanceof ExtFilesystem);
    return await fn(fs);
  } finally {
    await r.close();
  }
}

const CONFIGS: Array<{
  name: string;
  args: string[];
  type: string;
  size?: string;
  full?: boolean;
  tree?: string;
}> = [
  { name: 'ext4-4k', args: ['-b', '4096', '-L', 'rootfs'], type: 'ext4', full: true },
  { name: 'ext4-1k', args: ['-b', '1024'], type: 'ext4' },
  { name: 'ext4-2k-128', args: ['-b', '2048', '-I', '128'], type: 'ext4' },
  { name: 'ext4-64bit-csum', args: ['-b', '4096', '-O', '64bit,metadata_csum'], type: 'ext4' },
  { name: 'ext4-nocsum', args: ['-b', '4096', '-O', '^metadata_csum,^64bit'], type: 'ext4' },
  { name: 'ext4-inline', args: ['-b', '4096', '-O', 'inline_data'], type: 'ext4', tree: inline },
  {
    name: 'ext4-noextents-1k',
    args: ['-b', '1024', '-O', '^extents,^64bit'],
    type: 'ext4',
    size: '96M',
    full: true,
  },
  { name: 'ext3', args: ['-t', 'ext3', '-b', '1024'], type: 'ext3', size: '96M' },
  { name: 'ext2', args: ['-t', 'ext2', '-b', '4096'], type: 'ext2' },
];

describe('ext2/3/4 reader', () => {
  before(() => {
    run('mkdir', ['-p', src]);
    buildPosixTree(src, { bigDir: 3000, farSparse: true });
    run('mkdir', ['-p', small]);
    buildPosixTree(small, { bigDir: 40 });
    run('mkdir', ['-p', inline]);
    buildPosixTree(inline, { bigDir: 40, sparseEndsInData: true });
  });
  after(() => tmp.cleanup());

  for (const c of CONFIGS) {
    it(`reads a ${c.name} image like the source tree`, async () => {
      const tree = c.tree ?? (c.full ? src : small);
      const img = mkfs(c.name, c.args, c.size ?? '48M', tree);
      await withFs(img, async (fs) => {
        assert.equal(fs.type, c.type);
        const n = await compareTree(fs, tree, { ownership: true, ignore: ['/lost+found'], image: img });
        assert.ok(n > 20);
        const big = await fs.readdir('/bigdir');
        assert.equal(big.length, c.full ? 3000 : 40);
        assert.equal(await fs.readlink('/fast-link'), 'hello.txt');
        assert.equal((await readAll(fs, '/abs-dir-link/deep.txt')).toString(), 'deep inside\n');
        const a = await fs.stat('/medium.bin');
        const b = await fs.stat('/sub/hardlink.bin');
        assert.equal(a.inode, b.inode);
        assert.equal(a.nlink, 2);
      });
      const r = await FileReader.open(img);
      const d = await detectFilesystem(r);
      await r.close();
      assert.equal(d.type, c.type);
    });
  }

  it('uses an htree for the big directory and extent trees deeper than the inode', async () => {
    const img = mkfs('ext4-htree', ['-b', '4096']);
    // mkfs -d writes linear directories; e2fsck -D rebuilds them as hashed trees.
    try {
      run('e2fsck', ['-fyD', img]);
    } catch {
      // exit status 1 means "errors corrected", which -D always reports
    }
    await withFs(img, async (fs) => {
      const dirIno = (await fs.stat('/bigdir')).inode;
      assert.ok((await fs.inode(dirIno)).flags & INODE_FLAGS.INDEX, 'bigdir is hashed');
      const sparse = await fs.inode((await fs.stat('/sparse.img')).inode);
      assert.ok(sparse.iblock.readUInt16LE(6) > 0, 'sparse file extent tree has depth > 0');
      const ext = await fs.extents('/sparse.img');
      assert.ok(ext.length >= 9, 'one extent per island at least');
      assert.equal(ext[0]!.fileOffset, 5 * 4096);
      assert.equal(
        ext.reduce((n, e) => n + e.length, 0),
        9 * 8192,
      );
      assert.equal((await fs.stat('/bigdir/file-with-a-longish-name-2999')).size, 5);
    });
  });

  it('reads inline data files and directories', async () => {
    const img = mkfs('ext4-inline2', ['-b', '4096', '-O', 'inline_data'], '48M', inline);
    await withFs(img, async (fs) => {
      const tiny = await fs.inode((await fs.stat('/tiny')).inode);
      assert.ok(tiny.flags & INODE_FLAGS.INLINE_DATA);
      const forty = await fs.inode((await fs.stat('/forty.txt')).inode);
      assert.ok(forty.flags & INODE_FLAGS.INLINE_DATA);
      const nested = await fs.inode((await fs.stat('/sub/nested/deeper')).inode);
      assert.ok(nested.flags & INODE_FLAGS.INLINE_DATA, 'small directory is inline');
      assert.deepEqual(await fs.read('/forty.txt', 0, 100), Buffer.from('a'.repeat(40)));
    });
  });

  it('reads xattrs from the inode body and from an xattr block', async () => {
    const img = mkfs('ext4-xattr', ['-b', '4096', '-I', '256'], '48M', small);
    const big = join(tmp.dir, 'bigvalue');
    run('sh', ['-c', `head -c 2000 /dev/zero | tr '\\0' 'v' > ${big}`]);
    run('debugfs', ['-w', '-R', 'ea_set /hello.txt user.color blue', img]);
    run('debugfs', ['-w', '-R', 'ea_set /hello.txt security.label top', img]);
    run('debugfs', ['-w', '-R', `ea_set -f ${big} /medium.bin user.big`, img]);
    await withFs(img, async (fs) => {
      const x = await fs.xattrs('/hello.txt');
      assert.equal(x.get('user.color')?.toString(), 'blue');
      assert.equal(x.get('security.label')?.toString(), 'top');
      const m = await fs.xattrs('/sub/hardlink.bin');
      assert.equal(m.get('user.big')?.toString(), 'v'.repeat(2000));
      assert.ok(
        (await fs.inode((await fs.stat('/medium.bin')).inode)).fileAcl > 0,
        'value lives in an xattr block',
      );
    });
  });

  it('reports checksum mismatches clearly', async () => {
    const img = mkfs('ext4-csum-bad', ['-b', '4096', '-O', 'metadata_csum'], '48M', small);
    const r = await FileReader.open(img);
    const data = Buffer.alloc(r.size);
    await r.close();
    const { readFileSync, writeFileSync } = await import('node:fs');
    readFileSync(img).copy(data);
    data[1024 + 0x78] = 0x41; // label byte changes, checksum does not
    writeFileSync(img, data);
    const r2 = await FileReader.open(img);
    await assert.rejects(
      openFilesystem(r2),
      (e) => isVmvaultError(e, 'E_FS_CORRUPT') && /checksum/.test(e.message),
    );
    await r2.close();
  });

  it('errors cleanly for missing paths and wrong types', async () => {
    const img = mkfs('ext4-errors', ['-b', '4096'], '48M', small);
    await withFs(img, async (fs) => {
      await assert.rejects(fs.stat('/nope'), (e) => isVmvaultError(e, 'E_NOT_FOUND'));
      await assert.rejects(fs.readdir('/hello.txt'), (e) => isVmvaultError(e));
      await assert.rejects(fs.readlink('/hello.txt'), (e) => isVmvaultError(e));
      assert.equal((await fs.stat('/fifo')).type, 'other');
    });
  });
});
