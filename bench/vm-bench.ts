/**
 * VM incremental benchmark: a 4 GiB ext4 disk (from /usr/lib/x86_64-linux-gnu, `mkfs.ext4 -d`,
 * converted to qcow2) served by qemu-storage-daemon standing in for the VM; a full vmvault VM
 * backup; then rounds of 640 random 64 KiB writes through NBD, each followed by an incremental
 * VM backup timed against `restic backup` of the raw image after the same writes, in the same
 * run. First `--repeat` rounds with the CLI (`vmvault backup qmp:<socket>`, a new process each,
 * as a cron job runs it), then `--repeat` rounds sent to one `vmvault serve` started after them
 * (`curl` POST /api/v1/backups, as a scheduler or script talks to a resident server). All are
 * timed from spawn to exit (the CLI under `/usr/bin/time`), each after an untimed `sync`, so that
 * neither waits for the writeback of what the writes or the other tool left dirty. `VMVAULT_BENCH_NODE_FLAGS` adds Node
 * flags to the server process (`--cpu-prof --cpu-prof-dir=D` to profile it). The backups talk to a second QMP
 * monitor of the daemon (a monitor serves one client; the first one is the benchmark's).
 *
 *   node dist/bench/vm-bench.js [--size 4G] [--workdir /var/tmp] [--seed S] [--repeat N] [--keep]
 *
 * The table shows medians; with `--repeat 3` the server's first round (its code not yet
 * compiled, its parent's pages not yet cached) is one of three. `VMVAULT_VM_TRACE=1` passes
 * through (phase timings on stderr, the server's too).
 * Bars: incremental time ≤ 1/20 of restic's; bytes read from the VM ≤ 1.2 × dirty bytes.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { NbdClient } from '../src/protocols/nbd/index.js';
import { listDirtyBitmaps, type QemuHandle, startStorageDaemon } from '../src/protocols/qmp/index.js';
import { Repository } from '../src/repository/index.js';
import { parseBenchArgs } from './lib/args.js';
import { buildImage, planWrites, writableBlocks } from './lib/image.js';
import { note } from './lib/log.js';
import { Prng } from './lib/prng.js';
import { markdownTable } from './lib/table.js';
import { run } from './lib/proc.js';
import { machineInfo, Restic, VMVAULT_BIN } from './lib/tools.js';
import { fmtBytes, fmtMs } from './lib/units.js';
import { runBench } from './lib/main.js';

const execFileP = promisify(execFile);
const WRITES = 640;
const WRITE_LEN = 64 << 10;

/** One `vmvault backup qmp:…` process; returns its JSON result and wall time. */
async function cliBackup(repoDir: string, qmpSocket: string, nbdSock: string) {
  const r = await run(
    process.execPath,
    [
      VMVAULT_BIN,
      'backup',
      `qmp:${qmpSocket}`,
      '--name',
      'bench',
      '--no-guest-agent',
      '--nbd-socket',
      nbdSock,
      '--repo',
      repoDir,
      '--json',
    ],
    { measureRss: true },
  );
  if (process.env.VMVAULT_VM_TRACE) process.stderr.write(r.stderr);
  const json = JSON.parse(r.stdout) as {
    bytesRead: number;
    bytesStored: number;
    dirtyBytes: number;
    disks: { method: string; reason: string; bitmap: string }[];
  };
  return { json, ms: r.ms };
}

/**
 * One VM backup sent to a running `vmvault serve` as a REST request by `curl` (the client a
 * scheduler or script uses); returns its JSON result and wall time from spawn to exit.
 */
async function serverBackup(apiSock: string, qmpSocket: string, nbdSock: string) {
  const body = JSON.stringify({
    source: `qmp:${qmpSocket}`,
    name: 'bench',
    guestAgent: false,
    nbdSocket: nbdSock,
  });
  const r = await run('curl', [
    '-sS',
    '--fail-with-body',
    '--unix-socket',
    apiSock,
    '-H',
    'content-type: application/json',
    '-X',
    'POST',
    '--data-binary',
    body,
    'http://localhost/api/v1/backups',
  ]);
  const json = JSON.parse(r.stdout) as Awaited<ReturnType<typeof cliBackup>>['json'];
  return { json, ms: r.ms };
}

