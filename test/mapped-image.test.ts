/**
 * Direct reads of qcow2 images (`src/sources/mapped-image.ts`): the map parser's rules, and real
 * images — plain, compressed, with a backing file — read through `openSource` byte for byte
 * like `qemu-img convert -O raw` does, with and without direct reads; plus multi-conn NBD reads
 * against one connection.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import {
  type DiskSource,
  directReadObstacle,
  MappedImageSource,
  NbdSource,
  openSource,
  spansFromMap,
  startQemuNbd,
} from '../src/sources/index.js';
import { sh, Workspace } from './helpers.js';

const MiB = 1 << 20;
const SIZE = 24 * MiB;

/** Reads all of `src` in pieces of `step` bytes (not a multiple of any cluster size). */
async function readAll(src: DiskSource, step: number): Promise<Buffer> {
  const out = Buffer.alloc(src.size);
  for (let pos = 0; pos < src.size; pos += step) {
    await src.readInto(out.subarray(pos, Math.min(src.size, pos + step)), pos);
  }
  return out;
}

/** The guest's view of `image`, by qemu-img. */
function guestBytes(ws: Workspace, image: string): Buffer {
  const out = ws.path(`guest-${Math.random().toString(36).slice(2)}.raw`);
  sh('qemu-img', ['convert', '-O', 'raw', image, out]);
  return readFileSync(out);
}

/** Writes patterned 64 KiB-aligned and unaligned ranges into `image` with qemu-io. */
function scribble(image: string, fmt: string, writes: [number, number, number][]): void {
  const cmds = writes.flatMap(([pattern, off, len]) => ['-c', `write -P ${pattern} ${off} ${len}`]);
  sh('qemu-io', ['-f', fmt, ...cmds, image]);
}

describe('qcow2 direct reads', () => {
  const ws = new Workspace();
  after(() => ws.cleanup());

  it('builds spans from a map: merges, zeros, NBD for what has no usable offset, null on gaps', () => {
    const e = (start: number, length: number, more: Record<string, unknown>) => ({
      start,
      length,
      depth: 0,
      zero: false,
      data: true,
      ...more,
    });
    const spans = spansFromMap(
      [
        e(0, 100, { offset: 1000 }),
        e(100, 50, { offset: 1100 }), // contiguous in the file: merged
        e(150, 50, { offset: 5000 }),
        e(200, 100, { data: false, zero: true }),
        e(300, 10, {}), // compressed: no offset
        e(310, 10, { depth: 1, offset: 0 }), // in the backing file
        e(320, 10, { offset: 9995 }), // past the end of a 10000-byte file
        e(330, 10, { data: false, zero: false }),
      ],
      340,
      10_000,
    );
    assert.deepEqual(spans, [
      { start: 0, end: 150, kind: 'file', fileOffset: 1000 },
      { start: 150, end: 200, kind: 'file', fileOffset: 5000 },
      { start: 200, end: 300, kind: 'zero', fileOffset: 0 },
      { start: 300, end: 340, kind: 'nbd', fileOffset: 0 },
    ]);
    assert.equal(spansFromMap([e(0, 10, {}), e(20, 10, {})], 30, 100), null, 'gap');
    assert.equal(spansFromMap([e(0, 10, {})], 30, 100), null, 'short');
    assert.equal(spansFromMap({ not: 'a list' }, 30, 100), null);
    assert.equal(spansFromMap([e(0, 10, { offset: 'x' })], 10, 100), null);
    assert.equal(directReadObstacle({ format: 'qcow2', virtualSize: 1 }), undefined);
    assert.equal(directReadObstacle({ format: 'qcow2', virtualSize: 1, encrypted: true }), 'encrypted');
    assert.equal(
      directReadObstacle({ format: 'qcow2', virtualSize: 1, dataFile: 'd' }),
      'external data file',
    );
    assert.equal(directReadObstacle({ format: 'vmdk', virtualSize: 1 }), 'format vmdk');
  });

  it('reads plain, compressed and backed qcow2 images exactly as qemu-img does', async () => {
    const base = ws.path('base.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(SIZE)]);
    scribble(base, 'qcow2', [
      [0x11, 0, 3 * MiB],
      [0x22, 5 * MiB + 4096, 777_777],
      [0x00, 9 * MiB, MiB], // written zeros
      [0x33, SIZE - 65_536, 65_536],
    ]);
    const compressed = ws.path('compressed.qcow2');
    sh('qemu-img', ['convert', '-c', '-O', 'qcow2', base, compressed]);
    const top = ws.path('top.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
    scribble(top, 'qcow2', [
      [0x44, MiB + 512, 100_000],
      [0x55, 12 * MiB, 2 * MiB],
    ]);
    for (const [image, wantNbd] of [
      [base, false],
      [compressed, true],
      [top, true],
    ] as const) {
      const want = guestBytes(ws, image);
      const src = await openSource(image);
      try {
        assert.ok(src instanceof MappedImageSource, `${image} is read directly`);
        const got = await readAll(src, 3 * MiB + 12_345);
        assert.ok(got.equals(want), `${image}: direct reads differ from qemu-img's`);
        assert.equal(src.stats.nbdBytes > 0, wantNbd, `${image}: NBD bytes ${src.stats.nbdBytes}`);
        if (image !== compressed) assert.ok(src.stats.directBytes > 0);
        let covered = 0;
        for await (const x of src.extents()) {
          assert.equal(x.offset, covered);
          covered += x.length;
          if (!x.data) assert.ok(want.subarray(x.offset, x.offset + x.length).every((b) => b === 0));
        }
        assert.equal(covered, SIZE);
      } finally {
        await src.close();
      }
    }
    const prev = process.env.VMVAULT_IMAGE_DIRECT;
    process.env.VMVAULT_IMAGE_DIRECT = '0';
    try {
      const src = await openSource(top);
      try {
        assert.ok(src instanceof NbdSource, 'VMVAULT_IMAGE_DIRECT=0 reads over NBD only');
        assert.ok((await readAll(src, 5 * MiB + 1)).equals(guestBytes(ws, top)));
      } finally {
        await src.close();
      }
    } finally {
      if (prev === undefined) delete process.env.VMVAULT_IMAGE_DIRECT;
      else process.env.VMVAULT_IMAGE_DIRECT = prev;
    }
  });

  it('multi-conn NBD reads give the same bytes as one connection', async () => {
    const image = ws.path('multi.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(SIZE)]);
    scribble(image, 'qcow2', [
      [0x66, 0, 7 * MiB],
      [0x77, 8 * MiB + 1, 9 * MiB],
    ]);
    const server = await startQemuNbd(image, { format: 'qcow2' });
    try {
      const one = await NbdSource.connect({ socketPath: server.socketPath }, { connections: 1 });
      const four = await NbdSource.connect({ socketPath: server.socketPath }, { connections: 4 });
      try {
        assert.equal(one.connections, 1);
        assert.equal(four.connections, 4, 'qemu-nbd --read-only advertises multi-conn');
        const [a, b] = await Promise.all([readAll(one, 4 * MiB), readAll(four, 4 * MiB)]);
        assert.ok(a.equals(b));
        assert.ok(a.equals(guestBytes(ws, image)));
      } finally {
        await Promise.all([one.close(), four.close()]);
      }
    } finally {
      await server.stop();
    }
  });
});
