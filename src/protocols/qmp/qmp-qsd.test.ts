/**
 * QmpClient and the block wrappers against a real qemu-storage-daemon: commands and errors,
 * the full pull-mode fleecing flow (reference §2) done by hand, export deletion events,
 * reconnect after a restart and socket death.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { isVmvaultError } from '../../core/errors.js';
import {
  blockDirtyBitmapAdd,
  blockDirtyBitmapRemove,
  blockJobCancel,
  blockdevAdd,
  blockdevDel,
  listDirtyBitmaps,
  queryBlock,
  queryBlockJobs,
  queryNamedBlockNodes,
  transaction,
} from './block.js';
import { isQmpError } from './errors.js';
import { describeVm } from './machine.js';
import {
  blockExportAdd,
  blockExportDel,
  nbdServerStart,
  nbdServerStop,
  queryBlockExports,
} from './nbd-export.js';
import { type QemuHandle, startStorageDaemon } from './qemu-process.js';

const run = promisify(execFile);

/** Runs qemu-io on an image or NBD URI; returns stdout. */
async function qemuIo(
  target: string,
  cmd: string,
  opts: { format?: string; readOnly?: boolean } = {},
): Promise<string> {
  const args = ['-f', opts.format ?? 'raw', ...(opts.readOnly ? ['-r'] : []), '-c', cmd, target];
  const { stdout } = await run('qemu-io', args, { timeout: 20_000 });
  if (/fail|error|Pattern verification failed/i.test(stdout)) throw new Error(`qemu-io ${cmd}: ${stdout}`);
  return stdout;
}

/** `qemu-img compare`: 0 identical, 1 different. */
async function imagesEqual(a: string, aFmt: string, b: string, bFmt: string): Promise<boolean> {
  try {
    await run('qemu-img', ['compare', '-f', aFmt, '-F', bFmt, a, b], { timeout: 20_000 });
    return true;
  } catch (err) {
    if ((err as { code?: number }).code === 1) return false;
    throw err;
  }
}

