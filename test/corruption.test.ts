/** Damaged repositories: flipped bytes, truncated and missing packs give clear errors. */
import assert from 'node:assert/strict';
import {
  existsSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { before, after, describe, it } from 'node:test';
import { makeExt4Image, makeTree, Workspace } from './helpers.js';

function packs(repo: string): string[] {
  const out: string[] = [];
  const root = join(repo, 'packs');
  for (const d of readdirSync(root)) for (const f of readdirSync(join(root, d))) out.push(join(root, d, f));
  return out.sort((a, b) => statSync(b).size - statSync(a).size);
}

const VARIANTS = [
  { label: 'plain', encrypted: false, init: ['init'] },
  { label: 'encrypted', encrypted: true, init: ['init', '--encrypt'] },
  { label: 'plain lz4-compressed', encrypted: false, init: ['init', '--compression', 'lz4'] },
];

for (const { label, encrypted, init } of VARIANTS) {
  describe(`damage in a ${label} repository`, () => {
    const ws = new Workspace();
    const env = encrypted ? { VMVAULT_PASSWORD: 'pw' } : {};
    let a = '';
    let b = '';
    before(() => {
      makeTree(ws.path('tree'), { randomMiB: 2 });
      makeExt4Image(ws.path('a.img'), 24 << 20, ws.path('tree'));
      makeTree(ws.path('tree2'), { randomMiB: 2, seed: 99 });
      makeExt4Image(ws.path('b.img'), 24 << 20, ws.path('tree2'));
      ws.ok(init, env);
      a = ws.ok(['backup', ws.path('a.img'), '--name', 'a', '--json'], env).id;
      b = ws.ok(['backup', ws.path('b.img'), '--name', 'b', '--json'], env).id;
    });
    after(() => ws.cleanup());

    it('finds a flipped byte: verify names the damaged point, restore names the chunk', () => {
      // Packs are written per backup, so the packs of b hold b's own chunks.
      const list = packs(ws.repo);
      const victim = list.find((p) => readFileSync(p).length > 1 << 20)!;
      const data = readFileSync(victim);
      const original = Buffer.from(data);
      const pos = 4096 + 1234;
      data[pos] = data[pos]! ^ 0x40;
      writeFileSync(victim, data);
      const v = ws.run(['verify', '--json'], env);
      assert.equal(v.code, 3);
      const report = JSON.parse(v.stdout);
      assert.ok(report.problems.length >= 1);
      const damagedIds = report.damaged.map((d: { id: string }) => d.id);
      assert.ok(damagedIds.length >= 1);
      assert.match(v.stderr, /damaged restore points: /);
      const bad = damagedIds[0] as string;
      const r = ws.run(['restore', bad, ws.path('r.img')], env);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /chunk [0-9a-f]{64} in pack [0-9a-f]{64} is damaged/);
      assert.ok(!existsSync(ws.path('r.img')), 'no target is left behind');
      assert.ok(!existsSync(ws.path('r.img.vmvault-partial')), 'no partial file is left behind');
      // The other point is intact and verify on it alone is clean.
      const good = [a, b].find((id) => !damagedIds.includes(id));
      if (good) {
        assert.equal(ws.run(['verify', good], env).code, 0);
      }
      writeFileSync(victim, original);
      assert.equal(ws.run(['verify'], env).code, 0);
    });

    it('reports a truncated pack clearly', () => {
      const victim = packs(ws.repo)[0]!;
      const original = readFileSync(victim);
      truncateSync(victim, Math.floor(original.length / 2));
      const v = ws.run(['verify'], env);
      assert.equal(v.code, 3);
      const r = ws.run(['restore', a, ws.path('t1.img')], env);
      const r2 = ws.run(['restore', b, ws.path('t2.img')], env);
      const failed = [r, r2].filter((x) => x.code !== 0);
      assert.ok(failed.length >= 1);
      for (const f of failed)
        assert.match(f.stderr, /pack [0-9a-f]{64} (is truncated|is damaged)|chunk [0-9a-f]{64}/);
      writeFileSync(victim, original);
    });

    it('reports a missing pack clearly', () => {
      const victim = packs(ws.repo)[0]!;
      renameSync(victim, `${victim}.away`);
      const v = ws.run(['verify', '--json'], env);
      assert.equal(v.code, 3);
      assert.ok(JSON.parse(v.stdout).problems.some((p: { code: string }) => p.code === 'E_PACK_MISSING'));
      const results = [
        ws.run(['restore', a, ws.path('m1.img')], env),
        ws.run(['restore', b, ws.path('m2.img')], env),
      ];
      const failed = results.filter((x) => x.code !== 0);
      assert.ok(failed.length >= 1);
      for (const f of failed)
        assert.match(f.stderr, /pack [0-9a-f]{64} holding chunk [0-9a-f]{64} is missing/);
      renameSync(`${victim}.away`, victim);
      assert.equal(ws.run(['verify'], env).code, 0);
    });
  });
}
