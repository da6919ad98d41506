/** Backup and restore round trips of real ext4 images, holes kept, odd sizes included. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { allocated, BIN, fileHash, makeExt4Image, makeTree, randomWrites, Workspace } from './helpers.js';

describe('backup and restore of ext4 images', () => {
  const ws = new Workspace();
  before(() => {
    makeTree(ws.path('tree'), { randomMiB: 3 });
    ws.ok(['init']);
  });
  after(() => ws.cleanup());

  // Sizes: a multiple of the chunk size, and sizes that are not (odd, and one byte past a chunk).
  for (const size of [64 << 20, (48 << 20) + 12345, (32 << 20) + 65537]) {
    it(`restores a ${size}-byte image byte-identical with its holes`, () => {
      const img = ws.path(`disk-${size}.img`);
      makeExt4Image(img, size, ws.path('tree'));
      const b = ws.ok(['backup', img, '--name', `d${size}`, '--json']);
      assert.equal(typeof b.id, 'string');
      assert.equal(b.name, `d${size}`);
      assert.ok(b.bytesRead > 0 && b.bytesRead < size, `bytesRead ${b.bytesRead} skips holes`);
      assert.ok(b.bytesStored > 0);
      assert.equal(typeof b.durationMs, 'number');
      const out = ws.path(`out-${size}.img`);
      ws.ok(['restore', b.id, out]);
      assert.equal(fileHash(out), fileHash(img));
      // Holes kept: the restore allocates no more than the image does (plus one chunk of slack).
      assert.ok(
        allocated(out) <= allocated(img) + 65536,
        `restored ${allocated(out)} vs source ${allocated(img)} allocated bytes`,
      );
    });
  }

  it('lists points grouped by name and resolves prefixes and NAME:latest', () => {
    const list = ws.ok(['list', '--json']) as { id: string; name: string; time: string }[];
    assert.equal(list.length, 3);
    for (const p of list) assert.ok(p.id && p.name && !Number.isNaN(Date.parse(p.time)));
    const first = list[0]!;
    const out = ws.path('prefix.img');
    ws.ok(['restore', first.id.slice(0, 6), out]);
    ws.ok(['restore', `${first.name}:latest`, ws.path('latest.img')]);
    assert.equal(fileHash(out), fileHash(ws.path('latest.img')));
  });

  it('refuses to overwrite an existing target without --force', () => {
    const list = ws.ok(['list', '--json']) as { id: string }[];
    const r = ws.run(['restore', list[0]!.id, ws.path('prefix.img')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /already exists.*--force/);
  });

  it('stores only the changed chunks in an incremental backup', async () => {
    const img = ws.path('inc.img');
    makeExt4Image(img, 64 << 20, ws.path('tree'));
    const full = ws.ok(['backup', img, '--name', 'inc', '--json']);
    // 20 writes of 4 KiB at 64 KiB-aligned offsets inside the first 32 MiB: distinct chunks.
    const offsets = await randomWrites(img, 20, 4096, 65536, 7, 32 << 20);
    const changedChunks = new Set(offsets.map((o) => Math.floor(o / 65536))).size;
    const inc = ws.ok(['backup', img, '--name', 'inc', '--json']);
    assert.equal(inc.chunks.new, changedChunks, 'one new chunk per changed chunk');
    assert.equal(inc.method, 'read-compare');
    assert.ok(
      inc.chunks.reused >= full.chunks.new + full.chunks.reused - changedChunks,
      'the rest is reused',
    );
    // New chunk data is random: at most a chunk each, plus pages, index and manifest.
    assert.ok(inc.bytesStored <= changedChunks * 65536 + 64 * 1024, `stored ${inc.bytesStored}`);
    const out = ws.path('inc-out.img');
    ws.ok(['restore', inc.id, out]);
    assert.equal(fileHash(out), fileHash(img));
    // An unchanged disk adds only a manifest.
    const same = ws.ok(['backup', img, '--name', 'inc', '--json']);
    assert.equal(same.chunks.new, 0);
    assert.ok(same.bytesStored < 4096, `unchanged backup stored ${same.bytesStored} bytes`);
  });

  it('reports stats with logical and stored sizes', () => {
    const s = ws.ok(['stats', '--json']);
    assert.ok(s.logicalBytes > s.storedBytes);
    assert.ok(s.storedBytes > 0);
    assert.ok(s.dedupRatio >= 1);
    assert.ok(s.compressionRatio >= 1);
  });

  it('shows progress on a terminal and nothing extra without one', () => {
    const img = ws.path('disk-67108864.img');
    // `script` gives the command a pseudo-terminal, as a user's shell would.
    const r = spawnSync(
      'script',
      ['-qec', `${process.execPath} ${BIN} backup ${img} --name tty`, '/dev/null'],
      {
        env: ws.env,
        encoding: 'utf8',
      },
    );
    assert.equal(r.status, 0, r.stdout);
    assert.match(r.stdout, /backup tty: \d+\.\d% .* MiB\/s {2}ETA /);
    assert.match(r.stdout, /restore point [0-9a-f]{16} of tty: 64\.0 MiB disk/);
    const plain = ws.run(['backup', img, '--name', 'tty']);
    assert.doesNotMatch(plain.stderr, /ETA/);
  });

  it('gives clear errors for bad usage', () => {
    const r = ws.run(['restore', 'nosuchid', ws.path('x.img')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^vmvault: no restore point with id nosuchid; see 'vmvault list'\n$/);
    const u = ws.run(['backup']);
    assert.equal(u.code, 2);
    const m = ws.run(['backup', ws.path('missing.img')]);
    assert.equal(m.code, 1);
    assert.match(m.stderr, /cannot open .*missing\.img: it does not exist/);
    const n = ws.run(['list'], { VMVAULT_REPO: ws.path('nowhere') });
    assert.match(n.stderr, /no vmvault repository at .*nowhere; create one with 'vmvault init'/);
    const c = ws.run(['init', '--compression', 'brotli'], { VMVAULT_REPO: ws.path('brotli') });
    assert.equal(c.code, 2);
    assert.match(c.stderr, /^vmvault: --compression must be zstd, lz4 or none, not brotli/);
    const l = ws.run(['init', '--compression', 'lz4', '--compression-level', '13'], {
      VMVAULT_REPO: ws.path('lz4'),
    });
    assert.equal(l.code, 2);
    assert.match(l.stderr, /--compression-level for lz4 must be -64 \(fastest\) to 12/);
    assert.equal(existsSync(ws.path('brotli')) || existsSync(ws.path('lz4')), false);
  });

  it('creates an lz4 repository whose config says so, and restores from it exactly', () => {
    const repo = { VMVAULT_REPO: ws.path('lz4-repo') };
    const init = ws.ok(['init', '--compression', 'lz4', '--json'], repo);
    assert.deepEqual(init.compression, { algorithm: 'lz4', level: 0 });
    const img = ws.path('lz4.img');
    makeExt4Image(img, 32 << 20, ws.path('tree'));
    const b = ws.ok(['backup', img, '--name', 'lz4', '--json'], repo);
    assert.ok(b.bytesStored < b.bytesRead, `lz4 stored ${b.bytesStored} of ${b.bytesRead}`);
    ws.ok(['restore', b.id, ws.path('lz4-out.img')], repo);
    assert.equal(fileHash(ws.path('lz4-out.img')), fileHash(img));
    assert.match(ws.run(['verify'], repo).stdout, /no problems found/);
  });
});
