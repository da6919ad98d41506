/** Hostile and broken clients against NbdServer: it must stay up, serve others, and not leak. */
import assert from 'node:assert/strict';
import { type Socket, connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { NbdClient } from './client.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_EINVAL,
  NBD_EPERM,
  NBD_ENOSPC,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REPLY_TYPE_ERROR,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from './constants.js';
import { MemoryExport } from './memory-export.js';
import { NbdServer } from './server.js';
import { SocketReader } from './socket-reader.js';
import { patternBuffer, tempDir } from './test-helpers.js';

const MiB = 1024 * 1024;

/** A raw connection to the server for writing arbitrary bytes. */
class Raw {
  readonly reader: SocketReader;
  readonly closed: Promise<void>;
  constructor(readonly sock: Socket) {
    this.reader = new SocketReader(sock);
    this.closed = new Promise((r) => sock.once('close', () => r()));
    sock.on('error', () => {});
  }
  static async open(path: string): Promise<Raw> {
    const s = connect({ path });
    await new Promise<void>((r, j) => s.once('connect', r).once('error', j));
    return new Raw(s);
  }
  send(...parts: Buffer[]): void {
    this.sock.write(Buffer.concat(parts));
  }
  async greet(flags = 3): Promise<void> {
    await this.reader.read(18);
    this.send(u32(flags));
  }
  option(opt: number, data: Buffer = Buffer.alloc(0), lenOverride?: number): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(lenOverride ?? data.length, 12);
    this.send(h, data);
  }
  async reply(): Promise<{ opt: number; type: number; data: Buffer }> {
    const h = await this.reader.read(20);
    const len = h.readUInt32BE(16);
    return {
      opt: h.readUInt32BE(8),
      type: h.readUInt32BE(12),
      data: len ? await this.reader.read(len) : Buffer.alloc(0),
    };
  }
  /** Handshake into transmission on `name` (structured replies optional). */
  async go(name: string, structured = true): Promise<void> {
    await this.greet();
    if (structured) {
      this.option(NBD_OPT_STRUCTURED_REPLY);
      assert.equal((await this.reply()).type, NBD_REP_ACK);
    }
    const n = Buffer.from(name);
    this.option(NBD_OPT_GO, Buffer.concat([u32(n.length), n, u16(1), u16(NBD_INFO_BLOCK_SIZE)]));
    for (;;) {
      const r = await this.reply();
      if (r.type === NBD_REP_ACK) return;
      assert.equal(r.type, NBD_REP_INFO);
    }
  }
  request(
    type: number,
    offset: number,
    length: number,
    cookie = 1,
    flags = 0,
    magic = NBD_REQUEST_MAGIC,
  ): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(magic, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeUInt32BE(cookie, 12);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    this.send(h);
  }
  /** Reads one structured chunk; returns its header fields and payload. */
  async chunk(): Promise<{ magic: number; type: number; cookie: number; err: number; payload: Buffer }> {
    const first = await this.reader.read(16);
    const magic = first.readUInt32BE(0);
    if (magic === NBD_SIMPLE_REPLY_MAGIC) {
      return {
        magic,
        type: -1,
        cookie: first.readUInt32BE(12),
        err: first.readUInt32BE(4),
        payload: Buffer.alloc(0),
      };
    }
    const rest = await this.reader.read(4);
    const len = rest.readUInt32BE(0);
    const payload = len ? await this.reader.read(len) : Buffer.alloc(0);
    const type = first.readUInt16BE(6);
    const err = type === NBD_REPLY_TYPE_ERROR ? payload.readUInt32BE(0) : 0;
    return { magic, type, cookie: first.readUInt32BE(12), err, payload };
  }
  destroy(): void {
    this.sock.destroy();
  }
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}
function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}

async function closesWithin(raw: Raw, ms: number): Promise<void> {
  let t: NodeJS.Timeout | undefined;
  await Promise.race([
    raw.closed,
    new Promise((_, j) => {
      t = setTimeout(() => j(new Error(`connection still open after ${ms} ms`)), ms);
    }),
  ]);
  clearTimeout(t);
}

