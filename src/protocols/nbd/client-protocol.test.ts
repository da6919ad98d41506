/** NbdClient against scripted fake servers that break the protocol in specific ways. */
import assert from 'node:assert/strict';
import { type Server, type Socket, createServer } from 'node:net';
import { after, describe, it } from 'node:test';
import { isVmvaultError } from '../../core/errors.js';
import { NbdClient } from './client.js';
import {
  NBD_CMD_READ,
  NBD_EIO,
  NBD_INIT_MAGIC,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_ERR_UNSUP,
  NBD_REP_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from './constants.js';
import { SocketReader } from './socket-reader.js';
import { tempDir } from './test-helpers.js';

interface Req {
  type: number;
  cookie: Buffer;
  offset: number;
  length: number;
}

type Transmission = (sock: Socket, req: Req, reader: SocketReader) => void | Promise<void>;

/**
 * A minimal scripted server: fixed newstyle, optional GO support (else ERR_UNSUP → EXPORT_NAME),
 * structured replies accepted, then calls `onRequest` for every request.
 */
async function fakeServer(
  path: string,
  opts: { go?: boolean; greeting?: Buffer; silent?: boolean },
  onRequest: Transmission,
): Promise<Server> {
  const srv = createServer((sock) => {
    sock.on('error', () => {});
    void (async () => {
      const reader = new SocketReader(sock);
      if (opts.silent) return;
      if (opts.greeting) {
        sock.write(opts.greeting);
        return;
      }
      const hello = Buffer.alloc(18);
      hello.writeBigUInt64BE(NBD_INIT_MAGIC, 0);
      hello.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
      hello.writeUInt16BE(3, 16);
      sock.write(hello);
      await reader.read(4);
      for (;;) {
        const h = await reader.read(16);
        const opt = h.readUInt32BE(8);
        const len = h.readUInt32BE(12);
        if (len) await reader.read(len);
        if (opt === NBD_OPT_EXPORT_NAME) {
          const r = Buffer.alloc(10);
          r.writeBigUInt64BE(1n << 20n, 0);
          r.writeUInt16BE(1, 8);
          sock.write(r);
          break;
        }
        const rep = Buffer.alloc(20);
        rep.writeBigUInt64BE(NBD_REP_MAGIC, 0);
        rep.writeUInt32BE(opt, 8);
        if (opt === NBD_OPT_GO && opts.go !== false) {
          const info = Buffer.alloc(12);
          info.writeBigUInt64BE(1n << 20n, 2);
          info.writeUInt16BE(1, 10);
          const ir = Buffer.from(rep);
          ir.writeUInt32BE(3, 12);
          ir.writeUInt32BE(12, 16);
          rep.writeUInt32BE(NBD_REP_ACK, 12);
          sock.write(Buffer.concat([ir, info, rep]));
          break;
        }
        rep.writeUInt32BE(opt === 8 ? NBD_REP_ACK : NBD_REP_ERR_UNSUP, 12);
        sock.write(rep);
      }
      for (;;) {
        const h = await reader.read(28);
        const req = {
          type: h.readUInt16BE(6),
          cookie: Buffer.from(h.subarray(8, 16)),
          offset: Number(h.readBigUInt64BE(16)),
          length: h.readUInt32BE(24),
        };
        await onRequest(sock, req, reader);
      }
    })().catch(() => sock.destroy());
  });
  await new Promise<void>((r) => srv.listen(path, r));
  return srv;
}

function simple(req: Req, err: number, data?: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  h.writeUInt32BE(err, 4);
  req.cookie.copy(h, 8);
  return data ? Buffer.concat([h, data]) : h;
}

function chunk(
  req: Req,
  flags: number,
  type: number,
  payload: Buffer,
  cookie?: Buffer,
  lenOverride?: number,
): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  (cookie ?? req.cookie).copy(h, 8);
  h.writeUInt32BE(lenOverride ?? payload.length, 16);
  return Buffer.concat([h, payload]);
}

function offsetData(offset: number, data: Buffer): Buffer {
  const b = Buffer.alloc(8 + data.length);
  b.writeBigUInt64BE(BigInt(offset), 0);
  data.copy(b, 8);
  return b;
}

