/** kill -9 of a backup at random moments leaves a valid repository; re-running succeeds. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { fileHash, makeExt4Image, makeTree, prng, randomWrites, Workspace } from './helpers.js';

describe('kill -9 during backup', () => {
  const ws = new Workspace();
  let firstId = '';
  before(() => {
    makeTree(ws.path('tree'), { randomMiB: 48 });
    makeExt4Image(ws.path('disk.img'), 96 << 20, ws.path('tree'));
    ws.ok(['init']);
    firstId = ws.ok(['backup', ws.path('disk.img'), '--name', 'vm', '--json']).id;
  });
  after(() => ws.cleanup());

  it('survives kills at random points', async () => {
    const rnd = prng(42);
    // How long a whole backup of this much change takes here (the kills must land inside it,
    // on a fast machine as on a slow one).
    await randomWrites(ws.path('disk.img'), 200, 65536, 65536, 99, 80 << 20);
    const t0 = Date.now();
    ws.ok(['backup', ws.path('disk.img'), '--name', 'vm', '--json']);
    const whole = Date.now() - t0;
    let killedMidway = 0;
    for (let round = 0; round < 5; round++) {
      // Change a lot so the backup has real work to do.
      await randomWrites(ws.path('disk.img'), 200, 65536, 65536, 100 + round, 80 << 20);
      const child = ws.spawn(['backup', ws.path('disk.img'), '--name', 'vm', '--json']);
      const delay = 50 + Math.floor(rnd() * Math.max(100, 0.9 * whole - 50));
      const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
      const timer = setTimeout(() => child.kill('SIGKILL'), delay);
      const code = await exited;
      clearTimeout(timer);
      if (code === null) killedMidway++;
      // The repository verifies clean and the first point restores intact.
      const v = ws.run(['verify']);
      assert.equal(v.code, 0, `round ${round} (killed after ${delay} ms): ${v.stderr}`);
    }
    assert.ok(killedMidway >= 2, `only ${killedMidway} backups were killed mid-way`);
    const out = ws.path('first.img');
    ws.ok(['restore', firstId, out]);
    // Re-running the backup succeeds and restores the current image exactly.
    const b = ws.ok(['backup', ws.path('disk.img'), '--name', 'vm', '--json']);
    const cur = ws.path('cur.img');
    ws.ok(['restore', b.id, cur]);
    assert.equal(fileHash(cur), fileHash(ws.path('disk.img')));
    assert.equal(ws.run(['verify']).code, 0);
  });

  it('reuses packs a killed backup left behind', async () => {
    await randomWrites(ws.path('disk.img'), 300, 65536, 65536, 999, 80 << 20);
    const child = ws.spawn(['backup', ws.path('disk.img'), '--name', 'vm']);
    // Kill once at least one new pack is durable.
    const { readdirSync, statSync } = await import('node:fs');
    const countPacks = () =>
      readdirSync(`${ws.repo}/packs`).reduce((n, d) => n + readdirSync(`${ws.repo}/packs/${d}`).length, 0);
    const before = countPacks();
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    const deadline = Date.now() + 20_000;
    while (countPacks() === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    child.kill('SIGKILL');
    const code = await exited;
    void statSync;
    const b = ws.ok(['backup', ws.path('disk.img'), '--name', 'vm', '--json']);
    if (code === null) {
      // The rerun found the orphan pack's chunks and did not store them again.
      assert.ok(b.chunks.reused > 0);
    }
    const out = ws.path('after.img');
    ws.ok(['restore', b.id, out]);
    assert.equal(fileHash(out), fileHash(ws.path('disk.img')));
  });
});
