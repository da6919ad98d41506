/** File-level restore: browse, read and extract files of partitioned and whole-disk images. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { sh, Workspace } from './helpers.js';

const MiB = 1 << 20;

/** A source tree with the features file restore must keep. */
function makeFilesTree(dir: string): void {
  mkdirSync(`${dir}/etc/app`, { recursive: true });
  mkdirSync(`${dir}/home/alice`, { recursive: true });
  writeFileSync(`${dir}/etc/hosts`, '127.0.0.1 localhost\n');
  writeFileSync(`${dir}/etc/app/app.conf`, 'answer = 42\n'.repeat(100));
  const big = Buffer.alloc(MiB + 12345);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 9)) & 0xff;
  writeFileSync(`${dir}/home/alice/big.bin`, big);
  chownSync(`${dir}/home/alice/big.bin`, 1000, 1000);
  chmodSync(`${dir}/home/alice/big.bin`, 0o640);
  chownSync(`${dir}/home/alice`, 1000, 1000);
  linkSync(`${dir}/etc/hosts`, `${dir}/etc/hosts.hardlink`);
  symlinkSync('../etc/hosts', `${dir}/home/alice/hosts-link`);
  utimesSync(`${dir}/etc/hosts`, new Date('2024-01-02T03:04:05Z'), new Date('2024-01-02T03:04:05Z'));
}

