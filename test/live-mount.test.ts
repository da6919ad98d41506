/**
 * Live mounts through the CLI with real NBD clients: several mounts of different points at once,
 * writable mounts whose writes never reach the point (and can be saved as a new point), clones
 * that QEMU's tools use at once, and revert writing exactly the chunks that changed.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { makeExt4Image, makeTree, serveCommand, stopServing, Workspace } from './helpers.js';

function qemuIo(target: string, cmds: string[], format = 'raw'): string {
  return execFileSync('qemu-io', ['-f', format, ...cmds.flatMap((c) => ['-c', c]), target], {
    encoding: 'utf8',
  });
}

function compare(a: string, b: string, fa = 'raw', fb = 'raw'): boolean {
  try {
    execFileSync('qemu-img', ['compare', '-q', '-f', fa, '-F', fb, a, b]);
    return true;
  } catch {
    return false;
  }
}

describe('live mounts, clones and revert (CLI, real NBD tools)', { timeout: 180_000 }, () => {
  const ws = new Workspace();
  const ids: string[] = [];
  before(() => {
    ws.ok(['init']);
    for (const n of [1, 2, 3]) {
      makeTree(ws.path(`tree${n}`), { randomMiB: 2, seed: n, marker: `disk ${n}` });
      makeExt4Image(ws.path(`d${n}.img`), (24 + n) << 20, ws.path(`tree${n}`));
      ids.push(ws.ok(['backup', ws.path(`d${n}.img`), '--name', `vm${n}`, '--json']).id);
    }
  });
  after(() => ws.cleanup());

  it('serves several points at once, each exactly its own image', async () => {
    const mounts = await Promise.all(
      ids.map((id, i) => serveCommand(ws, ['mount', id, '--socket', ws.path(`m${i}.sock`)])),
    );
    try {
      for (let i = 0; i < ids.length; i++) {
        const uri = mounts[i]!.first;
        assert.match(uri, /^nbd\+unix:/);
        assert.ok(compare(ws.path(`d${i + 1}.img`), uri), `mount ${i} equals its image`);
        // A whole-export read with libnbd's nbdcopy, all mounts busy at once.
      }
      await Promise.all(
        mounts.map(
          (m, i) =>
            new Promise<void>((res, rej) => {
              try {
                execFileSync('nbdcopy', [m.first, ws.path(`copy${i}.raw`)]);
                assert.ok(
                  readFileSync(ws.path(`copy${i}.raw`)).equals(readFileSync(ws.path(`d${i + 1}.img`))),
                );
                res();
              } catch (e) {
                rej(e);
              }
            }),
        ),
      );
    } finally {
      for (const m of mounts) assert.equal(await stopServing(m.p), 0);
    }
  });

  it('writable mount: writes read back, the point never changes, save-on-exit stores them', async () => {
    const id = ids[0]!;
    const expected = ws.path('expected.raw');
    copyFileSync(ws.path('d1.img'), expected);
    const m = await serveCommand(ws, [
      'mount',
      id,
      '--socket',
      ws.path('w.sock'),
      '--writable',
      '--overlay',
      ws.path('w.overlay'),
      '--save-on-exit',
      '--json',
    ]);
    const uri = JSON.parse(m.first).uri as string;
    const writes = [
      'write -P 0x61 100k 3k',
      'write -P 0x62 1M 128k',
      'write -z 2M 64k',
      'write -P 0x63 5000 70000',
    ];
    qemuIo(uri, writes);
    qemuIo(expected, writes);
    assert.ok(compare(expected, uri), 'the mount reads back the writes');
    assert.equal(await stopServing(m.p), 0);
    const summary = JSON.parse(m.out().trim().split('\n').pop()!);
    assert.ok(summary.saved, 'a new point was saved');
    assert.ok(!existsSync(ws.path('w.overlay')), 'the saved overlay is discarded');
    // The mounted point is unchanged; the saved one has the writes.
    ws.ok(['restore', id, ws.path('again.raw')]);
    assert.ok(readFileSync(ws.path('again.raw')).equals(readFileSync(ws.path('d1.img'))));
    ws.ok(['restore', summary.saved, ws.path('saved.raw')]);
    assert.ok(compare(expected, ws.path('saved.raw')), 'the saved point holds the writes');
    assert.equal(ws.run(['verify']).code, 0);
  });

  it('clone: QEMU uses it at once, writes stay in the clone, serving again works', async () => {
    const id = ids[1]!;
    const clone = ws.path('clone.qcow2');
    const c = await serveCommand(ws, ['clone', id, clone, '--json']);
    const info = JSON.parse(c.first);
    assert.equal(info.created, true);
    ws.ok(['restore', id, ws.path('r2.raw')]);
    assert.ok(compare(clone, ws.path('r2.raw'), 'qcow2', 'raw'), 'clone equals a restore of the point');
    qemuIo(clone, ['write -P 0x77 64k 200k'], 'qcow2');
    assert.ok(!compare(clone, ws.path('r2.raw'), 'qcow2', 'raw'), 'the write shows in the clone');
    assert.equal(await stopServing(c.p), 0);
    // The point is unchanged.
    ws.ok(['restore', id, ws.path('r2b.raw')]);
    assert.ok(readFileSync(ws.path('r2b.raw')).equals(readFileSync(ws.path('d2.img'))));
    // Serving the existing clone again; its write is still there.
    const again = await serveCommand(ws, ['clone', id, clone, '--json']);
    assert.equal(JSON.parse(again.first).created, false);
    assert.match(qemuIo(clone, ['read -P 0x77 64k 200k'], 'qcow2'), /read 204800\/204800/);
    assert.equal(await stopServing(again.p), 0);
    // Not a clone of this point: refused.
    writeFileSync(ws.path('other.qcow2'), 'not a clone');
    const r = ws.run(['clone', id, ws.path('other.qcow2')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /exists and is not a clone/);
  });

  it('revert writes exactly the chunks that differ', () => {
    const id = ids[2]!;
    const disk = ws.path('rev.raw');
    copyFileSync(ws.path('d3.img'), disk);
    // 3 changed chunks (64 KiB grid): one whole, two partial, one of them spanning two chunks.
    qemuIo(disk, ['write -P 0x11 1M 64k', 'write -P 0x12 3M 10', 'write -P 0x13 4194300 8']);
    const r = ws.ok(['revert', id, '--to', disk, '--format', 'raw', '--json']);
    assert.equal(r.chunksWritten, 4);
    assert.ok(readFileSync(disk).equals(readFileSync(ws.path('d3.img'))));
    const again = ws.ok(['revert', id, '--to', disk, '--format', 'raw', '--json']);
    assert.equal(again.chunksWritten, 0);
  });
});
