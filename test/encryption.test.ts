/** Encrypted repositories: round trip, wrong passphrase, and no plaintext anywhere. */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileHash, makeExt4Image, makeTree, Workspace } from './helpers.js';

const MARKER = 'PLAINTEXT-MARKER-7f3a9c1e-do-not-leak';
const NAME = 'secret-vm-name-0b5e';

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

describe('encrypted repository', () => {
  const ws = new Workspace();
  const env = { VMVAULT_PASSWORD: 'correct horse battery staple' };
  let id = '';
  before(() => {
    makeTree(ws.path('tree'), { randomMiB: 2, marker: MARKER });
    makeExt4Image(ws.path('disk.img'), 40 << 20, ws.path('tree'));
  });
  after(() => ws.cleanup());

  it('refuses --encrypt without a passphrase', () => {
    const r = ws.run(['init', '--encrypt']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--encrypt needs a passphrase; set VMVAULT_PASSWORD or pass --password-file FILE/);
  });

  it('round-trips a disk', () => {
    ws.ok(['init', '--encrypt'], env);
    const b = ws.ok(['backup', ws.path('disk.img'), '--name', NAME, '--json'], env);
    id = b.id;
    ws.ok(['restore', id, ws.path('out.img')], env);
    assert.equal(fileHash(ws.path('out.img')), fileHash(ws.path('disk.img')));
    ws.ok(['verify'], env);
  });

  it('takes the passphrase from --password-file', () => {
    writeFileSync(ws.path('pw'), `${env.VMVAULT_PASSWORD}\n`);
    const list = ws.ok(['list', '--json', '--password-file', ws.path('pw'), '--catalog', ws.path('c2.db')]);
    assert.equal(list[0].name, NAME);
  });

  it('fails clearly with a wrong or missing passphrase', () => {
    const wrong = ws.run(['restore', id, ws.path('bad.img')], { VMVAULT_PASSWORD: 'wrong' });
    assert.equal(wrong.code, 1);
    assert.equal(
      wrong.stderr,
      'vmvault: wrong passphrase for this repository; check VMVAULT_PASSWORD or --password-file\n',
    );
    const none = ws.run(['list']);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /is encrypted; set VMVAULT_PASSWORD/);
  });

  it('leaves no plaintext in the repository', () => {
    // The marker is in the image thousands of times, and the name in the catalog; neither may
    // appear in any repository file, nor may a 64-byte run of the image's random data.
    const img = readFileSync(ws.path('disk.img'));
    const rand = readFileSync(join(ws.path('tree'), 'data', 'random.bin')).subarray(4096, 4096 + 64);
    assert.ok(img.includes(MARKER) && img.includes(rand), 'the probes are in the image');
    const files = filesUnder(ws.repo);
    assert.ok(files.length > 3);
    for (const f of files) {
      const data = readFileSync(f);
      assert.ok(!data.includes(MARKER), `${f} holds the marker text`);
      assert.ok(!data.includes(NAME), `${f} holds the point name`);
      assert.ok(!data.includes(rand), `${f} holds image data`);
    }
  });
});
