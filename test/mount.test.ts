/** `vmvault mount`: a restore point served over NBD and read by the real NBD clients. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileHash, makeExt4Image, makeTree, Workspace } from './helpers.js';

function startMount(ws: Workspace, args: string[]) {
  const child = ws.spawn(['mount', ...args]);
  const firstLine = new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`mount exited early (${code})`)));
  });
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  return { child, firstLine, exited };
}

describe('vmvault mount', () => {
  const ws = new Workspace();
  let id = '';
  before(() => {
    makeTree(ws.path('tree'), { randomMiB: 3 });
    makeExt4Image(ws.path('disk.img'), (32 << 20) + 4096, ws.path('tree'));
    ws.ok(['init']);
    id = ws.ok(['backup', ws.path('disk.img'), '--json']).id;
  });
  after(() => ws.cleanup());

  it('serves a restore point on a unix socket to qemu-img, nbdinfo and nbdcopy', async () => {
    const m = startMount(ws, [id, '--socket', ws.path('nbd.sock')]);
    try {
      const uri = await m.firstLine;
      assert.match(uri, /^nbd\+unix:\/\/\/[0-9a-f]{16}\?socket=/);
      const cmp = spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', ws.path('disk.img'), uri], {
        encoding: 'utf8',
      });
      assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
      const size = spawnSync('nbdinfo', ['--size', uri], { encoding: 'utf8' });
      assert.equal(Number(size.stdout.trim()), (32 << 20) + 4096);
      const map = spawnSync('nbdinfo', ['--map', uri], { encoding: 'utf8' });
      assert.match(map.stdout, /hole,zero/);
      const copy = spawnSync('nbdcopy', [uri, ws.path('copy.img')], { encoding: 'utf8' });
      assert.equal(copy.status, 0, copy.stderr);
      assert.equal(fileHash(ws.path('copy.img')), fileHash(ws.path('disk.img')));
      const write = spawnSync('qemu-io', ['-f', 'raw', '-c', 'write 0 4k', uri], { encoding: 'utf8' });
      assert.match(write.stdout + write.stderr, /read-only|Permission denied|Operation not permitted/i);
    } finally {
      m.child.kill('SIGTERM');
    }
    assert.equal(await m.exited, 0);
  });

  it('prints {"uri"} with --json and listens on loopback TCP, with a cache smaller than the disk', async () => {
    // 2 MiB of cache for a 32 MiB disk: every chunk is evicted and fetched again along the way.
    const m = startMount(ws, [id, '--port', '0', '--json', '--cache', '2M']);
    try {
      const line = JSON.parse(await m.firstLine);
      assert.match(line.uri, /^nbd:\/\/127\.0\.0\.1:\d+\/[0-9a-f]{16}$/);
      const cmp = spawnSync(
        'qemu-img',
        ['compare', '-f', 'raw', '-F', 'raw', ws.path('disk.img'), line.uri],
        { encoding: 'utf8' },
      );
      assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
    } finally {
      m.child.kill('SIGINT');
    }
    assert.equal(await m.exited, 0);
  });

  it('refuses bad arguments clearly', () => {
    const r = ws.run(['mount', id]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /exactly one of --socket PATH or --port N/);
    for (const bad of ['0', '12X', '100G']) {
      const c = ws.run(['mount', id, '--socket', ws.path('x.sock'), '--cache', bad]);
      assert.equal(c.code, 2, c.stderr);
      assert.match(c.stderr, /--cache takes a size from 1M to 64G/);
    }
  });
});
