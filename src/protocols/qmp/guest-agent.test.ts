/**
 * GuestAgentClient against scripted agents: the sync handshake with stale bytes and the 0xFF
 * sentinel, commands, and quick detection of a chardev with no agent behind it.
 * (The real qemu-ga inside the test guest is exercised in test/fixtures/guest.)
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isVmvaultError } from '../../core/errors.js';
import { isQmpError } from './errors.js';
import { GuestAgentClient } from './guest-agent.js';

async function listen(
  path: string,
  onConn: (s: Socket) => void,
): Promise<{ server: Server; socks: Set<Socket> }> {
  const socks = new Set<Socket>();
  const server = createServer((s) => {
    socks.add(s);
    s.on('close', () => socks.delete(s));
    s.on('error', () => undefined);
    onConn(s);
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { server, socks };
}

describe('GuestAgentClient (scripted agent)', () => {
  let dir: string;
  const servers: { server: Server; socks: Set<Socket> }[] = [];
  let frozen = false;
  let received: string[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmv-qga-'));
  });
  after(async () => {
    for (const { server, socks } of servers) {
      for (const s of socks) s.destroy();
      await new Promise((r) => server.close(r));
    }
    await rm(dir, { recursive: true, force: true });
  });

  /** An agent that first spits stale output, then answers like qemu-ga. */
  async function fakeAgent(name: string): Promise<string> {
    const path = join(dir, name);
    servers.push(
      await listen(path, (s) => {
        // Stale bytes from a "previous client": half a reply and an old sync reply.
        s.write('{"return": {"version": "ol');
        s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from('{"return": 12345}\n')]));
        let buf = Buffer.alloc(0);
        s.on('data', (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          for (;;) {
            // The agent treats 0xFF as "reset the parser".
            const ff = buf.lastIndexOf(0xff);
            if (ff >= 0) buf = buf.subarray(ff + 1);
            const nl = buf.indexOf(0x0a);
            if (nl < 0) break;
            const cmd = JSON.parse(buf.subarray(0, nl).toString());
            buf = buf.subarray(nl + 1);
            received.push(cmd.execute);
            const answer = (v: unknown): void => {
              s.write(`${JSON.stringify({ return: v, id: cmd.id })}\n`);
            };
            switch (cmd.execute) {
              case 'guest-sync-delimited':
                // Another stale line first, then the sentinel and the answer.
                s.write('{"return": {}}\n');
                s.write(
                  Buffer.concat([
                    Buffer.from([0xff]),
                    Buffer.from(`${JSON.stringify({ return: cmd.arguments.id })}\n`),
                  ]),
                );
                break;
              case 'guest-ping':
                answer({});
                break;
              case 'guest-info':
                answer({ version: '7.2.0', supported_commands: [] });
                break;
              case 'guest-fsfreeze-freeze':
                frozen = true;
                answer(2);
                break;
              case 'guest-fsfreeze-thaw':
                frozen = false;
                answer(2);
                break;
              case 'guest-fsfreeze-status':
                answer(frozen ? 'frozen' : 'thawed');
                break;
              case 'guest-slow':
                break;
              default:
                s.write(
                  `${JSON.stringify({ error: { class: 'CommandNotFound', desc: `The command ${cmd.execute} has not been found` } })}\n`,
                );
            }
          }
        });
      }),
    );
    return path;
  }

  it('syncs past stale output and runs commands', async () => {
    const path = await fakeAgent('a.sock');
    const ga = await GuestAgentClient.connect(path, { syncTimeoutMs: 1000 });
    try {
      await ga.ping();
      assert.equal((await ga.info()).version, '7.2.0');
      assert.equal(await ga.fsfreezeStatus(), 'thawed');
      assert.equal(await ga.fsfreezeFreeze(), 2);
      assert.equal(await ga.fsfreezeStatus(), 'frozen');
      assert.equal(await ga.fsfreezeThaw(), 2);
      await assert.rejects(ga.execute('guest-nope'), (err) => isQmpError(err, 'CommandNotFound'));
    } finally {
      ga.close();
    }
  });

  it('re-syncs after a command times out', async () => {
    const path = await fakeAgent('b.sock');
    const ga = await GuestAgentClient.connect(path, { syncTimeoutMs: 1000 });
    try {
      received = [];
      await assert.rejects(ga.execute('guest-slow', undefined, { timeoutMs: 100 }), (err) =>
        isVmvaultError(err, 'E_TIMEOUT'),
      );
      await ga.ping();
      assert.deepEqual(received, ['guest-slow', 'guest-sync-delimited', 'guest-ping']);
    } finally {
      ga.close();
    }
  });

  it('detects a chardev with no agent behind it quickly', async () => {
    const path = join(dir, 'mute.sock');
    servers.push(await listen(path, () => undefined));
    const t0 = Date.now();
    await assert.rejects(GuestAgentClient.connect(path, { syncTimeoutMs: 500 }), (err) => {
      assert.ok(isVmvaultError(err, 'E_TIMEOUT'));
      assert.equal(err.details.reason, 'no-agent');
      assert.match(err.message, /guest-sync-delimited/);
      return true;
    });
    assert.ok(Date.now() - t0 < 1500);
  });

  it('rejects with E_CLOSED when the channel closes mid-command', async () => {
    const path = join(dir, 'dies.sock');
    servers.push(
      await listen(path, (s) => {
        s.on('data', (d: Buffer) => {
          const text = d.toString('latin1');
          const m = /"id":(\d+)/.exec(text);
          if (text.includes('guest-sync-delimited') && m) {
            s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"return": ${m[1]}}\n`)]));
          } else {
            s.destroy();
          }
        });
      }),
    );
    const ga = await GuestAgentClient.connect(path);
    await assert.rejects(ga.ping(), (err) => isVmvaultError(err, 'E_CLOSED'));
    ga.close();
  });
});