describe('QMP against qemu-storage-daemon', () => {
  let dir: string;
  let disk: string;
  let qsd: QemuHandle | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmv-qsd-'));
    disk = join(dir, 'disk.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '4M']);
    await qemuIo(disk, 'write -P 0x11 0 1M', { format: 'qcow2' });
    await qemuIo(disk, 'write -P 0x22 2M 512k', { format: 'qcow2' });
    qsd = await startStorageDaemon({
      dir,
      blockdevs: [{ driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: disk } }],
    });
  });

  after(async () => {
    await qsd?.stop({ graceMs: 2000 });
    await rm(dir, { recursive: true, force: true });
  });

  it('runs commands and reports errors', async () => {
    const qmp = qsd!.qmp;
    assert.equal(qmp.greeting.version.qemu.major >= 7, true);
    const nodes = await queryNamedBlockNodes(qmp);
    const d = nodes.find((n) => n['node-name'] === 'disk0');
    assert.equal(d?.drv, 'qcow2');
    assert.equal(d?.image['virtual-size'], 4 * 1024 * 1024);
    assert.deepEqual(await queryBlock(qmp), []); // qsd has no guest devices
    await assert.rejects(blockdevDel(qmp, 'no-such-node'), (err) => isQmpError(err, 'GenericError'));
    await assert.rejects(qmp.execute('no-such-command'), (err) => isQmpError(err, 'CommandNotFound'));
    // Many commands in flight at once.
    const all = await Promise.all(
      Array.from({ length: 20 }, () => qmp.execute<{ qemu: unknown }>('query-version')),
    );
    assert.equal(all.length, 20);
    const vm = await describeVm(qmp);
    assert.equal(vm.version.qemu.major, qmp.greeting.version.qemu.major);
    assert.deepEqual(vm.disks, []);
  });

  it('does the fleecing flow: bitmap + blockdev-backup sync=none, NBD export, read back, cleanup', async () => {
    const qmp = qsd!.qmp;
    const nbdSock = join(dir, 'nbd.sock');
    const scratch = join(dir, 'scratch.qcow2');
    const before = join(dir, 'before.qcow2');
    const rwUri = `nbd+unix:///rw?socket=${nbdSock}`;
    const fleeceUri = `nbd+unix:///vda?socket=${nbdSock}`;

    await nbdServerStart(qmp, { path: nbdSock });
    // A writable export stands in for the guest.
    await blockExportAdd(qmp, { id: 'rw', 'node-name': 'disk0', name: 'rw', writable: true });
    // Copy of the disk as it is at the point in time (qemu-img reads through the export).
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rwUri, before], { timeout: 20_000 });

    // A previous backup's bitmap, so the transaction can disable it atomically.
    await blockDirtyBitmapAdd(qmp, { node: 'disk0', name: 'bk0', persistent: true });
    await qemuIo(rwUri, 'write -P 0x33 3M 64k');

    await run('qemu-img', ['create', '-q', '-f', 'qcow2', scratch, '4M']);
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rwUri, before], { timeout: 20_000 });
    await blockdevAdd(qmp, {
      driver: 'qcow2',
      'node-name': 'scratch0',
      file: { driver: 'file', filename: scratch },
      backing: 'disk0',
    });
    await transaction(qmp, [
      { type: 'block-dirty-bitmap-add', data: { node: 'disk0', name: 'bk1', persistent: true } },
      { type: 'block-dirty-bitmap-disable', data: { node: 'disk0', name: 'bk0' } },
      {
        type: 'blockdev-backup',
        data: { 'job-id': 'fleece0', device: 'disk0', target: 'scratch0', sync: 'none' },
      },
    ]);
    const jobs = await queryBlockJobs(qmp);
    assert.equal(jobs.find((j) => j.device === 'fleece0')?.type, 'backup');

    await blockExportAdd(qmp, {
      id: 'exp0',
      'node-name': 'scratch0',
      name: 'vda',
      writable: false,
      bitmaps: ['bk0'],
    });
    assert.ok((await queryBlockExports(qmp)).some((e) => e.id === 'exp0'));

    // The "guest" overwrites data after the point in time.
    await qemuIo(rwUri, 'write -P 0x44 0 64k');
    await qemuIo(rwUri, 'read -P 0x44 0 64k');
    // The fleecing export still shows the old data, and the whole image equals the copy.
    await qemuIo(fleeceUri, 'read -P 0x11 0 1M', { readOnly: true });
    await qemuIo(fleeceUri, 'read -P 0x22 2M 512k', { readOnly: true });
    assert.equal(await imagesEqual(before, 'qcow2', fleeceUri, 'raw'), true);
    assert.equal(await imagesEqual(before, 'qcow2', rwUri, 'raw'), false);

    const bitmaps = await listDirtyBitmaps(qmp, 'disk0');
    const bk0 = bitmaps.find((b) => b.name === 'bk0');
    const bk1 = bitmaps.find((b) => b.name === 'bk1');
    assert.equal(bk0?.recording, false);
    assert.equal(bk0?.count, 64 * 1024); // only the write before the point in time
    assert.equal(bk1?.recording, true);
    assert.equal(bk1?.count, 64 * 1024); // the write after it

    // Cleanup, in order.
    const deleted = await blockExportDel(qmp, 'exp0');
    assert.equal(deleted.data.id, 'exp0');
    const cancelled = await blockJobCancel(qmp, 'fleece0');
    assert.equal(cancelled?.data.device, 'fleece0');
    assert.deepEqual(await queryBlockJobs(qmp), []);
    await blockdevDel(qmp, 'scratch0');
    await blockDirtyBitmapRemove(qmp, 'disk0', 'bk0');
    await blockExportDel(qmp, 'rw');
    await nbdServerStop(qmp);
    assert.deepEqual(
      (await listDirtyBitmaps(qmp, 'disk0')).map((b) => b.name),
      ['bk1'],
    );
    await blockDirtyBitmapRemove(qmp, 'disk0', 'bk1');
  });

  it('reconnects after qemu-storage-daemon restarts, and fails cleanly while it is down', async () => {
    const qmp = qsd!.qmp;
    const lost = new Promise<string>((resolve) => qmp.onClose(resolve));
    await qsd!.process.stop(); // SIGTERM: the socket dies under the client
    assert.ok((await lost).length > 0);
    await assert.rejects(qmp.execute('query-version'), (err) => isVmvaultError(err, 'E_CLOSED'));

    const old = qsd!;
    qsd = await startStorageDaemon({
      dir,
      blockdevs: [{ driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: disk } }],
    });
    // A monitor serves one client at a time: let the old client take it over.
    await qsd.qmp.close();
    await old.qmp.reconnect(5000);
    assert.equal(old.qmp.connected, true);
    const nodes = await queryNamedBlockNodes(old.qmp);
    assert.ok(nodes.some((n) => n['node-name'] === 'disk0'));
    await old.qmp.close();
    await qsd.stop();
  });

  it('rejects a command in flight with E_CLOSED when the daemon is killed', async () => {
    qsd = await startStorageDaemon({
      dir,
      blockdevs: [{ driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: disk } }],
    });
    const qmp = qsd.qmp;
    // Race a burst of commands against SIGKILL: those not yet answered must reject with E_CLOSED.
    const burst = Array.from({ length: 200 }, () => qmp.execute('query-named-block-nodes', { flat: true }));
    qsd!.process.child.kill('SIGKILL');
    const results = await Promise.allSettled(burst);
    const rejected = results.filter((r) => r.status === 'rejected');
    assert.ok(rejected.length > 0, 'some commands must still be pending at the kill');
    for (const r of rejected) assert.ok(isVmvaultError((r as PromiseRejectedResult).reason, 'E_CLOSED'));
    await qsd!.stop();
    qsd = undefined;
    await copyFile(disk, join(dir, 'after-kill.qcow2')); // the image is still readable
  });
});