describe('files and find', () => {
  const ws = new Workspace();
  let wholeId = '';
  let gptId = '';
  before(() => {
    makeFilesTree(ws.path('tree'));
    // A whole-disk ext4 image.
    sh('truncate', ['-s', '32M', ws.path('whole.img')]);
    sh('mkfs.ext4', ['-q', '-F', '-d', ws.path('tree'), ws.path('whole.img')]);
    // A GPT disk: part1 ext4 (the same tree), part2 FAT32 with a long name.
    sh('truncate', ['-s', '80M', ws.path('gpt.img')]);
    sh('sgdisk', [
      '-o',
      '-n',
      '1:2048:+40M',
      '-t',
      '1:8300',
      '-n',
      '2:0:+36M',
      '-t',
      '2:0700',
      ws.path('gpt.img'),
    ]);
    sh('truncate', ['-s', '40M', ws.path('p1.img')]);
    sh('mkfs.ext4', ['-q', '-F', '-d', ws.path('tree'), ws.path('p1.img')]);
    sh('truncate', ['-s', '36M', ws.path('p2.img')]);
    sh('mkfs.vfat', ['-F', '32', '-n', 'DATA', ws.path('p2.img')]);
    writeFileSync(ws.path('long file name.txt'), 'fat content\n');
    sh('mcopy', ['-i', ws.path('p2.img'), ws.path('long file name.txt'), '::/']);
    sh('dd', [
      `if=${ws.path('p1.img')}`,
      `of=${ws.path('gpt.img')}`,
      'bs=1M',
      'seek=1',
      'conv=notrunc,sparse',
      'status=none',
    ]);
    sh('dd', [
      `if=${ws.path('p2.img')}`,
      `of=${ws.path('gpt.img')}`,
      'bs=1M',
      'seek=41',
      'conv=notrunc,sparse',
      'status=none',
    ]);
    ws.ok(['init']);
    wholeId = ws.ok(['backup', ws.path('whole.img'), '--name', 'whole', '--json']).id;
    gptId = ws.ok(['backup', ws.path('gpt.img'), '--name', 'gpt', '--json']).id;
  });
  after(() => ws.cleanup());

  it('lists one directory per filesystem, in partition order', () => {
    const top = ws.ok(['files', 'ls', gptId, '--json']) as { name: string; fsType: string; label?: string }[];
    assert.deepEqual(
      top.map((e) => [e.name, e.fsType]),
      [
        ['part1', 'ext4'],
        ['part2', 'vfat'],
      ],
    );
    assert.equal(top[1]!.label, 'DATA');
    const whole = ws.ok(['files', 'ls', wholeId, '--json']) as { name: string }[];
    assert.deepEqual(
      whole.map((e) => e.name),
      ['disk'],
    );
    const etc = ws.ok(['files', 'ls', gptId, '/part1/etc', '--json']) as {
      name: string;
      type: string;
      size: number;
    }[];
    assert.deepEqual(etc.map((e) => e.name).sort(), ['app', 'hosts', 'hosts.hardlink']);
    const fat = ws.ok(['files', 'ls', gptId, '/part2', '--json']) as { name: string }[];
    assert.ok(fat.some((e) => e.name === 'long file name.txt'));
  });

  it('cats a file byte for byte', () => {
    const r = spawnSync(
      process.execPath,
      [`${process.cwd()}/bin/vmvault`, 'files', 'cat', gptId, '/part1/home/alice/big.bin'],
      {
        env: ws.env,
        maxBuffer: 8 * MiB,
      },
    );
    assert.equal(r.status, 0, String(r.stderr));
    assert.ok(Buffer.from(r.stdout).equals(readFileSync(ws.path('tree/home/alice/big.bin'))));
    assert.equal(ws.ok(['files', 'cat', gptId, '/part2/long file name.txt']), 'fat content\n');
  });

  it('stops quietly when the reader of its output goes away', () => {
    // `head` exits after one byte; the rest of the 1 MiB file hits a closed pipe.
    const r = spawnSync(
      'bash',
      [
        '-o',
        'pipefail',
        '-c',
        '"$0" "$1" files cat "$2" /part1/home/alice/big.bin | head -c 1 >/dev/null',
        process.execPath,
        `${process.cwd()}/bin/vmvault`,
        gptId,
      ],
      { env: ws.env, encoding: 'utf8' },
    );
    assert.equal(r.stderr, '', 'no stack trace on a broken pipe');
    assert.equal(r.status, 141, 'the status of a process stopped by SIGPIPE');
  });

  it('restores files keeping mode, owner, times, symlinks and hard links', () => {
    const out = ws.path('out');
    ws.ok(['files', 'restore', wholeId, '/disk/etc', '/disk/home', '--to', out]);
    const src = ws.path('tree');
    for (const p of ['etc/hosts', 'etc/app/app.conf', 'home/alice/big.bin']) {
      const a = lstatSync(`${src}/${p}`);
      const b = lstatSync(`${out}/${p}`);
      assert.ok(readFileSync(`${out}/${p}`).equals(readFileSync(`${src}/${p}`)), p);
      assert.equal(b.mode, a.mode, `${p} mode`);
      assert.equal(b.uid, a.uid, `${p} uid`);
      assert.equal(b.gid, a.gid, `${p} gid`);
      assert.equal(Math.floor(b.mtimeMs / 1000), Math.floor(a.mtimeMs / 1000), `${p} mtime`);
    }
    assert.equal(readlinkSync(`${out}/home/alice/hosts-link`), '../etc/hosts');
    assert.equal(
      lstatSync(`${out}/etc/hosts`).ino,
      lstatSync(`${out}/etc/hosts.hardlink`).ino,
      'hard link kept',
    );
    assert.equal(lstatSync(`${out}/home/alice`).uid, 1000);
  });

  it('writes a tar that tar reads back', () => {
    const tarFile = ws.path('x.tar');
    const r = spawnSync(
      process.execPath,
      [`${process.cwd()}/bin/vmvault`, 'files', 'restore', wholeId, '/disk/etc', '--tar'],
      {
        env: ws.env,
        maxBuffer: 16 * MiB,
      },
    );
    assert.equal(r.status, 0, String(r.stderr));
    writeFileSync(tarFile, r.stdout);
    mkdirSync(ws.path('untar'));
    sh('tar', ['-xpf', tarFile, '-C', ws.path('untar')]);
    assert.ok(
      readFileSync(ws.path('untar/etc/app/app.conf')).equals(readFileSync(ws.path('tree/etc/app/app.conf'))),
    );
    assert.equal(
      lstatSync(ws.path('untar/etc/hosts')).ino,
      lstatSync(ws.path('untar/etc/hosts.hardlink')).ino,
    );
    assert.equal(lstatSync(ws.path('untar/etc/hosts')).mtime.toISOString(), '2024-01-02T03:04:05.000Z');
  });

  it('finds files across restore points, with versions', async () => {
    // A second backup of the whole disk after changing one file.
    sh('debugfs', ['-w', '-R', 'rm /etc/app/app.conf', ws.path('whole.img')]);
    writeFileSync(ws.path('new.conf'), 'answer = 43\n');
    sh('debugfs', ['-w', '-R', `write ${ws.path('new.conf')} /etc/app/app.conf`, ws.path('whole.img')]);
    ws.ok(['backup', ws.path('whole.img'), '--name', 'whole']);
    const found = ws.ok(['find', 'app.conf', '--json']) as {
      path: string;
      pointName: string;
      version: number;
      size: number;
    }[];
    const whole = found.filter((f) => f.pointName === 'whole');
    assert.equal(whole.length, 2);
    assert.deepEqual(
      whole.map((f) => f.version),
      [1, 2],
    );
    assert.ok(found.some((f) => f.pointName === 'gpt' && f.path === '/part1/etc/app/app.conf'));
    const byPath = ws.ok(['find', '/part2/*.txt', '--json']) as { path: string }[];
    assert.deepEqual(
      byPath.map((f) => f.path),
      ['/part2/long file name.txt'],
    );
    assert.deepEqual(ws.ok(['find', 'nothing-like-this', '--json']), []);
  });

  it("gives a backup of an unchanged disk its parent's file index", () => {
    const a = ws.ok(['backup', ws.path('gpt.img'), '--name', 'gpt', '--json']);
    const b = ws.ok(['backup', ws.path('gpt.img'), '--name', 'gpt', '--json']);
    assert.ok(a.filesIndexed > 5);
    assert.equal(b.filesIndexed, a.filesIndexed);
    const found = ws.ok(['find', '/part2/*.txt', '--json']) as { pointId: string }[];
    assert.ok(found.some((f) => f.pointId === b.id));
  });

  it('rebuilds the file index from the repository when the catalog is gone', () => {
    const found = ws.ok(['find', 'hosts', '--json', '--catalog', ws.path('fresh.db')]) as {
      pointName: string;
    }[];
    assert.ok(found.length >= 3);
  });

  it('answers files ls from the file index exactly as the filesystem does', () => {
    const cases: [string, string][] = [
      [gptId, '/part1'],
      [gptId, '/part1/etc'],
      [gptId, 'part1/home/alice'],
      [gptId, '/part1/home/alice/hosts-link'],
      [gptId, '/part1/etc/hosts'],
      [gptId, '/part2'],
      [wholeId, '/disk'],
      [wholeId, '/disk/home/alice'],
      ['whole:latest', '/disk/etc/app'],
    ];
    const indexed = cases.map(([id, path]) => ws.ok(['files', 'ls', id, path, '--json']));
    for (const [i, [id, path]] of cases.entries())
      assert.deepEqual(indexed[i], ws.ok(['files', 'ls', id, path, '--from-fs', '--json']), `${id} ${path}`);
    const link = indexed[3] as { name: string; target?: string }[];
    assert.deepEqual(link, [{ ...link[0], name: 'hosts-link', target: '../etc/hosts' }]);
    // Without the packs only the index can answer: the listings must not change.
    renameSync(ws.path('repo/packs'), ws.path('packs.away'));
    try {
      for (const [i, [id, path]] of cases.entries())
        assert.deepEqual(
          ws.ok(['files', 'ls', id, path, '--json']),
          indexed[i],
          `${id} ${path} from the index`,
        );
      assert.ok((ws.ok(['find', 'hosts', '--json']) as unknown[]).length >= 2);
      // Above the filesystems (the list of volumes) the point itself is read: that needs the packs.
      assert.notEqual(ws.run(['files', 'ls', gptId, '/']).code, 0);
    } finally {
      renameSync(ws.path('packs.away'), ws.path('repo/packs'));
    }
  });

  it('gives clear errors for bad paths and unbrowsable volumes', () => {
    const r = ws.run(['files', 'ls', gptId, '/part9']);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /\/part9 is not in restore point [0-9a-f]+; its top-level directories: part1, part2/,
    );
    const c = ws.run(['files', 'cat', gptId, '/part1/etc']);
    assert.match(c.stderr, /is a dir, not a regular file/);
    const m = ws.run(['files', 'cat', gptId, '/part1/etc/missing']);
    assert.equal(m.code, 1);
    assert.match(m.stderr, /missing/);
  });
});
