/**
 * QmpClient against a scripted in-process QMP server: ids and concurrency, error replies, events
 * that arrive before the reply, per-command timeouts, socket death mid-command, reconnect.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isVmvaultError } from '../../core/errors.js';
import { isQmpError } from './errors.js';
import { QmpClient } from './qmp-client.js';

type Handler = (
  cmd: { execute: string; id?: unknown; arguments?: Record<string, unknown> },
  sock: Socket,
) => void;

/** A tiny QMP server: greeting, qmp_capabilities, then `handler` for everything else. */
async function fakeQmp(path: string, handler: Handler): Promise<{ server: Server; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    sock.write(
      `${JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'fake' }, capabilities: ['oob'] } })}\r\n`,
    );
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
        const cmd = JSON.parse(line);
        if (cmd.execute === 'qmp_capabilities') reply(sock, cmd.id, {});
        else handler(cmd, sock);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { server, sockets };
}

function reply(sock: Socket, id: unknown, value: unknown): void {
  sock.write(`${JSON.stringify({ return: value, id })}\r\n`);
}

function event(sock: Socket, name: string, data: Record<string, unknown>): void {
  sock.write(`${JSON.stringify({ event: name, data, timestamp: { seconds: 1, microseconds: 2 } })}\r\n`);
}

describe('QmpClient (scripted server)', () => {
  let dir: string;
  let sockPath: string;
  let server: Server;
  let sockets: Set<Socket>;
  const clients: QmpClient[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmv-qmp-'));
    sockPath = join(dir, 'qmp.sock');
    ({ server, sockets } = await fakeQmp(sockPath, (cmd, sock) => {
      switch (cmd.execute) {
        case 'echo':
          // Reply out of order: later ids first, to prove matching by id.
          setTimeout(() => reply(sock, cmd.id, cmd.arguments), 20 - Number(cmd.arguments?.n ?? 0));
          break;
        case 'fail':
          sock.write(
            `${JSON.stringify({ error: { class: 'GenericError', desc: 'it broke' }, id: cmd.id })}\r\n`,
          );
          break;
        case 'job-start':
          // The event beats the reply, as QEMU does for many commands.
          event(sock, 'JOB_DONE', { id: cmd.arguments?.id });
          setTimeout(() => reply(sock, cmd.id, {}), 10);
          break;
        case 'hang':
          break;
        case 'die':
          sock.destroy();
          break;
        default:
          sock.write(
            `${JSON.stringify({ error: { class: 'CommandNotFound', desc: `The command ${cmd.execute} has not been found` }, id: cmd.id })}\r\n`,
          );
      }
    }));
  });

  after(async () => {
    for (const c of clients) await c.close();
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  async function connect(): Promise<QmpClient> {
    const c = await QmpClient.connect(sockPath, { commandTimeoutMs: 2000, connectTimeoutMs: 2000 });
    clients.push(c);
    return c;
  }

  it('reads the greeting and matches many replies by id', async () => {
    const c = await connect();
    assert.equal(c.greeting.version.qemu.major, 7);
    assert.deepEqual(c.greeting.capabilities, ['oob']);
    const results = await Promise.all(Array.from({ length: 10 }, (_, n) => c.execute('echo', { n })));
    assert.deepEqual(
      results,
      Array.from({ length: 10 }, (_, n) => ({ n })),
    );
  });

  it('turns error replies into QmpError with class, desc and command', async () => {
    const c = await connect();
    await assert.rejects(c.execute('fail'), (err) => {
      assert.ok(isQmpError(err, 'GenericError'));
      assert.equal(err.desc, 'it broke');
      assert.equal(err.command, 'fail');
      assert.equal(err.code, 'E_PROTOCOL');
      return true;
    });
    await assert.rejects(c.execute('nope'), (err) => isQmpError(err, 'CommandNotFound'));
  });

  it('does not miss an event that arrives before the reply', async () => {
    const c = await connect();
    const since = c.eventMark();
    await c.execute('job-start', { id: 'j1' });
    const e = await c.waitForEvent('JOB_DONE', (ev) => ev.data.id === 'j1', 1000, { since });
    assert.equal(e.data.id, 'j1');
    const e2 = await c.executeAndWait(
      'job-start',
      { id: 'j2' },
      'JOB_DONE',
      (ev) => ev.data.id === 'j2',
      1000,
    );
    assert.equal(e2.data.id, 'j2');
    // Without a mark, only future events count: an old one does not satisfy the wait.
    await assert.rejects(
      c.waitForEvent('JOB_DONE', (ev) => ev.data.id === 'j1', 100),
      (err) => isVmvaultError(err, 'E_TIMEOUT'),
    );
  });

  it('delivers events to listeners and async iterators', async () => {
    const c = await connect();
    const seen: string[] = [];
    const off = c.onEvent((e) => seen.push(String(e.data.id)));
    const it = c.events(['JOB_DONE']);
    await c.execute('job-start', { id: 'a' });
    await c.execute('job-start', { id: 'b' });
    const first = await it.next();
    const second = await it.next();
    await it.return?.();
    off();
    assert.deepEqual([first.value?.data.id, second.value?.data.id], ['a', 'b']);
    assert.deepEqual(seen, ['a', 'b']);
    assert.ok((first.value?.seq ?? 0) < (second.value?.seq ?? 0));
  });

  it('times out one command without disturbing the others', async () => {
    const c = await connect();
    const t0 = Date.now();
    await assert.rejects(c.execute('hang', undefined, { timeoutMs: 150 }), (err) =>
      isVmvaultError(err, 'E_TIMEOUT'),
    );
    assert.ok(Date.now() - t0 < 1000);
    assert.deepEqual(await c.execute('echo', { n: 1 }), { n: 1 });
  });

  it('rejects every pending command with E_CLOSED when the socket dies, then reconnects', async () => {
    const c = await connect();
    let closedReason = '';
    c.onClose((r) => {
      closedReason = r;
    });
    const pending = [
      c.waitForEvent('NEVER', undefined, 5000),
      c.execute('hang'),
      c.execute('hang'),
      c.execute('die'),
    ];
    await Promise.all(pending.map((p) => assert.rejects(p, (err) => isVmvaultError(err, 'E_CLOSED'))));
    assert.ok(closedReason.length > 0);
    assert.equal(c.connected, false);
    await assert.rejects(c.execute('echo', { n: 0 }), (err) => isVmvaultError(err, 'E_CLOSED'));
    await c.reconnect(1000);
    assert.equal(c.connected, true);
    assert.deepEqual(await c.execute('echo', { n: 2 }), { n: 2 });
  });

  it('fails with E_TIMEOUT when no greeting comes', async () => {
    const silentPath = join(dir, 'silent.sock');
    const silent = createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(silentPath, r));
    try {
      const t0 = Date.now();
      await assert.rejects(QmpClient.connect(silentPath, { connectTimeoutMs: 200 }), (err) =>
        isVmvaultError(err, 'E_TIMEOUT'),
      );
      assert.ok(Date.now() - t0 < 2000);
    } finally {
      silent.close();
    }
  });

  it('fails clearly when nothing listens', async () => {
    await assert.rejects(QmpClient.connect(join(dir, 'absent.sock')), (err) => isVmvaultError(err, 'E_IO'));
  });

  it('close() ends iterators and rejects waiters', async () => {
    const c = await connect();
    const it = c.events();
    const next = it.next();
    const waiting = assert.rejects(c.waitForEvent('X', undefined, 5000), (err) =>
      isVmvaultError(err, 'E_CLOSED'),
    );
    await c.close();
    assert.equal((await next).done, true);
    await waiting;
  });
});
