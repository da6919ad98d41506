/** Our NbdClient against qemu-nbd, qemu-storage-daemon (dirty bitmaps) and nbdkit. */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { isVmvaultError } from '../../core/errors.js';
import { NbdClient } from './client.js';
import { BASE_ALLOCATION, NBD_STATE_HOLE, NBD_STATE_ZERO } from './constants.js';
import { NbdMultiClient } from './multi-conn.js';
import {
  haveTools,
  patternBuffer,
  run,
  startProcess,
  stopProcess,
  tempDir,
  waitForPath,
} from './test-helpers.js';

const MiB = 1024 * 1024;

describe('client against qemu-nbd', {
  skip: !haveTools('qemu-nbd') && 'qemu-nbd missing',
  timeout: 60_000,
}, () => {
  const tmp = tempDir();
  const image = `${tmp.dir}/disk.raw`;
  const sock = `${tmp.dir}/qnbd.sock`;
  let proc: ChildProcess | undefined;
  const data = patternBuffer(4 * MiB, 11);

  before(async () => {
    const fd = openSync(image, 'w');
    writeSync(fd, data, 0, data.length, 0);
    writeSync(fd, Buffer.alloc(1, 1), 0, 1, 80 * MiB - 1); // 80 MiB, hole from 4 MiB
    closeSync(fd);
    proc = startProcess('qemu-nbd', [
      '-f',
      'raw',
      '-k',
      sock,
      '-x',
      'disk',
      '-e',
      '4',
      '-t',
      '--cache=none',
      `--pid-file=${sock}.pid`,
      image,
    ]);
    // The pid file appears once the socket listens (the socket file, a moment before).
    await waitForPath(`${sock}.pid`, 10_000, proc);
  });
  after(async () => {
    await stopProcess(proc);
    tmp.cleanup();
  });

  it('negotiates, reads, splits big reads and sees holes', async () => {
    const c = await NbdClient.connect({
      socketPath: sock,
      exportName: 'disk',
      metaContexts: [BASE_ALLOCATION],
    });
    assert.equal(c.size, 80 * MiB);
    assert.equal(c.blockSize.maximum, 32 * MiB);
    assert.equal(c.maxRequest, 32 * MiB);
    assert.ok(c.canFastZero && c.canWriteZeroes && c.canTrim && c.canFlush && c.canCache);
    const big = await c.read(0, 70 * MiB); // three requests
    assert.ok(big.subarray(0, 4 * MiB).equals(data));
    assert.ok(big.subarray(4 * MiB).equals(Buffer.alloc(66 * MiB)));
    const alloc = await c.allocationMap();
    assert.equal(alloc[0]!.data, true);
    assert.ok(alloc.some((e) => !e.data && e.offset <= 10 * MiB && e.offset + e.length > 10 * MiB));
    const ranges = await c.blockStatusRange(MiB, 10 * MiB);
    const ext = ranges.get(BASE_ALLOCATION)!;
    assert.equal(ext[0]!.offset, MiB);
    assert.equal(
      ext.reduce((s, e) => s + e.length, 0),
      10 * MiB,
    );
    assert.ok(ext.some((e) => e.flags === (NBD_STATE_HOLE | NBD_STATE_ZERO)));
    await c.close();
  });

  it('writes with FUA, write-zeroes (fast), trims, caches and flushes', async () => {
    const c = await NbdClient.connect({ socketPath: sock, exportName: 'disk' });
    const w = patternBuffer(MiB, 99);
    await c.write(8 * MiB, w, { fua: true });
    assert.ok((await c.read(8 * MiB, MiB)).equals(w));
    await c.writeZeroes(8 * MiB, 4096, { noHole: true });
    assert.ok((await c.read(8 * MiB, 4096)).equals(Buffer.alloc(4096)));
    await c.writeZeroes(8 * MiB + 65536, 65536, { fastZero: true }).catch((e) => {
      assert.ok(isVmvaultError(e, 'E_UNSUPPORTED'));
    });
    await c.trim(9 * MiB - 65536, 65536);
    await c.cache(0, MiB);
    await c.flush();
    await c.close();
    const file = readFileSync(image);
    assert.ok(file.subarray(8 * MiB + 4096, 8 * MiB + 65536).equals(w.subarray(4096, 65536)));
  });

  it('keeps the connection after a server error reply (oversize read → EINVAL)', async () => {
    const c = await NbdClient.connect({ socketPath: sock, exportName: 'disk' });
    const raw = c as unknown as { send: (...a: unknown[]) => Promise<unknown> };
    await assert.rejects(raw.send(0, 0, 0, 33 * MiB, undefined, Buffer.alloc(33 * MiB)), (e) => {
      assert.ok(isVmvaultError(e, 'E_IO'));
      assert.equal(e.details.errno, 'EINVAL');
      return true;
    });
    assert.ok((await c.read(0, 4096)).equals(data.subarray(0, 4096)));
    await c.close();
  });

  it('lists exports and meta contexts; multi-conn wrapper', async () => {
    const list = await NbdClient.list({ socketPath: sock });
    assert.deepEqual(
      list.map((e) => e.name),
      ['disk'],
    );
    const ctx = await NbdClient.listMetaContexts({ socketPath: sock, exportName: 'disk' });
    assert.ok(ctx.includes(BASE_ALLOCATION));
    const m = await NbdMultiClient.connect({ socketPath: sock, exportName: 'disk', connections: 3 });
    assert.equal(m.clients.length, m.primary.canMultiConn ? 3 : 1);
    assert.ok((await m.read(0, 4 * MiB)).equals(data));
    await m.close();
  });
});

