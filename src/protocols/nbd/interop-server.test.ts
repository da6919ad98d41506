/** Our NbdServer read and written by real peers: qemu-img, qemu-io, nbdinfo, nbdcopy. */
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { FileExport } from './file-export.js';
import { NbdServer } from './server.js';
import { haveTools, patternBuffer, run, tempDir } from './test-helpers.js';
import { formatNbdUri } from './uri.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const skip = haveTools('qemu-img', 'qemu-io', 'nbdinfo', 'nbdcopy')
  ? false
  : 'qemu-utils/libnbd-bin not installed';

/** Writes a sparse raw image: 0x11 in the first MiB, random data, explicit zeros and holes. */
function makeImage(path: string): void {
  const fd = openSync(path, 'w');
  writeSync(fd, Buffer.alloc(MiB, 0x11), 0, MiB, 0);
  writeSync(fd, patternBuffer(8 * MiB, 5), 0, 8 * MiB, 4 * MiB); // data 4..12 MiB
  writeSync(fd, Buffer.alloc(2 * MiB), 0, 2 * MiB, 20 * MiB); // allocated zeros 20..22 MiB
  writeSync(fd, patternBuffer(MiB + 512, 9), 0, MiB + 512, 40 * MiB); // unaligned data end
  writeSync(fd, Buffer.alloc(1, 0x99), 0, 1, SIZE - 1); // last byte sets the size
  closeSync(fd);
}

describe('our server with qemu-img, qemu-io, nbdinfo and nbdcopy', { skip, timeout: 60_000 }, () => {
  const tmp = tempDir();
  const image = `${tmp.dir}/disk.raw`;
  const target = `${tmp.dir}/target.raw`;
  const sock = `${tmp.dir}/nbd.sock`;
  const server = new NbdServer();
  const exports: FileExport[] = [];
  let port = 0;
  const uri = (name: string): string => formatNbdUri({ exportName: name, socketPath: sock });

  before(async () => {
    makeImage(image);
    const t = openSync(target, 'w');
    writeSync(t, Buffer.alloc(1), 0, 1, SIZE - 1);
    closeSync(t);
    const disk = await FileExport.open(image, {
      readOnly: true,
      sparseReads: true,
      description: 'test disk',
    });
    const plain = await FileExport.open(image, { readOnly: true });
    const rw = await FileExport.open(target, { readOnly: false });
    exports.push(disk, plain, rw);
    server.addExport('disk', disk);
    server.addExport('plain', plain);
    server.addExport('rw', rw);
    await server.listen({ socketPath: sock });
    port = (await server.listen({ host: '127.0.0.1', port: 0 })).port!;
  });
  after(async () => {
    await server.close();
    for (const e of exports) await e.close();
    tmp.cleanup();
  });

  it('qemu-img info sees the size (unix and TCP)', async () => {
    const a = JSON.parse((await run('qemu-img', ['info', '--output=json', uri('disk')])).stdout);
    assert.equal(a['virtual-size'], SIZE);
    const b = JSON.parse(
      (
        await run('qemu-img', [
          'info',
          '--output=json',
          formatNbdUri({ exportName: 'disk', host: '127.0.0.1', port }),
        ])
      ).stdout,
    );
    assert.equal(b['virtual-size'], SIZE);
  });

  it('qemu-img map reports holes from base:allocation', async () => {
    const map = JSON.parse((await run('qemu-img', ['map', '--output=json', uri('disk')])).stdout) as {
      start: number;
      length: number;
      data: boolean;
      zero: boolean;
    }[];
    const at = (o: number) => map.find((e) => e.start <= o && o < e.start + e.length)!;
    assert.equal(at(0).data, true);
    assert.equal(at(2 * MiB).data, false);
    assert.equal(at(2 * MiB).zero, true);
    assert.equal(at(5 * MiB).data, true);
    assert.equal(at(30 * MiB).zero, true);
    assert.equal(at(40 * MiB).data, true);
    // contiguous, covering the disk
    let pos = 0;
    for (const e of map) {
      assert.equal(e.start, pos);
      pos += e.length;
    }
    assert.equal(pos, SIZE);
  });

  it('qemu-img convert and compare match the original', async () => {
    const out = `${tmp.dir}/converted.raw`;
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri('disk'), out]);
    await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, out]);
    await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, uri('plain')]);
    assert.ok(readFileSync(out).equals(readFileSync(image)));
  });

  it('qemu-io reads patterns, and writes on the writable export', async () => {
    const r = await run('qemu-io', [
      '-r',
      '-f',
      'raw',
      '-c',
      'read -P 0x11 0 1M',
      '-c',
      'read -P 0 2M 1M',
      uri('disk'),
    ]);
    assert.doesNotMatch(r.stdout, /Pattern verification failed/);
    const bad = await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x22 0 4k', uri('disk')], {
      allowFail: true,
    });
    assert.match(bad.stdout, /Pattern verification failed/);
    await run('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0x44 1M 64k',
      '-c',
      'write -z 2M 64k',
      '-c',
      'flush',
      uri('rw'),
    ]);
    const t = readFileSync(target);
    assert.ok(t.subarray(MiB, MiB + 65536).equals(Buffer.alloc(65536, 0x44)));
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 0 4k', uri('disk')], {
      allowFail: true,
    });
    assert.match(w.stdout + w.stderr, /(Operation not permitted|read-only|Permission denied)/i);
  });

  it('qemu-img convert writes a whole image into the writable export', async () => {
    await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', image, uri('rw')]);
    await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, target]);
  });

  it('nbdinfo lists exports, size and map', async () => {
    const list = (await run('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${sock}`])).stdout;
    const j = JSON.parse(list) as { exports: { 'export-name': string; description?: string }[] };
    assert.deepEqual(j.exports.map((e) => e['export-name']).sort(), ['disk', 'plain', 'rw']);
    assert.equal((await run('nbdinfo', ['--size', uri('disk')])).stdout.trim(), String(SIZE));
    const map = (await run('nbdinfo', ['--map', uri('disk')])).stdout;
    assert.match(map, /hole,zero/);
    assert.match(map, /data/);
    const info = JSON.parse((await run('nbdinfo', ['--json', uri('disk')])).stdout);
    const e = info.exports[0];
    assert.equal(e.can_multi_conn, true);
    assert.equal(e.is_read_only, true);
    assert.equal(e.block_size_maximum, 32 * MiB);
  });

  it('nbdcopy copies the export with several connections', async () => {
    const out = `${tmp.dir}/copied.raw`;
    await run('nbdcopy', ['--connections=4', '--requests=16', uri('disk'), out]);
    assert.ok(readFileSync(out).equals(readFileSync(image)));
    await run('nbdcopy', ['--connections=4', `nbd://127.0.0.1:${port}/plain`, 'null:']);
  });
});
