/**
 * Images of every format QEMU opens, NBD URIs and thin qcow2 restores, end to end through
 * `bin/vmvault` with the real qemu-img / qemu-nbd / qemu-io.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { sh, makeExt4Image, makeTree, Workspace } from './helpers.js';

const SIZE = 48 << 20;

/** qemu-nbd processes whose command line mentions `dir`. */
function qemuNbdUnder(dir: string): string[] {
  const r = spawnSync('pgrep', ['-f', `qemu-nbd.*${dir}`], { encoding: 'utf8' });
  return r.stdout.split('\n').filter((l) => l.trim() !== '');
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

function compare(a: string, fa: string, b: string, fb: string): void {
  const r = spawnSync('qemu-img', ['compare', '-f', fa, '-F', fb, a, b], { encoding: 'utf8' });
  assert.equal(r.status, 0, `qemu-img compare ${a} ${b}: ${r.stdout}${r.stderr}`);
}

describe('image sources and qcow2 restores', () => {
  const ws = new Workspace();
  const raw = ws.path('disk.img');
  let qcow2Id = '';
  before(() => {
    makeTree(ws.path('tree'), { randomMiB: 3 });
    makeExt4Image(raw, SIZE, ws.path('tree'));
    sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, ws.path('disk.qcow2')]);
    ws.ok(['init']);
  });
  after(() => ws.cleanup());

  it('backs up qcow2 through qemu-nbd with block status and restores it byte for byte', () => {
    const b = ws.ok(['backup', ws.path('disk.qcow2'), '--json', '--name', 'q']);
    qcow2Id = b.id;
    assert.equal(b.size, SIZE);
    assert.ok(b.bytesRead < SIZE / 2, `read ${b.bytesRead} of ${SIZE}: unallocated areas were read`);
    ws.ok(['restore', b.id, ws.path('q.raw')]);
    compare(raw, 'raw', ws.path('q.raw'), 'raw');
    const list = ws.ok(['list', '--json']);
    assert.ok(Array.isArray(list));
  });

  for (const fmt of ['vmdk', 'vdi', 'vhdx']) {
    it(`backs up ${fmt} and restores it byte for byte`, (t) => {
      const img = ws.path(`disk.${fmt}`);
      const c = spawnSync('qemu-img', ['convert', '-f', 'raw', '-O', fmt, raw, img], { encoding: 'utf8' });
      if (c.status !== 0) {
        t.skip(`qemu-img cannot create ${fmt}: ${c.stderr.trim()}`);
        return;
      }
      const b = ws.ok(['backup', img, '--json']);
      assert.equal(b.size, SIZE);
      ws.ok(['restore', b.id, ws.path(`${fmt}.raw`)]);
      compare(raw, 'raw', ws.path(`${fmt}.raw`), 'raw');
    });
  }

  it('backs up nbd+unix:// from a qemu-nbd it did not start', async () => {
    const sock = ws.path('ext.sock');
    const child: ChildProcess = spawn(
      'qemu-nbd',
      ['-r', '-t', '-e', '4', '-f', 'qcow2', '-k', sock, `--pid-file=${sock}.pid`, ws.path('disk.qcow2')],
      { stdio: 'ignore' },
    );
    try {
      // The pid file appears once the socket listens (the socket file, a moment before).
      assert.ok(await waitFor(() => existsSync(`${sock}.pid`), 5000), 'qemu-nbd did not start');
      const b = ws.ok(['backup', `nbd+unix:///?socket=${sock}`, '--json', '--name', 'n']);
      assert.ok(b.bytesRead < SIZE / 2, 'block status over NBD');
      ws.ok(['restore', b.id, ws.path('n.raw')]);
      compare(raw, 'raw', ws.path('n.raw'), 'raw');
      const bad = ws.run(['backup', `nbd+unix:///?socket=${ws.path('none.sock')}`]);
      assert.equal(bad.code, 1);
      assert.equal(bad.stderr.trim().split('\n').length, 1);
      assert.match(bad.stderr, /cannot read nbd\+unix/);
    } finally {
      child.kill('SIGTERM');
    }
  });

  it('restores to a thin qcow2 (by extension or --format)', () => {
    assert.ok(qcow2Id);
    const r = ws.ok(['restore', qcow2Id, ws.path('out.qcow2'), '--json']);
    assert.equal(r.format, 'qcow2');
    compare(raw, 'raw', ws.path('out.qcow2'), 'qcow2');
    const map = JSON.parse(sh('qemu-img', ['map', '--output=json', ws.path('out.qcow2')])) as {
      length: number;
      data: boolean;
    }[];
    const data = map.filter((e) => e.data).reduce((s, e) => s + e.length, 0);
    assert.ok(data > 0 && data < SIZE / 2, `qcow2 has ${data} data bytes: not thin`);
    ws.ok(['restore', qcow2Id, ws.path('other.img'), '--format', 'qcow2']);
    const info = JSON.parse(sh('qemu-img', ['info', '--output=json', ws.path('other.img')]));
    assert.equal(info.format, 'qcow2');
    const exists = ws.run(['restore', qcow2Id, ws.path('out.qcow2')]);
    assert.equal(exists.code, 1);
    assert.match(exists.stderr, /already exists/);
    const badFmt = ws.run(['restore', qcow2Id, ws.path('x.vmdk'), '--format', 'vmdk']);
    assert.equal(badFmt.code, 2);
    assert.deepEqual(qemuNbdUnder(ws.dir), []);
  });

  it('refuses truncated and corrupt qcow2 in one line and leaves no qemu-nbd behind', () => {
    const tmp = ws.path('tmp-corrupt');
    mkdirSync(tmp);
    const cut = ws.path('cut.qcow2');
    sh('cp', [ws.path('disk.qcow2'), cut]);
    sh('truncate', ['-s', '600K', cut]);
    const r1 = ws.run(['backup', cut], { TMPDIR: tmp });
    assert.equal(r1.code, 1);
    assert.equal(r1.stderr.trim().split('\n').length, 1, r1.stderr);
    assert.match(r1.stderr, /^vmvault: qcow2 image .*cut\.qcow2 is damaged/);
    const short = ws.path('short.qcow2');
    sh('truncate', ['-s', '100', short]);
    sh('dd', [`if=${ws.path('disk.qcow2')}`, `of=${short}`, 'bs=100', 'count=1', 'conv=notrunc']);
    const r2 = ws.run(['backup', short], { TMPDIR: tmp });
    assert.equal(r2.code, 1);
    assert.equal(r2.stderr.trim().split('\n').length, 1, r2.stderr);
    assert.match(r2.stderr, /cannot open image .*short\.qcow2/);
    assert.deepEqual(qemuNbdUnder(tmp), []);
  });

  it('stops qemu-nbd when vmvault is killed during a qcow2 backup (SIGTERM and SIGKILL)', async () => {
    const big = ws.path('big.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', big, '768M']);
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x5a 0 768M', big]);
    for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
      const tmp = ws.path(`tmp-${sig}`);
      mkdirSync(tmp);
      const child = ws.spawn(['backup', big, '--name', `k-${sig}`], { TMPDIR: tmp });
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      assert.ok(await waitFor(() => qemuNbdUnder(tmp).length > 0, 10_000), 'qemu-nbd never started');
      await new Promise((r) => setTimeout(r, 300)); // connected and reading
      child.kill(sig);
      await exited;
      assert.ok(
        await waitFor(() => qemuNbdUnder(tmp).length === 0, 5000),
        `qemu-nbd left behind after ${sig}: ${qemuNbdUnder(tmp).join(',')}`,
      );
    }
  });
});
