/** Builds the source directory trees the image tests copy into filesystems. Tests only. */
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, linkSync, mkdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './helpers.js';

/** Options of {@link buildPosixTree}. */
export interface TreeOptions {
  /** Files in /bigdir (3000 gives an htree with 4 KiB blocks). */
  bigDir?: number;
  /** Add a sparse file with data past 70 MiB (triple indirect with 1 KiB blocks). */
  farSparse?: boolean;
  /**
   * End the sparse file with data instead of a hole: `mkfs.ext4 -d` with `inline_data` (e2fsprogs
   * 1.47) records the size of such files as the end of their last data.
   */
  sparseEndsInData?: boolean;
}

/** A POSIX tree: modes, owners, symlinks, hard links, sparse files, a FIFO, nested dirs. */
export function buildPosixTree(root: string, opts: TreeOptions = {}): void {
  const w = (rel: string, data: Buffer | string, mode = 0o644, uid = 0, gid = 0) => {
    const p = join(root, rel);
    writeFileSync(p, data);
    chmodSync(p, mode);
    chownSync(p, uid, gid);
    utimesSync(p, new Date('2021-03-04T05:06:07.250Z'), new Date('2020-01-02T03:04:05.500Z'));
  };
  mkdirSync(join(root, 'sub/nested/deeper'), { recursive: true });
  w('hello.txt', 'hello, world\n');
  w('empty', '');
  w('tiny', 'x', 0o600, 1000, 1000);
  w('forty.txt', 'a'.repeat(40), 0o640, 1234, 5678);
  w('medium.bin', randomBytes(5000), 0o755, 42, 43);
  w('large.bin', randomBytes(300 * 1024), 0o644, 65536 + 7, 70000);
  w('sub/nested/deep.txt', 'deep inside\n', 0o400);
  w('sub/nested/deeper/blocks.bin', randomBytes(13 * 1024 + 17));
  w('ünïcødé name.txt', 'unicode\n');
  chmodSync(join(root, 'sub'), 0o750);
  chownSync(join(root, 'sub'), 12, 34);
  symlinkSync('hello.txt', join(root, 'fast-link'));
  symlinkSync(`sub/nested/${'x'.repeat(90)}/../deep.txt`, join(root, 'slow-link'));
  symlinkSync('/sub/nested', join(root, 'abs-dir-link'));
  linkSync(join(root, 'medium.bin'), join(root, 'sub/hardlink.bin'));
  run('mkfifo', [join(root, 'fifo')]);
  // Sparse: 9 islands of data in a 12 MiB file -> more extents than fit in the inode.
  const sparse = join(root, 'sparse.img');
  run('truncate', ['-s', opts.sparseEndsInData ? String((8 * 300 + 5 + 2) * 4096) : '12M', sparse]);
  for (let i = 0; i < 9; i++) {
    run('dd', [
      'if=/dev/urandom',
      `of=${sparse}`,
      'bs=4096',
      'count=2',
      `seek=${i * 300 + 5}`,
      'conv=notrunc',
      'status=none',
    ]);
  }
  if (opts.farSparse) {
    const far = join(root, 'far-sparse.img');
    run('truncate', ['-s', '71M', far]);
    run('dd', [
      'if=/dev/urandom',
      `of=${far}`,
      'bs=1024',
      'count=3',
      `seek=${70 * 1024}`,
      'conv=notrunc',
      'status=none',
    ]);
    run('dd', [
      'if=/dev/urandom',
      `of=${far}`,
      'bs=1024',
      'count=1',
      'seek=300',
      'conv=notrunc',
      'status=none',
    ]);
  }
  if (opts.bigDir) {
    mkdirSync(join(root, 'bigdir'));
    for (let i = 0; i < opts.bigDir; i++)
      writeFileSync(join(root, 'bigdir', `file-with-a-longish-name-${i}`), `${i}\n`);
  }
  utimesSync(join(root, 'hello.txt'), new Date('2022-01-01T00:00:00Z'), new Date('2019-12-31T23:59:58Z'));
}
