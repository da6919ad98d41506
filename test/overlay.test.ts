/**
 * Writable mounts: an ext4 image is backed up, served through an {@link OverlayExport} by our
 * NBD server, written by qemu-io (partial, whole and cross-chunk writes, write-zeroes, discard,
 * concurrent writes to one chunk) and compared with a raw copy that got the same writes. The
 * point must not change, flushed writes must survive a reopen and a SIGKILL, and the overlay
 * saved as a new point must restore to the written image while storing only the written chunks.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  openSync,
  readFileSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { isVmvaultError } from '../src/core/index.js';
import { Overlay, OverlayExport, saveOverlay } from '../src/overlay/index.js';
import { formatNbdUri, NbdServer } from '../src/protocols/nbd/index.js';
import { run } from '../src/protocols/nbd/test-helpers.js';
import { CodecPool, type DiskRecord, Repository, type RestorePoint } from '../src/repository/index.js';
import { PointReader, restoreDisk } from '../src/restore/index.js';
import { fileHash, makeExt4Image, makeTree, ROOT, Workspace } from './helpers.js';

const SIZE = (32 << 20) + 4096; // the last chunk is short
const CS = 65536;

/** One guest operation, applied through qemu-io and to the expected raw copy. */
type Op =
  | { kind: 'write'; off: number; len: number; pattern: number }
  | { kind: 'zero'; off: number; len: number; unmap?: boolean }
  | { kind: 'discard'; off: number; len: number };

function qemuIoCommand(op: Op): string {
  if (op.kind === 'write') return `write -P 0x${op.pattern.toString(16)} ${op.off} ${op.len}`;
  if (op.kind === 'zero') return `write -z${op.unmap ? ' -u' : ''} ${op.off} ${op.len}`;
  return `discard ${op.off} ${op.len}`;
}

function applyToFile(path: string, ops: Op[]): void {
  const fd = openSync(path, 'r+');
  try {
    for (const op of ops) {
      const buf = Buffer.alloc(op.len, op.kind === 'write' ? op.pattern : 0);
      writeSync(fd, buf, 0, buf.length, op.off);
    }
  } finally {
    closeSync(fd);
  }
}

/** Reads the whole export in 1 MiB pieces and compares it with a file. */
async function assertSameAs(exp: OverlayExport, path: string): Promise<void> {
  const want = readFileSync(path);
  assert.equal(want.length, exp.size);
  for (let off = 0; off < exp.size; off += 1 << 20) {
    const len = Math.min(1 << 20, exp.size - off);
    const got = await exp.read(off, len);
    if (!got.equals(want.subarray(off, off + len))) {
      let at = 0;
      while (got[at] === want[off + at]) at++;
      assert.fail(`export differs from ${path} at byte ${off + at}`);
    }
  }
}

