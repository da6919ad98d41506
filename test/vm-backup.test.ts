/**
 * VM backups against real QEMU (TCG only): qemu-storage-daemon with a qcow2 and a raw disk
 * written through writable exports while backups run, self-healing after kill -9, stale and
 * foreign bitmaps, a disk added between backups, failure merge-back; then a real
 * qemu-system-x86_64 guest writing files, frozen through its agent, killed and restarted.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { type BackupVmOptions, backupVm, vmRecordOf } from '../src/backup/index.js';
import { openFilesystem } from '../src/filesystems/index.js';
import { FileReader } from '../src/filesystems/testing/helpers.js';
import {
  blockDirtyBitmapAdd,
  blockdevAdd,
  listDirtyBitmaps,
  liveProcesses,
  type QemuHandle,
  queryBlockExports,
  queryBlockJobs,
  queryNamedBlockNodes,
  startStorageDaemon,
} from '../src/protocols/qmp/index.js';
import { CodecPool, type DiskRecord, Repository, type RestorePoint } from '../src/repository/index.js';
import { restoreDisk } from '../src/restore/index.js';
import {
  buildTestGuest,
  createGuestDisk,
  startTestGuest,
  type TestGuest,
  type TestGuestHandle,
} from './fixtures/guest/index.js';
import { Workspace } from './helpers.js';

const run = promisify(execFile);
const MiB = 1 << 20;

async function qemuIo(uri: string, cmd: string): Promise<void> {
  const { stdout } = await run('qemu-io', ['-f', 'raw', '-c', cmd, uri], { timeout: 20_000 });
  if (/fail|error/i.test(stdout)) throw new Error(`qemu-io ${cmd}: ${stdout}`);
}

/** Raw copy of what an NBD export shows now. */
async function snapshot(uri: string, out: string): Promise<Buffer> {
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out], { timeout: 30_000 });
  return readFile(out);
}

async function restored(repo: Repository, pool: CodecPool, disk: DiskRecord, out: string): Promise<Buffer> {
  await rm(out, { force: true });
  await restoreDisk(repo, pool, disk, out);
  return readFile(out);
}

function diskOf(p: RestorePoint, name: string): DiskRecord {
  const d = p.disks.find((x) => x.name === name);
  assert.ok(d, `point ${p.id} has disk ${name}`);
  return d;
}

