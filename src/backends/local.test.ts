/** LocalBackend: atomic writes, reads, and the handle cache under many concurrent readers. */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LocalBackend } from './local.js';

describe('LocalBackend', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmvault-backend-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('writes atomically and reads whole objects and ranges', async () => {
    const b = new LocalBackend(dir);
    await b.write('a/x', [Buffer.from('hello '), Buffer.from('world')]);
    assert.equal((await b.read('a/x')).toString(), 'hello world');
    assert.equal((await b.readRange('a/x', 6, 5)).toString(), 'world');
    await assert.rejects(b.readRange('a/x', 6, 6), /truncated/);
    await assert.rejects(b.read('a/missing'), (e: { code: string }) => e.code === 'E_NOT_FOUND');
    assert.deepEqual(readdirSync(join(dir, 'a')), ['x'], 'no temporary files left');
    await b.close();
  });

  it('serves many concurrent reads of more objects than it keeps open', async () => {
    const b = new LocalBackend(dir);
    const n = 200; // more than the handle cache holds
    await Promise.all(Array.from({ length: n }, (_, i) => b.write(`many/${i}`, Buffer.from(`object ${i}`))));
    for (let round = 0; round < 3; round++) {
      const got = await Promise.all(
        Array.from({ length: n }, (_, i) => b.readRange(`many/${i}`, 0, `object ${i}`.length)),
      );
      for (let i = 0; i < n; i++) assert.equal(got[i]!.toString(), `object ${i}`);
      const whole = await Promise.all(Array.from({ length: n }, (_, i) => b.read(`many/${i}`)));
      for (let i = 0; i < n; i++) assert.equal(whole[i]!.toString(), `object ${i}`);
    }
    await b.remove('many/0');
    await assert.rejects(b.readRange('many/0', 0, 1), /does not exist/);
    await b.close();
  });
});