describe('client protocol robustness', { timeout: 20_000 }, () => {
  const tmp = tempDir();
  const servers: Server[] = [];
  let n = 0;
  after(async () => {
    for (const s of servers) await new Promise((r) => s.close(r));
    tmp.cleanup();
  });
  async function serve(opts: Parameters<typeof fakeServer>[1], fn: Transmission): Promise<string> {
    const path = `${tmp.dir}/fake${n++}.sock`;
    servers.push(await fakeServer(path, opts, fn));
    return path;
  }

  it('falls back to NBD_OPT_EXPORT_NAME when GO is unsupported', async () => {
    const path = await serve({ go: false }, (s, req) => {
      if (req.type === NBD_CMD_READ)
        s.write(chunk(req, NBD_REPLY_FLAG_DONE, 1, offsetData(req.offset, Buffer.alloc(req.length, 7))));
    });
    const c = await NbdClient.connect({ socketPath: path, exportName: 'x' });
    assert.equal(c.size, 1 << 20);
    assert.ok((await c.read(100, 50)).equals(Buffer.alloc(50, 7)));
    c.destroy();
  });

  it('reassembles replies cut at any byte, interleaved, with holes, into the right buffers', async () => {
    // The disk: a pattern, with a hole at [256 KiB, 384 KiB).
    const disk = Buffer.alloc(1 << 20);
    for (let i = 0; i < disk.length; i += 4) disk.writeUInt32LE(Math.imul(i + 1, 2654435761) >>> 0, i);
    const hole = [256 << 10, 384 << 10];
    disk.fill(0, hole[0], hole[1]);
    let seed = 7;
    const rnd = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    // Reply chunks of every request are queued, shuffled between requests, and written in
    // random fragments of 1 byte to 9 KiB with a pause between them.
    const chunks: Buffer[] = [];
    let draining = false;
    const drain = async (s: Socket): Promise<void> => {
      while (chunks.length > 0) {
        const out = chunks.splice(rnd(chunks.length), 1)[0]!;
        for (let at = 0; at < out.length; ) {
          const n = 1 + rnd(Math.min(9000, out.length - at));
          s.write(out.subarray(at, at + n));
          at += n;
          if (rnd(3) === 0) await new Promise((r) => setTimeout(r, 0));
        }
      }
      draining = false;
    };
    const path = await serve({}, (s, req) => {
      if (req.type !== NBD_CMD_READ) return;
      const end = req.offset + req.length;
      // Pieces: the part before the hole, the hole, the part after; the last one says DONE.
      const cuts = [req.offset, ...hole.filter((h) => h > req.offset && h < end), end];
      const parts: Buffer[] = [];
      for (let k = 0; k + 1 < cuts.length; k++) {
        const [a, b] = [cuts[k]!, cuts[k + 1]!];
        const flags = k + 2 === cuts.length ? NBD_REPLY_FLAG_DONE : 0;
        if (a >= hole[0]! && b <= hole[1]!) {
          const body = Buffer.alloc(12);
          body.writeBigUInt64BE(BigInt(a), 0);
          body.writeUInt32BE(b - a, 8);
          parts.push(chunk(req, flags, NBD_REPLY_TYPE_OFFSET_HOLE, body));
        } else {
          parts.push(chunk(req, flags, NBD_REPLY_TYPE_OFFSET_DATA, offsetData(a, disk.subarray(a, b))));
        }
      }
      // The DONE chunk must come last for its request; the others may come in any order.
      chunks.push(Buffer.concat([...parts.slice(0, -1).reverse(), parts[parts.length - 1]!]));
      if (!draining) {
        draining = true;
        setTimeout(() => void drain(s), 1);
      }
    });
    const c = await NbdClient.connect({ socketPath: path, exportName: 'x' });
    const reads: [number, number][] = [
      [0, 1],
      [1, 100_000],
      [250_000, 200_000], // across the hole
      [hole[0]!, 4096], // inside it
      [(1 << 20) - 3, 3],
    ];
    for (let k = 0; k < 60; k++) reads.push([rnd(900_000), 1 + rnd(120_000)]);
    const results = await Promise.all(reads.map(([off, len]) => c.read(off, len)));
    reads.forEach(([off, len], k) => {
      assert.ok(results[k]!.equals(disk.subarray(off, off + len)), `read ${off}+${len}`);
    });
    const target = Buffer.alloc(70_000, 0xee);
    await c.readInto(300_000, target.subarray(5, 69_995));
    assert.ok(target.subarray(5, 69_995).equals(disk.subarray(300_000, 369_990)));
    assert.equal(target[4], 0xee);
    assert.equal(target[69_995], 0xee);
    c.destroy();
  });

  it('rejects a non-NBD greeting and a silent server with typed errors', async () => {
    const bad = await serve({ greeting: Buffer.from('SSH-2.0-OpenSSH_9.2\r\n') }, () => {});
    await assert.rejects(NbdClient.connect({ socketPath: bad }), (e) => isVmvaultError(e, 'E_PROTOCOL'));
    const silent = await serve({ silent: true }, () => {});
    await assert.rejects(NbdClient.connect({ socketPath: silent, handshakeTimeoutMs: 200 }), (e) =>
      isVmvaultError(e, 'E_TIMEOUT'),
    );
  });

  it('fails with E_PROTOCOL on unknown cookies, bad magic, oversize chunks, out-of-range data', async () => {
    const cases: ((s: Socket, r: Req) => void)[] = [
      (s, r) => s.write(simple({ ...r, cookie: Buffer.from([0, 0, 0, 0, 0, 0, 9, 9]) }, 0)),
      (s) => s.write(Buffer.alloc(20, 0x42)),
      (s, r) => s.write(chunk(r, 0, NBD_REPLY_TYPE_ERROR, Buffer.alloc(0), undefined, 0x7fffffff)),
      (s, r) =>
        s.write(
          chunk(
            r,
            NBD_REPLY_FLAG_DONE,
            NBD_REPLY_TYPE_OFFSET_DATA,
            offsetData(r.offset + 4096, Buffer.alloc(16)),
          ),
        ),
      (s, r) => s.write(chunk(r, NBD_REPLY_FLAG_DONE, 0x33, Buffer.alloc(0))),
      (s, r) =>
        s.write(
          Buffer.concat([
            chunk(r, 0, NBD_REPLY_TYPE_OFFSET_DATA, offsetData(r.offset, Buffer.alloc(8))),
            chunk(r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, offsetData(r.offset, Buffer.alloc(8))),
          ]),
        ),
      (s, r) =>
        s.write(
          chunk(r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, offsetData(r.offset, Buffer.alloc(8))),
        ),
    ];
    for (const behave of cases) {
      const path = await serve({}, (s, r) => behave(s, r));
      const c = await NbdClient.connect({ socketPath: path });
      await assert.rejects(c.read(0, 16), (e) => isVmvaultError(e, 'E_PROTOCOL'));
      await assert.rejects(c.read(0, 16), (e) => isVmvaultError(e)); // connection is dead now
      c.destroy();
    }
  });

  it('maps error chunks to errno names with the server message', async () => {
    const path = await serve({}, (s, r) => {
      const msg = Buffer.from('disk on fire');
      const p = Buffer.alloc(6 + msg.length);
      p.writeUInt32BE(NBD_EIO, 0);
      p.writeUInt16BE(msg.length, 4);
      msg.copy(p, 6);
      s.write(chunk(r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, p));
    });
    const c = await NbdClient.connect({ socketPath: path });
    await assert.rejects(c.read(0, 16), (e) => {
      assert.ok(isVmvaultError(e, 'E_IO'));
      assert.equal(e.details.errno, 'EIO');
      assert.match(e.message, /disk on fire/);
      return true;
    });
    c.destroy();
  });

  it('times out a request the server never answers, and keeps others going', async () => {
    const path = await serve({}, (s, r) => {
      if (r.offset === 0) return; // never answered
      s.write(
        chunk(
          r,
          NBD_REPLY_FLAG_DONE,
          NBD_REPLY_TYPE_OFFSET_DATA,
          offsetData(r.offset, Buffer.alloc(r.length, 1)),
        ),
      );
    });
    const c = await NbdClient.connect({ socketPath: path, requestTimeoutMs: 150 });
    const t0 = Date.now();
    await assert.rejects(c.read(0, 16), (e) => isVmvaultError(e, 'E_TIMEOUT'));
    assert.ok(Date.now() - t0 < 1000);
    assert.ok((await c.read(512, 16)).equals(Buffer.alloc(16, 1)));
    c.destroy();
  });

  it('fails pending requests with E_CLOSED when the server hangs up mid-reply', async () => {
    const path = await serve({}, (s, r) => {
      s.write(
        chunk(
          r,
          NBD_REPLY_FLAG_DONE,
          NBD_REPLY_TYPE_OFFSET_DATA,
          offsetData(r.offset, Buffer.alloc(8)),
        ).subarray(0, 24),
      );
      s.destroy();
    });
    const c = await NbdClient.connect({ socketPath: path });
    await assert.rejects(c.read(0, 1024), (e) => isVmvaultError(e, 'E_CLOSED'));
    c.destroy();
  });
});