describe('VM backup against qemu-storage-daemon', () => {
  let dir: string;
  let repo: Repository;
  let pool: CodecPool;
  let qsd: QemuHandle | undefined;
  let nbdSock: string;
  const uri = (e: string): string => `nbd+unix:///${e}?socket=${nbdSock}`;

  const startQsd = async (): Promise<QemuHandle> =>
    startStorageDaemon({
      dir,
      blockdevs: [
        { driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: join(dir, 'd0.qcow2') } },
        { driver: 'file', 'node-name': 'disk1-file', filename: join(dir, 'd1.raw') },
        { driver: 'raw', 'node-name': 'disk1', file: 'disk1-file' },
      ],
      nbdServer: { path: nbdSock },
      exports: [
        { type: 'nbd', id: 'rw0', 'node-name': 'disk0', name: 'rw0', writable: true },
        { type: 'nbd', id: 'rw1', 'node-name': 'disk1', name: 'rw1', writable: true },
      ],
    });

  const backup = (extra: Partial<BackupVmOptions> = {}) =>
    backupVm(repo, pool, qsd!.qmp, {
      name: 'qsd',
      qmpSocket: qsd!.qmpSocket,
      nbdSocket: nbdSock,
      guestAgent: false,
      ...extra,
    });

  /** Nothing of a backup is left in QEMU. */
  const assertClean = async (): Promise<void> => {
    const qmp = qsd!.qmp;
    assert.deepEqual(
      (await queryNamedBlockNodes(qmp)).map((n) => n['node-name']).filter((n) => n.startsWith('vmvault-')),
      [],
    );
    assert.deepEqual((await queryBlockExports(qmp)).map((e) => e.id).sort(), ['rw0', 'rw1']);
    assert.deepEqual(await queryBlockJobs(qmp), []);
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmv-vmq-'));
    nbdSock = join(dir, 'nbd.sock');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'd0.qcow2'), '16M']);
    await run('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'd1.raw'), '8M']);
    repo = await Repository.init(join(dir, 'repo'), { passphrase: null });
    pool = new CodecPool(repo);
    qsd = await startQsd();
  });

  after(async () => {
    await qsd?.stop({ graceMs: 2000 });
    await pool?.close();
    await repo?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('takes a full point at the transaction; writes during the backup do not show', async () => {
    await qemuIo(uri('rw0'), 'write -P 0x41 0 4M');
    await qemuIo(uri('rw1'), 'write -P 0x61 0 2M');
    const ref0 = await snapshot(uri('rw0'), join(dir, 'ref0.raw'));
    const ref1 = await snapshot(uri('rw1'), join(dir, 'ref1.raw'));
    const r = await backup({
      // Pattern B lands after the point in time, before and while the disks are read.
      afterPointInTime: async () => {
        await qemuIo(uri('rw0'), 'write -P 0x42 1M 512k');
        await qemuIo(uri('rw1'), 'write -P 0x62 0 64k');
      },
      whileReading: async (disk) => {
        if (disk === 'disk0') await qemuIo(uri('rw0'), 'write -P 0x42 8M 64k');
      },
    });
    assert.deepEqual(
      r.point.disks.map((d) => [d.name, d.method]),
      [
        ['disk0', 'full'],
        ['disk1', 'full'],
      ],
    );
    assert.match(diskOf(r.point, 'disk0').reason, /first backup of qsd/);
    assert.equal(r.record.consistency.level, 'crash');
    assert.ok(r.point.tags.includes('crash-consistent'));
    assert.ok(r.notices.some((n) => /crash-consistent/.test(n)));
    assert.equal(r.record.tracking.disk0?.persistent, true);
    assert.equal(r.record.tracking.disk1?.persistent, false);
    assert.ok((await restored(repo, pool, diskOf(r.point, 'disk0'), join(dir, 'o0.raw'))).equals(ref0));
    assert.ok((await restored(repo, pool, diskOf(r.point, 'disk1'), join(dir, 'o1.raw'))).equals(ref1));
    await assertClean();
    // Only the new bitmap of each disk is left.
    assert.deepEqual(
      (await listDirtyBitmaps(qsd!.qmp, 'disk0')).map((b) => b.name),
      [r.record.tracking.disk0!.bitmap],
    );
  });

  it('reads only the dirty bytes in the next incremental, which has pattern B', async () => {
    const ref0 = await snapshot(uri('rw0'), join(dir, 'ref0.raw'));
    const ref1 = await snapshot(uri('rw1'), join(dir, 'ref1.raw'));
    const r = await backup({
      whileReading: async (disk) => {
        if (disk === 'disk0') await qemuIo(uri('rw0'), 'write -P 0x43 2M 64k');
      },
    });
    const d0 = diskOf(r.point, 'disk0');
    const d1 = diskOf(r.point, 'disk1');
    assert.equal(d0.method, 'bitmap');
    assert.equal(d1.method, 'bitmap');
    assert.match(d1.reason, /non-persistent/);
    assert.equal(d0.stats.bytesRead, 512 * 1024 + 64 * 1024, 'disk0 reads exactly its dirty bytes');
    assert.equal(d1.stats.bytesRead, 64 * 1024, 'disk1 reads exactly its dirty bytes');
    assert.equal(r.dirtyBytes, 640 * 1024);
    assert.ok((await restored(repo, pool, d0, join(dir, 'o0.raw'))).equals(ref0));
    assert.ok((await restored(repo, pool, d1, join(dir, 'o1.raw'))).equals(ref1));
    await assertClean();
  });

  it('after kill -9 detects the missing bitmaps, says why, and still captures every change', async () => {
    qsd!.process.child.kill('SIGKILL');
    await qsd!.stop({ graceMs: 1000 });
    qsd = await startQsd();
    await qemuIo(uri('rw0'), 'write -P 0x44 3M 64k');
    await qemuIo(uri('rw1'), 'write -P 0x64 4M 64k');
    const ref0 = await snapshot(uri('rw0'), join(dir, 'ref0.raw'));
    const ref1 = await snapshot(uri('rw1'), join(dir, 'ref1.raw'));
    const r = await backup();
    const d0 = diskOf(r.point, 'disk0');
    const d1 = diskOf(r.point, 'disk1');
    assert.equal(d0.method, 'read-compare');
    assert.match(d0.reason, /missing|inconsistent/);
    assert.equal(d1.method, 'read-compare');
    assert.match(d1.reason, /non-persistent bitmap .* is gone.*QEMU was restarted/);
    assert.ok(r.notices.some((n) => n.startsWith('disk disk0:')));
    // Read-compare stores only the changed chunks (the 3M write, the 2M write of the last run).
    assert.ok(d0.stats.chunksNew <= 3, `disk0 stored ${d0.stats.chunksNew} new chunks`);
    assert.ok((await restored(repo, pool, d0, join(dir, 'o0.raw'))).equals(ref0));
    assert.ok((await restored(repo, pool, d1, join(dir, 'o1.raw'))).equals(ref1));
  });

  it('keeps tracking across a clean restart and heals an inconsistent bitmap after kill -9', async () => {
    await qsd!.stop({ graceMs: 3000 }); // clean: the persistent bitmap is saved in the qcow2
    qsd = await startQsd();
    await qemuIo(uri('rw0'), 'write -P 0x45 5M 64k');
    const r1 = await backup({ disks: ['disk0'] });
    assert.equal(diskOf(r1.point, 'disk0').method, 'bitmap');
    assert.equal(diskOf(r1.point, 'disk0').stats.bytesRead, 64 * 1024);

    await qsd!.stop({ graceMs: 3000 });
    qsd = await startQsd(); // loads the bitmap from the image: in use, so a kill leaves it inconsistent
    qsd.process.child.kill('SIGKILL');
    await qsd.stop({ graceMs: 1000 });
    qsd = await startQsd();
    const bm = (await listDirtyBitmaps(qsd.qmp, 'disk0')).find(
      (b) => b.name === r1.record.tracking.disk0!.bitmap,
    );
    assert.equal(bm?.inconsistent, true);
    await qemuIo(uri('rw0'), 'write -P 0x46 6M 64k');
    const ref0 = await snapshot(uri('rw0'), join(dir, 'ref0.raw'));
    const r2 = await backup({ disks: ['disk0'] });
    const d0 = diskOf(r2.point, 'disk0');
    assert.equal(d0.method, 'read-compare');
    assert.match(d0.reason, /inconsistent: QEMU stopped without saving it/);
    assert.ok((await restored(repo, pool, d0, join(dir, 'o0.raw'))).equals(ref0));
    const names = (await listDirtyBitmaps(qsd.qmp, 'disk0')).map((b) => b.name);
    assert.deepEqual(names, [r2.record.tracking.disk0!.bitmap], 'the inconsistent bitmap was removed');
  });

  it('notices a deleted restore point, leaves other tools’ bitmaps alone, backs up a new disk in full', async () => {
    const latest = (await repo.listPoints()).at(-1)!;
    await blockDirtyBitmapAdd(qsd!.qmp, { node: 'disk0', name: 'other-tool', persistent: false });
    await blockDirtyBitmapAdd(qsd!.qmp, {
      node: 'disk0',
      name: 'vmvault-deadbeef-00000000-1',
      persistent: false,
    });
    await repo.deletePoint(latest.id);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'd2.qcow2'), '4M']);
    await blockdevAdd(qsd!.qmp, {
      driver: 'qcow2',
      'node-name': 'disk2',
      file: { driver: 'file', filename: join(dir, 'd2.qcow2') },
    });
    await qemuIo(uri('rw0'), 'write -P 0x47 7M 64k');
    const ref0 = await snapshot(uri('rw0'), join(dir, 'ref0.raw'));
    const r = await backup({ disks: ['disk0', 'disk2'] });
    const d0 = diskOf(r.point, 'disk0');
    assert.equal(d0.method, 'read-compare');
    assert.match(d0.reason, /a later restore point of qsd was deleted/);
    const d2 = diskOf(r.point, 'disk2');
    assert.equal(d2.method, 'full');
    assert.match(d2.reason, /disk disk2 is new since restore point/);
    assert.ok((await restored(repo, pool, d0, join(dir, 'o0.raw'))).equals(ref0));
    const names = (await listDirtyBitmaps(qsd!.qmp, 'disk0')).map((b) => b.name).sort();
    assert.deepEqual(
      names,
      ['other-tool', r.record.tracking.disk0!.bitmap, 'vmvault-deadbeef-00000000-1'].sort(),
    );
  });

  it('on failure cleans up and merges the bitmaps back, so the next incremental misses nothing', async () => {
    const before0 = (await listDirtyBitmaps(qsd!.qmp, 'disk0')).map((b) => b.name).sort();
    await assert.rejects(
      backup({
        disks: ['disk0'],
        whileReading: async () => {
          await qemuIo(uri('rw0'), 'write -P 0x48 9M 64k');
          throw new Error('injected failure');
        },
      }),
      /injected failure/,
    );
    await assertClean();
    assert.deepEqual((await listDirtyBitmaps(qsd!.qmp, 'disk0')).map((b) => b.name).sort(), before0);
    const ref0 = await snapshot(uri('rw0'), join(dir, 'ref0.raw'));
    const r = await backup({ disks: ['disk0'] });
    const d0 = diskOf(r.point, 'disk0');
    assert.equal(d0.method, 'bitmap');
    assert.equal(d0.stats.bytesRead, 64 * 1024, 'the write during the failed backup is dirty');
    assert.ok((await restored(repo, pool, d0, join(dir, 'o0.raw'))).equals(ref0));
  });

  it('works from the CLI: vmvault backup qmp:… --json', async () => {
    const ws = new Workspace();
    try {
      ws.ok(['init']);
      await qsd!.qmp.close(); // a monitor serves one client at a time
      const out = ws.ok([
        'backup',
        `qmp:${qsd!.qmpSocket}`,
        '--name',
        'cli',
        '--nbd-socket',
        nbdSock,
        '--json',
      ]);
      assert.equal(out.name, 'cli');
      assert.equal(out.consistency, 'crash');
      assert.ok(out.disks.length >= 2);
      assert.ok(out.disks.every((d: { method: string }) => d.method === 'full'));
      const human = ws.run(['backup', `qmp:${qsd!.qmpSocket}`, '--name', 'cli', '--nbd-socket', nbdSock]);
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, /CRASH-CONSISTENT ONLY/);
      assert.match(human.stdout, /disk0: bitmap/);
      assert.match(human.stderr, /crash-consistent/);
    } finally {
      ws.cleanup(); // (last test of the group: after() stops the daemon with SIGTERM)
    }
  });
});