describe('client against qemu-storage-daemon with a dirty bitmap', {
  skip: !haveTools('qemu-storage-daemon', 'qemu-img', 'qemu-io') && 'qemu tools missing',
  timeout: 60_000,
}, () => {
  const tmp = tempDir();
  const qcow = `${tmp.dir}/disk.qcow2`;
  const sock = `${tmp.dir}/qsd.sock`;
  const pid = `${tmp.dir}/qsd.pid`;
  let proc: ChildProcess | undefined;

  before(async () => {
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', qcow, '16M']);
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 1M', qcow]);
    await run('qemu-img', ['bitmap', '--add', qcow, 'bk0']);
    proc = startProcess('qemu-storage-daemon', [
      '--blockdev',
      JSON.stringify({ driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: qcow } }),
      '--nbd-server',
      `addr.type=unix,addr.path=${sock}`,
      '--export',
      JSON.stringify({
        type: 'nbd',
        id: 'exp0',
        'node-name': 'disk0',
        name: 'rw',
        writable: true,
        bitmaps: ['bk0'],
      }),
      '--pidfile',
      pid,
    ]);
    await waitForPath(pid, 10_000, proc);
    // Dirty two ranges through NBD while the bitmap records.
    const uri = `nbd+unix:///rw?socket=${sock}`;
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 4M 64k', '-c', 'write -P 0x55 10M 192k', uri]);
  });
  after(async () => {
    await stopProcess(proc);
    tmp.cleanup();
  });

  it('reads base:allocation and qemu:dirty-bitmap together', async () => {
    const ctx = 'qemu:dirty-bitmap:bk0';
    const c = await NbdClient.connect({
      socketPath: sock,
      exportName: 'rw',
      metaContexts: [BASE_ALLOCATION, ctx],
    });
    assert.ok(c.metaContexts.has(ctx));
    const both = await c.blockStatusRange(0, c.size);
    for (const list of both.values()) {
      assert.equal(list[0]!.offset, 0);
      assert.equal(
        list.reduce((s, e) => s + e.length, 0),
        c.size,
      );
    }
    const dirty = (await c.dirtyMap('bk0')).filter((e) => e.data);
    assert.deepEqual(dirty, [
      { offset: 4 * MiB, length: 64 * 1024, data: true },
      { offset: 10 * MiB, length: 192 * 1024, data: true },
    ]);
    const alloc = await c.allocationMap();
    assert.ok(alloc.find((e) => e.offset === 0)!.data);
    assert.ok((await c.read(10 * MiB, 4096)).equals(Buffer.alloc(4096, 0x55)));
    await c.close();
  });

  it('refuses to query a context that was not negotiated', async () => {
    const c = await NbdClient.connect({
      socketPath: sock,
      exportName: 'rw',
      metaContexts: ['qemu:dirty-bitmap:nope'],
    });
    assert.equal(c.metaContexts.size, 0);
    await assert.rejects(c.dirtyMap('nope'), (e) => isVmvaultError(e, 'E_UNSUPPORTED'));
    await c.close();
  });
});

describe('client against nbdkit', { skip: !haveTools('nbdkit') && 'nbdkit missing', timeout: 60_000 }, () => {
  const tmp = tempDir();
  const procs: ChildProcess[] = [];
  after(async () => {
    for (const p of procs) await stopProcess(p);
    tmp.cleanup();
  });

  async function nbdkit(name: string, args: string[]): Promise<string> {
    const sock = `${tmp.dir}/${name}.sock`;
    const pid = `${tmp.dir}/${name}.pid`;
    const p = startProcess('nbdkit', ['-f', '-U', sock, '-P', pid, ...args]);
    procs.push(p);
    await waitForPath(pid, 10_000, p);
    return sock;
  }

  it('memory plugin: write, read back, zero, trim and block status', async () => {
    const sock = await nbdkit('mem', ['memory', 'size=32M']);
    const c = await NbdClient.connect({ socketPath: sock, metaContexts: [BASE_ALLOCATION] });
    assert.equal(c.size, 32 * MiB);
    const w = patternBuffer(3 * MiB, 4);
    await c.write(MiB, w);
    await c.flush();
    assert.ok((await c.read(MiB, 3 * MiB)).equals(w));
    await c.writeZeroes(MiB, MiB);
    assert.ok((await c.read(MiB, MiB)).equals(Buffer.alloc(MiB)));
    const alloc = await c.allocationMap();
    assert.equal(
      alloc.reduce((s, e) => s + e.length, 0),
      c.size,
    );
    assert.ok(alloc.some((e) => e.data && e.offset <= 2 * MiB && e.offset + e.length > 2 * MiB));
    assert.equal(alloc[0]!.data, false);
    await c.close();
  });

  it('data plugin: exact bytes at exact offsets', async () => {
    const sock = await nbdkit('data', ['data', 'data=1 2 3 @1048576 0x41 0x42 @2097151 0xff', 'size=2M']);
    const c = await NbdClient.connect({ socketPath: sock });
    assert.equal(c.size, 2 * MiB);
    assert.deepEqual([...(await c.read(0, 4))], [1, 2, 3, 0]);
    assert.equal((await c.read(MiB, 2)).toString(), 'AB');
    assert.equal((await c.read(2 * MiB - 1, 1))[0], 0xff);
    await c.close();
  });
});