describe('hostile clients', { timeout: 30_000 }, () => {
  const tmp = tempDir();
  const sock = `${tmp.dir}/nbd.sock`;
  const errors: string[] = [];
  const server = new NbdServer({
    handshakeTimeoutMs: 400,
    requestDataTimeoutMs: 400,
    maxInFlight: 8,
    onError: (e) => errors.push(String(e)),
  });
  const roData = patternBuffer(4 * MiB, 21);

  before(async () => {
    server.addExport('ro', new MemoryExport(roData, { readOnly: true }));
    server.addExport('rw', new MemoryExport(4 * MiB));
    await server.listen({ socketPath: sock });
  });
  after(async () => {
    await server.close();
    tmp.cleanup();
  });

  async function stillServes(): Promise<void> {
    const c = await NbdClient.connect({ socketPath: sock, exportName: 'ro', handshakeTimeoutMs: 2000 });
    assert.ok((await c.read(MiB, 4096)).equals(roData.subarray(MiB, MiB + 4096)));
    await c.close();
  }

  it('drops garbage, unknown client flags, bad option magic and huge options', async () => {
    const g = await Raw.open(sock);
    g.send(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await closesWithin(g, 1000);

    const f = await Raw.open(sock);
    await f.greet(0xff);
    await closesWithin(f, 1000);

    const m = await Raw.open(sock);
    await m.greet();
    m.send(Buffer.alloc(16, 0x41));
    await closesWithin(m, 1000);

    const big = await Raw.open(sock);
    await big.greet();
    big.option(NBD_OPT_GO, Buffer.alloc(0), 0xfffffff0);
    await closesWithin(big, 1000);
    await stillServes();
  });

  it('answers unknown options, STARTTLS and EXTENDED_HEADERS with ERR_UNSUP and keeps going', async () => {
    const r = await Raw.open(sock);
    await r.greet();
    for (const opt of [0x1234, NBD_OPT_STARTTLS, NBD_OPT_EXTENDED_HEADERS]) {
      r.option(opt, Buffer.from('xyz'));
      const rep = await r.reply();
      assert.equal(rep.opt, opt);
      assert.equal(rep.type, NBD_REP_ERR_UNSUP);
    }
    r.option(NBD_OPT_GO, Buffer.from([0, 0, 0, 99, 1])); // name length overruns
    assert.equal((await r.reply()).type, NBD_REP_ERR_INVALID);
    r.option(NBD_OPT_STRUCTURED_REPLY, Buffer.from('x'));
    assert.equal((await r.reply()).type, NBD_REP_ERR_INVALID);
    r.option(2); // ABORT
    assert.equal((await r.reply()).type, NBD_REP_ACK);
    await closesWithin(r, 1000);
  });

  it('times out clients that stall in the handshake or mid-request', async () => {
    const idle = await Raw.open(sock);
    await closesWithin(idle, 2000);
    const slow = await Raw.open(sock);
    await slow.greet();
    slow.send(Buffer.alloc(5)); // a fragment of an option header
    await closesWithin(slow, 2000);
    const mid = await Raw.open(sock);
    await mid.go('rw');
    const h = Buffer.alloc(28);
    h.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
    h.writeUInt16BE(NBD_CMD_WRITE, 6);
    h.writeUInt32BE(4096, 24);
    mid.send(h, Buffer.alloc(100)); // promises 4096 bytes, sends 100
    await closesWithin(mid, 2000);
    await stillServes();
  });

  it('replies with errors to bad requests and keeps the connection', async () => {
    const r = await Raw.open(sock);
    await r.go('ro');
    r.request(NBD_CMD_READ, 0, 33 * MiB, 1);
    let c = await r.chunk();
    assert.equal(c.cookie, 1);
    assert.equal(c.err, NBD_EINVAL);
    r.request(NBD_CMD_READ, 4 * MiB - 10, 20, 2);
    c = await r.chunk();
    assert.equal(c.err, NBD_EINVAL);
    r.request(NBD_CMD_READ, 2 ** 62, 20, 3);
    assert.equal((await r.chunk()).err, NBD_EINVAL);
    r.request(NBD_CMD_WRITE, 0, 8, 4);
    r.send(Buffer.alloc(8));
    assert.equal((await r.chunk()).err, NBD_EPERM);
    r.request(77, 0, 0, 5);
    assert.equal((await r.chunk()).err, NBD_EINVAL);
    r.request(NBD_CMD_BLOCK_STATUS, 0, 4096, 6);
    assert.equal((await r.chunk()).err, NBD_EINVAL); // no context negotiated
    r.request(NBD_CMD_READ, 0, 4096, 7, 0x40); // unknown flag
    assert.equal((await r.chunk()).err, NBD_EINVAL);
    r.request(NBD_CMD_READ, 8, 8, 8);
    c = await r.chunk();
    assert.equal(c.magic, NBD_STRUCTURED_REPLY_MAGIC);
    assert.ok(c.payload.subarray(8).equals(roData.subarray(8, 16)));
    r.destroy();

    const s = await Raw.open(sock); // simple replies
    await s.go('rw', false);
    s.request(NBD_CMD_WRITE, 4 * MiB - 4, 8, 9);
    s.send(Buffer.alloc(8));
    const e = await s.chunk();
    assert.equal(e.magic, NBD_SIMPLE_REPLY_MAGIC);
    assert.equal(e.err, NBD_ENOSPC);
    s.destroy();
  });

  it('disconnects on bad request magic and oversized writes', async () => {
    const a = await Raw.open(sock);
    await a.go('rw');
    a.request(NBD_CMD_READ, 0, 512, 1, 0, 0xdeadbeef);
    await closesWithin(a, 1000);
    const b = await Raw.open(sock);
    await b.go('rw');
    b.request(NBD_CMD_WRITE, 0, 64 * MiB, 1);
    await closesWithin(b, 1000);
    await stillServes();
  });

  it('survives abrupt disconnects mid-request and floods without reading replies', async () => {
    const a = await Raw.open(sock);
    await a.go('rw');
    a.request(NBD_CMD_WRITE, 0, MiB, 1);
    a.send(Buffer.alloc(1000));
    a.destroy();
    const flood = await Raw.open(sock);
    await flood.go('ro');
    // 2000 reads of 1 MiB never read back: the server must pause, not buffer 2 GiB.
    const h = Buffer.alloc(28 * 2000);
    for (let i = 0; i < 2000; i++) {
      h.writeUInt32BE(NBD_REQUEST_MAGIC, 28 * i);
      h.writeUInt16BE(NBD_CMD_READ, 28 * i + 6);
      h.writeUInt32BE(i, 28 * i + 12);
      h.writeUInt32BE(MiB, 28 * i + 24);
    }
    flood.sock.pause();
    flood.sock.write(h);
    await new Promise((r) => setTimeout(r, 300));
    const rss = process.memoryUsage().rss;
    await stillServes(); // one client cannot stall the others
    flood.destroy();
    assert.ok(rss < 1500 * MiB, `rss ${rss}`);
    for (let i = 0; i < 50 && server.connectionCount > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(server.connectionCount, 0);
  });

  it('many bad clients at once do not stop a good one', async () => {
    const bad = await Promise.all(Array.from({ length: 30 }, () => Raw.open(sock)));
    for (const [i, b] of bad.entries()) b.send(patternBuffer(64 + i, i + 1));
    await stillServes();
    for (const b of bad) b.destroy();
  });

  it('close() ends half-open and active connections', async () => {
    const other = new NbdServer({ handshakeTimeoutMs: 60_000 });
    other.addExport('x', new MemoryExport(MiB));
    const path = `${tmp.dir}/other.sock`;
    await other.listen({ socketPath: path });
    const half = await Raw.open(path);
    const c = await NbdClient.connect({ socketPath: path });
    const t0 = Date.now();
    await other.close();
    assert.ok(Date.now() - t0 < 3000);
    await closesWithin(half, 1000);
    await assert.rejects(c.read(0, 10), (e) => (e as { code?: string }).code === 'E_CLOSED');
    c.destroy();
  });
});