describe('overlay: writable mounts of restore points', { timeout: 240_000 }, () => {
  const ws = new Workspace();
  const image = ws.path('disk.img');
  const expected = ws.path('expected.img');
  const ovlPath = ws.path('disk.overlay');
  const sock = ws.path('nbd.sock');
  let repo: Repository;
  let pool: CodecPool;
  let point: RestorePoint;
  let disk: DiskRecord;
  let server: NbdServer | undefined;

  before(async () => {
    makeTree(ws.path('tree'), { randomMiB: 3 });
    makeExt4Image(image, SIZE, ws.path('tree'));
    ws.ok(['init']);
    const id = ws.ok(['backup', image, '--name', 'web', '--json']).id as string;
    repo = await Repository.open(ws.repo, { passphrase: null });
    pool = new CodecPool(repo, 2);
    point = await repo.resolvePoint(id);
    disk = point.disks[0]!;
    copyFileSync(image, expected);
  });

  after(async () => {
    await server?.close();
    await pool?.close();
    await repo?.close();
    ws.cleanup();
  });

  const serve = async (exp: OverlayExport): Promise<string> => {
    server = new NbdServer();
    server.addExport('w', exp);
    await server.listen({ socketPath: sock });
    return formatNbdUri({ exportName: 'w', socketPath: sock });
  };

  it('serves writes merged over the point and leaves the point unchanged', async () => {
    const overlay = await Overlay.create(ovlPath, {
      pointId: point.id,
      disk: disk.name,
      size: disk.size,
      chunkSize: disk.chunkSize,
    });
    assert.equal(overlay.uncleanShutdown, false);
    const exp = new OverlayExport(new PointReader(repo, disk, { pool }), overlay, 'test');
    const uri = await serve(exp);
    // The image has data in chunks 0-4 and 36-84 (mkfs metadata and data/random.bin).
    const original = readFileSync(image);
    for (const c of [0, 41, 45, 51, 61, 70]) {
      assert.ok(!original.subarray(c * CS, (c + 1) * CS).every((b) => b === 0), `chunk ${c} holds data`);
    }
    const ops: Op[] = [
      { kind: 'write', off: 1000, len: 3000, pattern: 0xa1 }, // inside chunk 0
      { kind: 'write', off: 2 * CS, len: CS, pattern: 0xa2 }, // exactly chunk 2
      { kind: 'write', off: 200_000, len: 300_000, pattern: 0xa3 }, // part of 3, 4-6 whole, part of 7
      { kind: 'zero', off: 40 * CS + 1000, len: 6 * CS, unmap: true }, // part of 40, 41-45, part of 46
      { kind: 'write', off: 42 * CS + 1000, len: 100, pattern: 0xa4 }, // into a zeroed chunk
      { kind: 'zero', off: 2 * CS + 100, len: 200 }, // inside a chunk already in the overlay
      { kind: 'write', off: SIZE - 1500, len: 1500, pattern: 0xa5 }, // the short last chunk
      { kind: 'write', off: (20 << 20) + 512, len: 512, pattern: 0xa6 }, // a zero chunk of the point
      { kind: 'zero', off: 60 * CS, len: 3 * CS }, // NO_HOLE: real zeros, reported as data
      { kind: 'discard', off: 50 * CS, len: 4 * CS }, // trim reads back as zeros
      { kind: 'write', off: 51 * CS + 10, len: 10, pattern: 0xa7 }, // into a trimmed chunk
    ];
    const args = ['-f', 'raw'];
    for (const op of ops) args.push('-c', qemuIoCommand(op));
    args.push('-c', 'flush', uri);
    const r = await run('qemu-io', args, { timeoutMs: 60_000 });
    assert.doesNotMatch(r.stdout + r.stderr, /error|failed/i, r.stdout + r.stderr);
    applyToFile(expected, ops);

    // Concurrent writes into one chunk not yet in the overlay: each read-modify-write must see
    // the ones before it (aio_write sends them all before any reply).
    const aio: Op[] = [];
    for (let k = 0; k < 8; k++)
      aio.push({ kind: 'write', off: 100 * CS + k * 8192, len: 4096, pattern: 0xb0 + k });
    const aioArgs = ['-f', 'raw'];
    for (const op of aio) aioArgs.push('-c', `aio_${qemuIoCommand(op)}`);
    aioArgs.push('-c', 'aio_flush', uri);
    await run('qemu-io', aioArgs, { timeoutMs: 60_000 });
    applyToFile(expected, aio);
    // The same in-process with more writers at once, into another chunk.
    const parts = Array.from({ length: 16 }, (_, k) => ({
      off: 130 * CS + k * 4096,
      data: randomBytes(4096),
    }));
    await Promise.all(parts.map((p) => exp.write(p.off, p.data)));
    const fd = openSync(expected, 'r+');
    for (const p of parts) writeSync(fd, p.data, 0, p.data.length, p.off);
    closeSync(fd);

    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', expected, uri], {
      allowFail: true,
      timeoutMs: 60_000,
    });
    assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);

    // Block status: written chunks are data, zeroed and trimmed ones read as holes.
    const status = await exp.blockStatus(0, exp.size);
    const at = (off: number): boolean =>
      status.find((e) => e.offset <= off && off < e.offset + e.length)!.data;
    assert.equal(at(2 * CS), true);
    assert.equal(at(41 * CS), false, 'a zeroed chunk is a hole');
    assert.equal(at(61 * CS), true, 'zeroes written with NO_HOLE stay allocated');
    assert.equal(at(52 * CS), false, 'a trimmed chunk is a hole');
    assert.equal(at(30 * CS), false, 'a zero chunk of the point is a hole');
    assert.equal(
      status.reduce((s, e) => s + e.length, 0),
      exp.size,
    );

    const counts = overlay.counts();
    // Zeroed: 41, 43-45 and trimmed 50, 52, 53 (42 and 51 were written again afterwards).
    assert.equal(counts.zeroChunks, 7, JSON.stringify(counts));
    assert.deepEqual(overlay.dirtyChunks().slice(0, 3), [0, 2, 3]);

    // The restore point is untouched.
    await restoreDisk(repo, pool, disk, ws.path('again.img'));
    assert.equal(fileHash(ws.path('again.img')), fileHash(image));

    await server!.close();
    server = undefined;
    await exp.drain();
    await assert.rejects(exp.write(0, Buffer.alloc(1)), /no longer accepts writes/);
    await overlay.close();
  });

  it('reopens an overlay with its writes, and refuses overlays of other disks', async () => {
    const overlay = await Overlay.open(ovlPath, { pointId: point.id, disk: disk.name, size: disk.size });
    try {
      assert.equal(overlay.uncleanShutdown, false);
      await assertSameAs(
        new OverlayExport(new PointReader(repo, disk, { pool }), overlay, 'again'),
        expected,
      );
    } finally {
      await overlay.close();
    }
    await assert.rejects(Overlay.open(ovlPath, { pointId: 'ffffffffffffffff', disk: disk.name }), (e) => {
      assert.ok(isVmvaultError(e, 'E_USAGE'));
      assert.match(
        e.message,
        new RegExp(`belongs to restore point ${point.id} disk ${disk.name}, not ffffffffffffffff`),
      );
      return true;
    });
    await assert.rejects(
      Overlay.open(ovlPath, { pointId: point.id, disk: 'vdb' }),
      /belongs to restore point/,
    );
    await assert.rejects(
      Overlay.create(ovlPath, { pointId: point.id, disk: disk.name, size: disk.size, chunkSize: CS }),
      /already exists/,
    );
  });

  it('refuses a truncated or damaged overlay with a clear error', async () => {
    const whole = readFileSync(ovlPath).subarray(0, 8192);
    const cut = ws.path('cut.overlay');
    writeFileSync(cut, whole.subarray(0, 300));
    await assert.rejects(Overlay.open(cut), (e) => {
      assert.ok(isVmvaultError(e, 'E_CORRUPT'));
      assert.match(e.message, /overlay .*cut\.overlay is damaged: truncated header/);
      return true;
    });
    const flipped = ws.path('flipped.overlay');
    copyFileSync(ovlPath, flipped);
    const fd = openSync(flipped, 'r+');
    writeSync(fd, Buffer.from([0x7f]), 0, 1, 17); // inside the disk size field
    closeSync(fd);
    await assert.rejects(Overlay.open(flipped), /is damaged: header checksum mismatch/);
    const short = ws.path('short.overlay');
    copyFileSync(ovlPath, short);
    truncateSync(short, 1 << 20);
    await assert.rejects(Overlay.open(short), /is damaged: truncated/);
    await assert.rejects(Overlay.open(image), /is not a vmvault overlay file/);
  });

  it('keeps every flushed write when the process is killed', async () => {
    // A child process writes chunk 300 and flushes, writes chunk 301 without flushing, and is
    // killed. Reopened, the overlay has 300 and not 301 (its bit never reached the disk).
    const mod = new URL('src/overlay/index.js', `file://${ROOT}/dist/`).href;
    const script = `
      import { Overlay } from ${JSON.stringify(mod)};
      const o = await Overlay.open(process.argv[1]);
      await o.writeAt(300 * ${CS}, Buffer.alloc(${CS}, 0xc1));
      o.markData(300);
      await o.flush();
      await o.writeAt(301 * ${CS}, Buffer.alloc(${CS}, 0xc2));
      o.markData(301);
      console.log('ready');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, ovlPath], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise((r) => child.once('exit', r));
    try {
      await new Promise<void>((resolve, reject) => {
        createInterface({ input: child.stdout! }).once('line', () => resolve());
        child.once('exit', (code) => reject(new Error(`child exited early (${code})`)));
      });
      // While the child holds it, nobody else may open it.
      await assert.rejects(Overlay.open(ovlPath), (e) => isVmvaultError(e, 'E_LOCKED'));
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    const overlay = await Overlay.open(ovlPath, { pointId: point.id, disk: disk.name });
    try {
      assert.equal(overlay.uncleanShutdown, true);
      assert.equal(overlay.state(300), 'data');
      assert.equal(overlay.state(301), 'base');
      const exp = new OverlayExport(new PointReader(repo, disk, { pool }), overlay, 'after kill');
      assert.ok((await exp.read(300 * CS, CS)).equals(Buffer.alloc(CS, 0xc1)));
      applyToFile(expected, [{ kind: 'write', off: 300 * CS, len: CS, pattern: 0xc1 }]);
      await assertSameAs(exp, expected);
    } finally {
      await overlay.close();
    }
  });

  it('saves the overlay as a new restore point that stores only the written chunks', async () => {
    const before = ws.ok(['stats', '--json']);
    const overlay = await Overlay.open(ovlPath, { pointId: point.id, disk: disk.name });
    let saved: Awaited<ReturnType<typeof saveOverlay>>;
    const counts = overlay.counts();
    try {
      saved = await saveOverlay(repo, pool, point, overlay);
    } finally {
      await overlay.close();
    }
    const p = saved.point;
    assert.equal(p.parent, point.id);
    assert.equal(p.name, 'web');
    assert.ok(p.tags.includes('from-overlay'));
    const rec = p.disks[0]!;
    assert.equal(rec.size, disk.size);
    // Only the overlay's data chunks were read (the last one is short) and at most those stored.
    const lastShort = overlay.state(overlay.chunkCount - 1) === 'data' ? CS - (SIZE % CS) : 0;
    assert.equal(rec.stats.bytesRead, counts.dataChunks * CS - lastShort);
    assert.ok(rec.stats.chunksNew <= counts.dataChunks, JSON.stringify(rec.stats));
    assert.ok(rec.stats.chunksNew >= 1);
    assert.ok(saved.bytesStored < (counts.dataChunks + 8) * CS, `stored ${saved.bytesStored}`);
    const after = ws.ok(['stats', '--json']);
    assert.ok(after.storedBytes - before.storedBytes < (counts.dataChunks + 8) * CS);

    await restoreDisk(repo, pool, rec, ws.path('saved.img'));
    assert.equal(fileHash(ws.path('saved.img')), fileHash(expected));
    // The CLI sees it too, as the latest point of its name.
    const listed = ws.ok(['list', '--json']) as { id: string }[];
    assert.ok(listed.some((x) => x.id === p.id));
    await restoreDisk(repo, pool, disk, ws.path('parent.img'));
    assert.equal(fileHash(ws.path('parent.img')), fileHash(image), 'the parent point is unchanged');
  });

  it('discards an overlay', async () => {
    const overlay = await Overlay.open(ovlPath);
    await overlay.discard();
    await assert.rejects(Overlay.open(ovlPath), (e) => isVmvaultError(e, 'E_NOT_FOUND'));
  });
});