/** Node flags for the server process from `VMVAULT_BENCH_NODE_FLAGS` (e.g. `--cpu-prof`). */
function nodeFlags(): string[] {
  return (process.env.VMVAULT_BENCH_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);
}

/** Starts `vmvault serve` on `apiSock`; resolves once it prints its URL. */
async function startServer(repoDir: string, apiSock: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [...nodeFlags(), VMVAULT_BIN, 'serve', '--repo', repoDir, '--socket', apiSock, '--quiet'],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const [line] = (await Promise.race([
    once(createInterface({ input: child.stdout! }), 'line'),
    once(child, 'exit').then(([code]) => {
      throw new Error(`vmvault serve exited with ${code}`);
    }),
  ])) as [string];
  if (!line.startsWith('unix:')) throw new Error(`vmvault serve printed ${line}`);
  return child;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const HELP = `usage: node dist/bench/vm-bench.js [--size 4G] [--workdir /var/tmp] [--seed S] [--repeat N] [--keep]

Backs up a qemu-storage-daemon "VM" (a SIZE ext4 qcow2 image) in full; then, in rounds, makes
${WRITES} random writes of 64 KiB and times the incremental VM backup against \`restic backup\`
of the raw image (same writes, same run): N rounds with the CLI (\`vmvault backup qmp:<socket>\`,
a new process each), then N rounds sent to one \`vmvault serve\` (curl, POST /api/v1/backups).
--repeat N (default 1; 3 shows a warm server) sets N; the table shows medians. Bars: vmvault ≤
1/20 of restic's time; bytes read from the VM ≤ 1.2 × dirty bytes. Exit code 0 when the server
rounds pass both.`;

async function main(): Promise<number> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const opts = parseBenchArgs(process.argv.slice(2), { size: '4G' });
  const base = await mkdtemp(join(opts.workdir, 'vmvault-vm-bench-'));
  let qsd: QemuHandle | undefined;
  let server: ChildProcess | undefined;
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
    const cliQmp = join(base, 'cli-qmp.sock');
    qsd = await startStorageDaemon({
      dir: base,
      blockdevs: [{ driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: qcow2 } }],
      nbdServer: { path: nbdSock },
      exports: [{ type: 'nbd', id: 'rw', 'node-name': 'disk0', name: 'rw', writable: true }],
      extraArgs: [
        '--chardev',
        `socket,id=cli_qmp,path=${cliQmp},server=on,wait=off`,
        '--monitor',
        'chardev=cli_qmp',
      ],
    });
    const repoDir = join(base, 'vmvault-repo');
    await (await Repository.init(repoDir, { passphrase: null })).close();
    const restic = new Restic(join(base, 'restic-repo'), join(base, 'restic-cache'), 'bench');
    await mkdir(join(base, 'restic-cache'));
    await restic.init();

    note('full backups (vmvault VM, restic raw image)');
    let last = await cliBackup(repoDir, cliQmp, nbdSock);
    const fullMs = last.ms;
    const resticFull = await restic.backup(base, 'disk.img');

    const prng = new Prng(opts.seed ^ 0x5a5a);
    /** The writes of one round, through NBD into the "VM" and into the raw image restic reads. */
    const writeRound = async (): Promise<void> => {
      note(`${WRITES} random ${fmtBytes(WRITE_LEN)} writes through NBD (and the same into the raw image)`);
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
    };
    type Run = {
      ms: number;
      resticMs: number;
      dirty: number;
      read: number;
      stored: number;
      resticStored: number;
    };
    const runs: Run[] = [];
    const served: Run[] = [];
    const apiSock = join(base, 'api.sock');
    for (const via of ['cli', 'server'] as const) {
      // The CLI rounds first, then the server's: a resident server's parent is its own backup.
      if (via === 'server') server = await startServer(repoDir, apiSock);
      for (let rep = 0; rep < opts.repeat; rep++) {
        await writeRound();
        const bitmap = last.json.disks[0]!.bitmap;
        const dirty = (await listDirtyBitmaps(qsd.qmp, 'disk0')).find((b) => b.name === bitmap)?.count ?? 0;
        note(
          `incremental backups (${rep + 1} of ${opts.repeat}, ${via === 'cli' ? 'vmvault CLI' : 'vmvault serve'})`,
        );
        // Neither timed backup waits for the writeback of what the other (or the writes) left.
        await run('sync', []);
        last =
          via === 'cli'
            ? await cliBackup(repoDir, cliQmp, nbdSock)
            : await serverBackup(apiSock, cliQmp, nbdSock);
        await run('sync', []);
        const resticInc = await restic.backup(base, 'disk.img');
        const d = last.json.disks[0]!;
        if (d.method !== 'bitmap') throw new Error(`incremental used ${d.method}: ${d.reason}`);
        note(`vmvault ${fmtMs(last.ms)}, restic ${fmtMs(resticInc.ms)}`);
        (via === 'cli' ? runs : served).push({
          ms: last.ms,
          resticMs: resticInc.ms,
          dirty,
          read: last.json.bytesRead,
          stored: last.json.bytesStored,
          resticStored: resticInc.bytesStored,
        });
      }
    }
    const inc = { ms: median(runs.map((r) => r.ms)) };
    const resticInc = { ms: median(runs.map((r) => r.resticMs)), bytesStored: runs[0]!.resticStored };
    const srv = { ms: median(served.map((r) => r.ms)), resticMs: median(served.map((r) => r.resticMs)) };
    const all = [...runs, ...served];
    const dirty = all.reduce((s, r) => s + r.dirty, 0) / all.length;
    const bytesRead = all.reduce((s, r) => s + r.read, 0) / all.length;
    const full = { ms: fullMs };
    const timeRatio = inc.ms / resticInc.ms;
    const serverRatio = srv.ms / srv.resticMs;
    const readRatio = Math.max(...all.map((r) => r.read / r.dirty));
    const rows = [
      ['full backup time', fmtMs(full.ms), fmtMs(resticFull.ms), '', ''],
      [
        'incremental backup time, CLI (`vmvault backup`, a new process)',
        fmtMs(inc.ms),
        fmtMs(resticInc.ms),
        `1/${(1 / timeRatio).toFixed(1)}`,
        `≤ 1/20: ${timeRatio <= 1 / 20 ? 'PASS' : 'FAIL'}`,
      ],
      [
        'incremental backup time, resident (`vmvault serve`, POST /api/v1/backups by curl)',
        fmtMs(srv.ms),
        fmtMs(srv.resticMs),
        `1/${(1 / serverRatio).toFixed(1)}`,
        `≤ 1/20: ${serverRatio <= 1 / 20 ? 'PASS' : 'FAIL'}`,
      ],
      ['dirty bytes (bitmap count)', fmtBytes(dirty), '', '', ''],
      [
        'incremental bytes read from the VM',
        fmtBytes(bytesRead),
        '',
        `${readRatio.toFixed(3)} × dirty`,
        `≤ 1.2×: ${readRatio <= 1.2 ? 'PASS' : 'FAIL'}`,
      ],
      ['incremental bytes stored', fmtBytes(runs[0]!.stored), fmtBytes(resticInc.bytesStored), '', ''],
    ];
    header.push(
      `image: ${opts.sizeText} ext4 from ${opts.source} as qcow2 in qemu-storage-daemon (the "VM"); each round makes ${WRITES} aligned writes of ${fmtBytes(WRITE_LEN)}, then one vmvault incremental and one restic incremental (of the raw image, same writes); ${opts.repeat} CLI rounds (\`vmvault backup qmp:…\`, a new process each), then ${opts.repeat} rounds through one \`vmvault serve\` started after the CLI rounds (\`curl\` POST /api/v1/backups); all timed from process spawn to exit; medians (vmvault/restic per round: CLI ${runs.map((r) => `${fmtMs(r.ms)}/${fmtMs(r.resticMs)}`).join(', ')}; server ${served.map((r) => `${fmtMs(r.ms)}/${fmtMs(r.resticMs)}`).join(', ')})`,
    );
    process.stdout.write(
      `${header.join('  \n')}\n\n${markdownTable(['measure', 'vmvault', 'restic', 'ratio', 'bar'], rows)}\n`,
    );
    return serverRatio <= 1 / 20 && readRatio <= 1.2 ? 0 : 1;
  } finally {
    if (server && server.exitCode === null) {
      server.kill('SIGTERM');
      await once(server, 'exit');
    }
    await qsd?.stop({ graceMs: 3000 });
    if (!opts.keep) await rm(base, { recursive: true, force: true });
    else note(`kept ${base}`);
  }
}

runBench('vm-bench', main, { exit: true });
