import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isVmvaultError } from '../../core/errors.js';
import { NbdClient } from './client.js';
import { BASE_ALLOCATION, NBD_STATE_HOLE, NBD_STATE_ZERO } from './constants.js';
import { MemoryExport } from './memory-export.js';
import { NbdMultiClient } from './multi-conn.js';
import { NbdServer } from './server.js';
import { patternBuffer, tempDir } from './test-helpers.js';
import { formatNbdUri } from './uri.js';

const MiB = 1024 * 1024;

describe('NbdClient ↔ NbdServer (loopback)', () => {
  const tmp = tempDir();
  const sock = `${tmp.dir}/nbd.sock`;
  const server = new NbdServer();
  let port = 0;
  const roData = patternBuffer(8 * MiB, 7);
  roData.fill(0, 2 * MiB, 3 * MiB); // a zero region
  const ro = new MemoryExport(roData, { readOnly: true, description: 'read-only test disk' });
  const rw = new MemoryExport(4 * MiB);

  before(async () => {
    server.addExport('ro', ro);
    server.addExport('rw', rw);
    await server.listen({ socketPath: sock });
    port = (await server.listen({ port: 0 })).port!;
  });
  after(async () => {
    await server.close();
    tmp.cleanup();
  });

  it('negotiates GO with block sizes and reads over unix and TCP', async () => {
    for (const target of [{ socketPath: sock }, { host: '127.0.0.1', port }]) {
      const c = await NbdClient.connect({ ...target, exportName: 'ro' });
      assert.equal(c.size, roData.length);
      assert.equal(c.readOnly, true);
      assert.equal(c.canMultiConn, true);
      assert.equal(c.structuredReplies, true);
      assert.deepEqual(c.blockSize, { minimum: 1, preferred: 4096, maximum: 32 * MiB });
      assert.equal(c.description, 'read-only test disk');
      assert.deepEqual(await c.read(12345, 100_000), roData.subarray(12345, 112345));
      await c.close();
    }
  });

  it('works via URI and without structured replies', async () => {
    const c = await NbdClient.connect({
      uri: formatNbdUri({ exportName: 'ro', socketPath: sock }),
      structuredReplies: false,
    });
    assert.equal(c.structuredReplies, false);
    assert.deepEqual(await c.read(2 * MiB - 10, 20), roData.subarray(2 * MiB - 10, 2 * MiB + 10));
    await c.close();
  });

  it('splits reads larger than the maximum block size and keeps many requests in flight', async () => {
    const c = await NbdClient.connect({ socketPath: sock, exportName: 'ro', maxInFlight: 8 });
    const all = await c.read(0, roData.length);
    assert.ok(all.equals(roData));
    const reqs = Array.from({ length: 200 }, (_, i) => (i * 37_123) % (roData.length - 4096));
    const got = await Promise.all(reqs.map((o) => c.read(o, 4096)));
    for (const [i, b] of got.entries()) assert.ok(b.equals(roData.subarray(reqs[i]!, reqs[i]! + 4096)));
    await c.close();
  });

  it('reports base:allocation and returns contiguous clamped extents', async () => {
    const c = await NbdClient.connect({
      socketPath: sock,
      exportName: 'ro',
      metaContexts: [BASE_ALLOCATION],
    });
    assert.deepEqual([...c.metaContexts.keys()], [BASE_ALLOCATION]);
    const m = await c.blockStatusRange(MiB + 100, 3 * MiB);
    const ext = m.get(BASE_ALLOCATION)!;
    assert.deepEqual(ext, [
      { offset: MiB + 100, length: MiB - 100, flags: 0 },
      { offset: 2 * MiB, length: MiB, flags: NBD_STATE_HOLE | NBD_STATE_ZERO },
      { offset: 3 * MiB, length: MiB + 100, flags: 0 },
    ]);
    const one = await c.blockStatus(0, 8 * MiB, { reqOne: true });
    assert.equal(one.get(BASE_ALLOCATION)!.length, 1);
    assert.deepEqual(await c.allocationMap(), [
      { offset: 0, length: 2 * MiB, data: true },
      { offset: 2 * MiB, length: MiB, data: false },
      { offset: 3 * MiB, length: 5 * MiB, data: true },
    ]);
    await c.close();
  });

  it('lists exports and metadata contexts', async () => {
    const list = await NbdClient.list({ socketPath: sock });
    assert.deepEqual(
      list.map((e) => e.name),
      ['ro', 'rw'],
    );
    assert.equal(list[0]!.description, 'read-only test disk');
    assert.deepEqual(await NbdClient.listMetaContexts({ socketPath: sock, exportName: 'ro' }), [
      BASE_ALLOCATION,
    ]);
    assert.deepEqual(await NbdClient.listMetaContexts({ socketPath: sock, exportName: 'ro' }, ['qemu:']), []);
  });

  it('writes, flushes with FUA, zeroes and trims a writable export', async () => {
    const c = await NbdClient.connect({
      socketPath: sock,
      exportName: 'rw',
      metaContexts: [BASE_ALLOCATION],
    });
    assert.equal(c.readOnly, false);
    const data = patternBuffer(40 * MiB > rw.size ? 3 * MiB : 40 * MiB, 3);
    await c.write(1000, data, { fua: true });
    assert.ok(rw.data.subarray(1000, 1000 + data.length).equals(data));
    assert.ok(rw.flushCount >= 1);
    const before = rw.flushCount;
    await c.flush();
    assert.equal(rw.flushCount, before + 1);
    await c.writeZeroes(4096, 8192, { noHole: true });
    assert.ok(rw.data.subarray(4096, 12288).equals(Buffer.alloc(8192)));
    await c.trim(MiB, MiB);
    assert.ok((await c.read(MiB, MiB)).equals(Buffer.alloc(MiB)));
    await c.cache(0, 4096);
    await c.close();
  });

  it('maps server errors to typed errors with the errno name', async () => {
    const c = await NbdClient.connect({ socketPath: sock, exportName: 'ro' });
    await assert.rejects(c.write(0, Buffer.alloc(10)), (e) => isVmvaultError(e, 'E_UNSUPPORTED'));
    // Bypass the client's own checks to see the server's answer.
    const raw = c as unknown as { send: (...a: unknown[]) => Promise<unknown>; flags: number };
    await assert.rejects(raw.send(1, 0, 0, 10, Buffer.alloc(10)), (e) => {
      assert.ok(isVmvaultError(e, 'E_IO'));
      assert.equal(e.details.errno, 'EPERM');
      return true;
    });
    await assert.rejects(raw.send(0, 0, c.size - 10, 20, undefined, Buffer.alloc(20)), (e) => {
      assert.ok(isVmvaultError(e));
      return e.details.errno === 'EINVAL';
    });
    await assert.rejects(raw.send(0, 0, 0, 33 * MiB, undefined, Buffer.alloc(1)), (e) => {
      assert.ok(isVmvaultError(e));
      return e.details.errno === 'EINVAL';
    });
    await assert.rejects(raw.send(99, 0, 0, 0), (e) => isVmvaultError(e) && e.details.errno === 'EINVAL');
    await assert.rejects(c.read(c.size, 1), (e) => isVmvaultError(e, 'E_USAGE'));
    // The connection still works.
    assert.deepEqual(await c.read(0, 16), roData.subarray(0, 16));
    await c.close();
  });

  it('rejects unknown exports with E_NOT_FOUND', async () => {
    await assert.rejects(NbdClient.connect({ socketPath: sock, exportName: 'nope' }), (e) =>
      isVmvaultError(e, 'E_NOT_FOUND'),
    );
  });

  it('multi-connection wrapper spreads requests', async () => {
    const m = await NbdMultiClient.connect({ socketPath: sock, exportName: 'ro', connections: 3 });
    assert.equal(m.clients.length, 3);
    const all = await m.read(0, roData.length);
    assert.ok(all.equals(roData));
    await m.close();
    // A writable MemoryExport also allows multi-conn (no cache), single conn when asked.
    const one = await NbdMultiClient.connect({ socketPath: sock, exportName: 'rw', connections: 1 });
    assert.equal(one.clients.length, 1);
    await one.close();
  });
});
