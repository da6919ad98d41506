/** Backup, prune and gc at the same time: they wait for each other and nothing is lost. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { fileHash, makeExt4Image, makeTree, randomWrites, Workspace } from './helpers.js';

function finish(
  child: ReturnType<Workspace['spawn']>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((res) => child.on('exit', (code) => res({ code, stdout, stderr })));
}

describe('concurrent backup, prune and gc', () => {
  const ws = new Workspace();
  before(() => {
    makeTree(ws.path('tree'), { randomMiB: 16 });
    makeExt4Image(ws.path('a.img'), 48 << 20, ws.path('tree'));
    makeTree(ws.path('tree2'), { randomMiB: 16, seed: 5 });
    makeExt4Image(ws.path('b.img'), 48 << 20, ws.path('tree2'));
    ws.ok(['init']);
  });
  after(() => ws.cleanup());

  it('loses nothing', async () => {
    // Some history to prune: three points of a, each different.
    for (let i = 0; i < 3; i++) {
      await randomWrites(ws.path('a.img'), 50, 65536, 65536, i, 40 << 20);
      ws.ok(['backup', ws.path('a.img'), '--name', 'a']);
    }
    const expectA = fileHash(ws.path('a.img'));
    const expectB = fileHash(ws.path('b.img'));
    const runs = [
      finish(ws.spawn(['backup', ws.path('b.img'), '--name', 'b', '--json'])),
      finish(ws.spawn(['prune', '--keep-last', '1', '--name', 'a'])),
      finish(ws.spawn(['gc'])),
      finish(ws.spawn(['backup', ws.path('a.img'), '--name', 'a', '--json'])),
      finish(ws.spawn(['gc'])),
    ];
    const results = await Promise.all(runs);
    for (const r of results) assert.equal(r.code, 0, r.stderr);
    // Anyone who waited said so.
    for (const r of results) if (r.stderr) assert.match(r.stderr, /waiting for the repository lock held by/);
    const list = ws.ok(['list', '--json']) as { id: string; name: string }[];
    const b = list.filter((p) => p.name === 'b');
    assert.equal(b.length, 1);
    assert.equal(ws.run(['verify']).code, 0);
    ws.ok(['restore', b[0]!.id, ws.path('b-out.img')]);
    assert.equal(fileHash(ws.path('b-out.img')), expectB);
    ws.ok(['restore', 'a:latest', ws.path('a-out.img')]);
    assert.equal(fileHash(ws.path('a-out.img')), expectA);
    // A final gc after everything frees what prune released, and still nothing is lost.
    const gc = ws.ok(['gc', '--json']);
    assert.equal(typeof gc.bytesFreed, 'number');
    assert.equal(ws.run(['verify']).code, 0);
    ws.ok(['restore', 'a:latest', ws.path('a-out2.img')]);
    assert.equal(fileHash(ws.path('a-out2.img')), expectA);
  });

  it('gc frees the space of pruned points', async () => {
    const before = ws.ok(['stats', '--json']);
    ws.ok(['prune', '--keep-last', '1']);
    ws.ok(['forget', 'b:latest']);
    const gc = ws.ok(['gc', '--json']);
    const afterStats = ws.ok(['stats', '--json']);
    assert.ok(gc.bytesFreed > 0);
    assert.ok(afterStats.storedBytes < before.storedBytes);
    assert.equal(ws.run(['verify']).code, 0);
  });

  it('fails with a clear message when the lock wait runs out', async () => {
    const { writeFileSync, mkdirSync } = await import('node:fs');
    mkdirSync(`${ws.repo}/locks`, { recursive: true });
    // An exclusive lock held by a live process (this test's own pid).
    writeFileSync(
      `${ws.repo}/locks/held`,
      JSON.stringify({
        kind: 'exclusive',
        pid: process.pid,
        hostname: (await import('node:os')).hostname(),
        time: new Date().toISOString(),
        command: 'gc',
      }),
    );
    const r = ws.run(['backup', ws.path('a.img'), '--name', 'a', '--lock-wait', '1']);
    assert.equal(r.code, 4);
    assert.match(r.stderr, /the repository is locked by gc \(pid \d+ on .*\); wait for it to finish/);
    const { unlinkSync } = await import('node:fs');
    unlinkSync(`${ws.repo}/locks/held`);
  });
});
