/**
 * VM incremental benchmark: a 4 GiB ext4 disk (from /usr/lib/x86_64-linux-gnu, `mkfs.ext4 -d`,
 * converted to qcow2) served by qemu-storage-daemon standing in for the VM; a full vmvault VM
 * backup; 640 random 64 KiB writes through NBD; then the incremental VM backup, timed against
 * `restic backup` of the raw image after the same writes, in the same run.
 *
 *   node dist/bench/vm-bench.js [--size 4G] [--workdir /var/tmp] [--seed S] [--keep]
 *
 * Bars: incremental time ≤ 1/20 of restic's; bytes read from the VM ≤ 1.2 × dirty bytes.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { backupVm } from '../src/backup/index.js';
import { NbdClient } from '../src/protocols/nbd/index.js';
import { listDirtyBitmaps, type QemuHandle, startStorageDaemon } from '../src/protocols/qmp/index.js';
import { CodecPool, Repository } from '../src/repository/index.js';
import { parseBenchArgs } from './lib/args.js';
import { buildImage, planWrites, writableBlocks } from './lib/image.js';
import { note } from './lib/log.js';
import { Prng } from './lib/prng.js';
import { markdownTable } from './lib/table.js';
import { machineInfo, Restic } from './lib/tools.js';
import { fmtBytes, fmtMs } from './lib/units.js';

const execFileP = promisify(execFile);
const WRITES = 640;
const WRITE_LEN = 64 << 10;

/** Opens the repository, runs one VM backup and closes it; returns the result and wall time. */
async function timedBackup(repoDir: string, qsd: QemuHandle, nbdSock: string) {
  const t0 = performance.now();
  const repo = await Repository.open(repoDir, { passphrase: null });
  const pool = new CodecPool(repo);
  try {
    const r = await backupVm(repo, pool, qsd.qmp, {
      name: 'bench',
      qmpSocket: qsd.qmpSocket,
      nbdSocket: nbdSock,
      guestAgent: false,
    });
    await pool.close();
    await repo.close();
    return { r, ms: performance.now() - t0 };
  } catch (err) {
    await pool.close();
    await repo.close();
    throw err;
  }
}

async function main(): Promise<number> {
  const opts = parseBenchArgs(process.argv.slice(2), { size: '4G' });
  const base = await mkdtemp(join(opts.workdir, 'vmvault-vm-bench-'));
  let qsd: QemuHandle | undefined;
  try {
    const header = [
      `command: \`node dist/bench/vm-bench.js ${process.argv.slice(2).join(' ')}\``.replace(' `', '`'),
      `date: ${new Date().toISOString()}`,
      `machine: ${await machineInfo()}`,
    ];
    note(`building the ${opts.sizeText} image from ${opts.source} in ${base}`);
    const raw = join(base, 'disk.img');
    const qcow2 = join(base, 'disk.qcow2');
    await buildImage(raw, opts.size, opts.source);
    await execFileP('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
    const plan = planWrites(
      await writableBlocks(raw),
      new Uint8Array(Math.ceil(opts.size / 4096)),
      new Prng(opts.seed),
      WRITES,
      WRITE_LEN,
      WRITE_LEN,
    );

    const nbdSock = join(base, 'nbd.sock');
    qsd = await startStorageDaemon({
      dir: base,
      blockdevs: [{ driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: qcow2 } }],
      nbdServer: { path: nbdSock },
      exports: [{ type: 'nbd', id: 'rw', 'node-name': 'disk0', name: 'rw', writable: true }],
    });
    const repoDir = join(base, 'vmvault-repo');
    await (await Repository.init(repoDir, { passphrase: null })).close();
    const restic = new Restic(join(base, 'restic-repo'), join(base, 'restic-cache'), 'bench');
    await mkdir(join(base, 'restic-cache'));
    await restic.init();

    note('full backups (vmvault VM, restic raw image)');
    const full = await timedBackup(repoDir, qsd, nbdSock);
    const resticFull = await restic.backup(base, 'disk.img');

    note(`${WRITES} random ${fmtBytes(WRITE_LEN)} writes through NBD (and the same into the raw image)`);
    const prng = new Prng(opts.seed ^ 0x5a5a);
    const nbd = await NbdClient.connect({ socketPath: nbdSock, exportName: 'rw' });
    const fh = await open(raw, 'r+');
    try {
      for (const off of plan.offsets) {
        const data = prng.bytes(WRITE_LEN);
        await nbd.write(off, data);
        await fh.write(data, 0, data.length, off);
      }
      await nbd.flush();
      await fh.sync();
    } finally {
      await nbd.close();
      await fh.close();
    }
    const bitmap = full.r.record.tracking.disk0!.bitmap;
    const dirty = (await listDirtyBitmaps(qsd.qmp, 'disk0')).find((b) => b.name === bitmap)?.count ?? 0;

    note('incremental backups');
    const inc = await timedBackup(repoDir, qsd, nbdSock);
    const resticInc = await restic.backup(base, 'disk.img');
    const d = inc.r.point.disks[0]!;
    if (d.method !== 'bitmap') throw new Error(`incremental used ${d.method}: ${d.reason}`);

    const timeRatio = inc.ms / resticInc.ms;
    const readRatio = inc.r.bytesRead / dirty;
    const rows = [
      ['full backup time', fmtMs(full.ms), fmtMs(resticFull.ms), '', ''],
      [
        'incremental backup time',
        fmtMs(inc.ms),
        fmtMs(resticInc.ms),
        `1/${(1 / timeRatio).toFixed(1)}`,
        `≤ 1/20: ${timeRatio <= 1 / 20 ? 'PASS' : 'FAIL'}`,
      ],
      ['dirty bytes (bitmap count)', fmtBytes(dirty), '', '', ''],
      [
        'incremental bytes read from the VM',
        fmtBytes(inc.r.bytesRead),
        '',
        `${readRatio.toFixed(3)} × dirty`,
        `≤ 1.2×: ${readRatio <= 1.2 ? 'PASS' : 'FAIL'}`,
      ],
      ['incremental bytes stored', fmtBytes(inc.r.bytesStored), fmtBytes(resticInc.bytesStored), '', ''],
    ];
    header.push(
      `image: ${opts.sizeText} ext4 from ${opts.source} as qcow2 in qemu-storage-daemon (the "VM"); ${WRITES} aligned writes of ${fmtBytes(WRITE_LEN)}; vmvault times include opening the repository; restic backs up the raw image`,
    );
    process.stdout.write(
      `${header.join('  \n')}\n\n${markdownTable(['measure', 'vmvault', 'restic', 'ratio', 'bar'], rows)}\n`,
    );
    return timeRatio <= 1 / 20 && readRatio <= 1.2 ? 0 : 1;
  } finally {
    await qsd?.stop({ graceMs: 3000 });
    if (!opts.keep) await rm(base, { recursive: true, force: true });
    else note(`kept ${base}`);
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`vm-bench: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(2);
  },
);