/** `f1..fN` in /data/live of a restored image, each checked for its content. */
async function filesInImage(image: string, dirPath: string): Promise<number[]> {
  const reader = await FileReader.open(image);
  try {
    const fs = await openFilesystem(reader);
    const entries = await fs.readdir(dirPath).catch(() => []);
    const nums: number[] = [];
    for (const e of entries) {
      const m = /^f(\d+)$/.exec(e.name);
      if (!m) continue;
      const n = Number(m[1]);
      const body = await fs.read(`${dirPath}/${e.name}`, 0, e.size);
      if (body.length === 16384) {
        assert.ok(body.toString('latin1').startsWith(`vmvault file ${n}\n`), `content of ${e.name}`);
        nums.push(n);
      }
    }
    return nums.sort((a, b) => a - b);
  } finally {
    await reader.close();
  }
}

function lastWritten(vm: TestGuestHandle, from: number): number {
  let last = 0;
  for (const l of vm.lines().slice(from)) {
    const m = /^VMVAULT-WROTE (\d+)$/.exec(l);
    if (m) last = Number(m[1]);
  }
  return last;
}

describe('VM backup of a qemu-system-x86_64 guest under TCG', () => {
  let dir: string;
  let guest: TestGuest;
  let disk: string;
  let repo: Repository;
  let pool: CodecPool;
  let vm: TestGuestHandle | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmv-vms-'));
    guest = await buildTestGuest();
    disk = await createGuestDisk(guest, join(dir, 'disk.qcow2'));
    repo = await Repository.init(join(dir, 'repo'), { passphrase: null });
    pool = new CodecPool(repo);
    vm = await startTestGuest({ disk, guest });
  });

  after(async () => {
    await vm?.stop();
    await pool?.close();
    await repo?.close();
    await rm(dir, { recursive: true, force: true });
    assert.equal(liveProcesses().length, 0, 'every QEMU process must be gone');
  });

  /** Backs up while the guest writes; checks the restore holds exactly the files of the point. */
  const backupWhileWriting = async (label: string, extra: Partial<BackupVmOptions> = {}) => {
    const from = vm!.lines().length;
    await vm!.run(`mkdir -p /data/${label}; /bin/vmvault-writer /data/${label} 0 20000 &`);
    await vm!.waitForLine(/^VMVAULT-WROTE 3$/, 30_000, from);
    const low = lastWritten(vm!, from);
    let high = 0;
    const r = await backupVm(repo, pool, vm!.qmp, {
      name: 'guest',
      qmpSocket: vm!.qemu.qmpSocket,
      afterPointInTime: async () => {
        high = lastWritten(vm!, from);
      },
      ...extra,
    });
    // The guest kept writing after the point in time.
    await vm!.waitForLine(new RegExp(`^VMVAULT-WROTE ${high + 2}$`), 30_000, from);
    await vm!.run('killall vmvault-writer; sync; true');
    const out = join(dir, `${label}.raw`);
    await rm(out, { force: true });
    await restoreDisk(repo, pool, r.point.disks[0]!, out);
    const files = await filesInImage(out, `/data/${label}`);
    for (let i = 1; i <= low; i++)
      assert.ok(files.includes(i), `f${i} (written before the point) is in the restore`);
    assert.ok(
      (files.at(-1) ?? 0) <= high + 1,
      `restore has f${files.at(-1)} > f${high + 1} (after the point)`,
    );
    assert.deepEqual(
      files,
      Array.from({ length: files.length }, (_, i) => i + 1),
      'no gaps',
    );
    return r;
  };

  it('backs up a writing guest frozen by its agent, then incrementally; saves its config and priorities', async (t) => {
    const r1 = await backupWhileWriting('a');
    const d1 = r1.point.disks[0]!;
    assert.equal(d1.name, 'vda');
    assert.equal(d1.method, 'full');
    if (guest.hasAgent) {
      assert.equal(r1.record.consistency.level, 'application', r1.record.consistency.detail);
      assert.match(r1.record.consistency.detail, /froze \d+ filesystem\(s\) \(status frozen\).*thawed/);
      assert.ok(r1.point.tags.includes('fs-frozen'));
    } else t.diagnostic('qemu-guest-agent not installed: freeze not checked');
    const cfg = vmRecordOf(r1.point)!.config;
    assert.match(cfg.machineType ?? '', /pc/);
    assert.equal(cfg.memoryBytes, 256 * MiB);
    assert.equal(cfg.disks[0]?.format, 'qcow2');
    assert.ok(d1.priorities && d1.priorities.length > 0);
    assert.equal(d1.priorities[0]![0], 0, 'the first chunk (superblock) comes first');

    const r2 = await backupWhileWriting('b');
    const d2 = r2.point.disks[0]!;
    assert.equal(d2.method, 'bitmap', d2.reason);
    assert.ok(d2.stats.bytesRead < d1.stats.bytesRead / 4, `incremental read ${d2.stats.bytesRead}`);
  });

  it('after kill -9 of QEMU, the next backup notices, says why, and misses nothing', async () => {
    vm!.qemu.process.child.kill('SIGKILL');
    await vm!.stop();
    vm = await startTestGuest({ disk, guest });
    const r = await backupWhileWriting('c');
    const d = r.point.disks[0]!;
    assert.equal(d.method, 'read-compare');
    assert.match(d.reason, /missing|inconsistent/);
    assert.ok(r.notices.some((n) => /vda/.test(n)));
  });

  it('reports a crash-consistent backup when the agent does not answer', async () => {
    if (guest.hasAgent) await vm!.run('killall qemu-ga; true');
    const r = await backupVm(repo, pool, vm!.qmp, {
      name: 'guest',
      qmpSocket: vm!.qemu.qmpSocket,
      agentSyncTimeoutMs: 1500,
    });
    assert.equal(r.record.consistency.level, 'crash');
    assert.ok(r.point.tags.includes('crash-consistent'));
    assert.ok(
      r.notices.some((n) => /crash-consistent/.test(n)),
      r.notices.join('\n'),
    );
    assert.equal(r.point.disks[0]!.method, 'bitmap');
  });
});
