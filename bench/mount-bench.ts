/**
 * Mount and image-source benchmark (issue #3), in one run:
 *
 *   npx tsc -p . && node dist/bench/mount-bench.js [--size-mib N] [--runs 2] [--mount-only]
 *     [--compression zstd|lz4|none] [--keep]
 *
 * `--compression` is what the benchmark repositories are created with (`vmvault init
 * --compression`, default zstd).
 *
 * The image: by default the 4 GiB benchmark disk (`bench/lib/image.ts`: a sparse raw file holding
 * an ext4 filesystem of `--source`, default /usr/lib/x86_64-linux-gnu); with `--size-mib N` a
 * synthetic N MiB image of 4 MiB stripes alternating random bytes and compressible text, one
 * stripe in eight a hole.
 *
 * (a) Sequential read of a restore point served by `vmvault mount` against the raw image served
 *     by `qemu-nbd -r -f raw -t -e 8`, both read with `nbdcopy --connections=4 URI null:`. Both
 *     servers run at once and the reads alternate (one untimed warm-up read each, then `--runs`
 *     timed rounds; best of each), so a busy machine slows both alike. Also reports the CPU time
 *     the mount process used per read. Bar: vmvault ≥ 50 % of qemu-nbd.
 * (b) `vmvault backup` of the image converted to qcow2 against `vmvault backup` of the raw image,
 *     each into a fresh repository, `--runs` alternating rounds, best of each (skipped with
 *     `--mount-only`); the qcow2 is backed up twice per round: as vmvault does by default
 *     (direct reads of mapped clusters) and with `VMVAULT_IMAGE_DIRECT=0` (everything through
 *     qemu-nbd). Bar: qcow2 (default) ≤ 1.2× the raw time.
 *
 * Prints a markdown table, the command line and machine facts.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { cpus, freemem, totalmem, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { alternateRounds } from './lib/alternate.js';
import { buildImage, warmFile } from './lib/image.js';
import { runBench } from './lib/main.js';
import { numberArg, textArg } from './lib/args.js';

const MiB = 1 << 20;
const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const BIN = join(ROOT, 'bin', 'vmvault');

const HELP = `usage: node dist/bench/mount-bench.js [options]
  --size-mib N    synthetic striped image of N MiB instead of the 4 GiB ext4 benchmark image
  --source DIR    tree copied into the ext4 image (default /usr/lib/x86_64-linux-gnu)
  --runs N        alternating timed rounds, best of each (default 2)
  --mount-only    skip the qcow2 backups
  --keep          keep the work directory
Bars: mount >= 50 % of qemu-nbd (nbdcopy --connections=4); qcow2 backup <= 1.2x the raw backup.`;

/** Stripes of 4 MiB: random, text, random, text, ... with every 8th stripe a hole. */
function makeImage(path: string, size: number): void {
  const fd = openSync(path, 'w');
  const lines: string[] = [];
  for (let i = 0, len = 0; len < 4 * MiB; i++) {
    const line = `${i.toString(16).padStart(8, '0')} the quick brown fox jumps over the lazy dog ${i % 97}\n`;
    lines.push(line);
    len += line.length;
  }
  const text = Buffer.from(lines.join('')).subarray(0, 4 * MiB);
  for (let off = 0, i = 0; off < size; off += 4 * MiB, i++) {
    const n = Math.min(4 * MiB, size - off);
    if (i % 8 === 7) continue;
    const buf = i % 2 === 0 ? randomBytes(n) : Buffer.from(text.subarray(0, n));
    buf.writeUInt32LE(i, 0); // no two stripes alike
    writeSync(fd, buf, 0, n, off);
  }
  writeSync(fd, Buffer.alloc(1), 0, 1, size - 1);
  closeSync(fd);
}

function vmvault(repo: string, args: string[], env: Record<string, string> = {}): string {
  return execFileSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    env: { ...process.env, VMVAULT_REPO: repo, XDG_CACHE_HOME: join(repo, '..', 'cache'), ...env },
    maxBuffer: 64 << 20,
  });
}

/** Seconds taken by `vmvault backup` of `image` into the fresh repository `repo`. */
function timeBackup(
  repo: string,
  image: string,
  env: Record<string, string> = {},
): { seconds: number; id: string; bytesRead: number } {
  rmSync(repo, { recursive: true, force: true });
  vmvault(repo, ['init', '-q', '--compression', textArg('compression', 'zstd')]);
  const t0 = process.hrtime.bigint();
  const out = JSON.parse(vmvault(repo, ['backup', image, '--json', '--no-progress'], env));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { seconds, id: out.id, bytesRead: out.bytesRead };
}

type Backup = ReturnType<typeof timeBackup>;

/** Best (fastest) of several backups. */
function best(all: Backup[]): Backup {
  return all.reduce((a, b) => (b.seconds < a.seconds ? b : a));
}

/** Seconds for `nbdcopy --connections=4 uri null:`. */
function nbdcopy(uri: string): number {
  const t0 = process.hrtime.bigint();
  execFileSync('nbdcopy', ['--connections=4', uri, 'null:'], { stdio: 'inherit' });
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function waitPath(path: string, child: ChildProcess): Promise<void> {
  const end = Date.now() + 15_000;
  while (!existsSync(path)) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    if (Date.now() > end) throw new Error(`timeout waiting for ${path}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await done;
}

/** CPU seconds (user + system, all threads) a process has used so far. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  // utime and stime are fields 14 and 15 of stat, in clock ticks (100 per second on Linux).
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function machine(): string[] {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const ver = (cmd: string, a: string[]): string => {
    try {
      return execFileSync(cmd, a, { encoding: 'utf8' }).split('\n')[0]!.trim();
    } catch {
      return `${cmd}: not found`;
    }
  };
  let kernel = '';
  try {
    kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  } catch {}
  return [
    `- CPU: ${cpu} × ${cpus().length}; RAM ${(totalmem() / 2 ** 30).toFixed(1)} GiB (${(freemem() / 2 ** 30).toFixed(1)} free); Linux ${kernel}`,
    `- Node ${process.version}; ${ver('qemu-nbd', ['--version'])}; ${ver('nbdcopy', ['--version'])}`,
  ];
}

async function main(): Promise<void> {
  if (process.argv.includes('--help')) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  const synthetic = process.argv.includes('--size-mib');
  const sizeMiB = numberArg('size-mib', 4096);
  const runs = numberArg('runs', 2);
  const mountOnly = process.argv.includes('--mount-only');
  const size = sizeMiB * MiB;
  const dir = mkdtempSync(join(tmpdir(), 'vmvault-mount-bench-'));
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  const children: ChildProcess[] = [];
  try {
    const raw = join(dir, 'disk.img');
    const qcow2 = join(dir, 'disk.qcow2');
    if (synthetic) {
      log(`making a ${sizeMiB} MiB striped image in ${dir}`);
      makeImage(raw, size);
    } else {
      const source = textArg('source', '/usr/lib/x86_64-linux-gnu');
      log(`making the ${sizeMiB} MiB ext4 benchmark image of ${source} in ${dir}`);
      await buildImage(raw, size, source);
    }
    if (!mountOnly) execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
    warmFile(raw);
    if (!mountOnly) warmFile(qcow2);

    log(mountOnly ? '(b) backup raw' : '(b) backup raw vs qcow2 (direct and NBD-only), alternating');
    const rawAll: Backup[] = [];
    const qcowAll: Backup[] = [];
    const nbdAll: Backup[] = [];
    for (let r = 0; r < (mountOnly ? 1 : runs); r++) {
      rawAll.push(timeBackup(join(dir, 'repo-raw'), raw));
      if (mountOnly) break;
      qcowAll.push(timeBackup(join(dir, 'repo-qcow2'), qcow2));
      nbdAll.push(timeBackup(join(dir, 'repo-qcow2-nbd'), qcow2, { VMVAULT_IMAGE_DIRECT: '0' }));
      const [a, b, c] = [rawAll[r]!, qcowAll[r]!, nbdAll[r]!];
      log(
        `  round ${r + 1}: raw ${a.seconds.toFixed(2)} s, qcow2 ${b.seconds.toFixed(2)} s (${(b.seconds / a.seconds).toFixed(2)}×), qcow2 NBD-only ${c.seconds.toFixed(2)} s (${(c.seconds / a.seconds).toFixed(2)}×)`,
      );
    }
    const bRaw = rawAll[rawAll.length - 1]!; // its repository is the one left on disk
    const rawS = best(rawAll).seconds;
    const bQcow = mountOnly ? null : best(qcowAll);
    const bNbd = mountOnly ? null : best(nbdAll);

    log('(a) nbdcopy from qemu-nbd and from vmvault mount, alternating');
    const qsock = join(dir, 'qemu.sock');
    // Its pid file appears once the socket listens (the socket file, a moment before).
    const q = spawn(
      'qemu-nbd',
      ['-r', '-f', 'raw', '-t', '-e', '8', '-k', qsock, `--pid-file=${qsock}.pid`, raw],
      {
        stdio: 'ignore',
      },
    );
    children.push(q);
    await waitPath(`${qsock}.pid`, q);

    const vsock = join(dir, 'vmvault.sock');
    const m = spawn(process.execPath, [BIN, 'mount', bRaw.id, '--socket', vsock], {
      env: { ...process.env, VMVAULT_REPO: join(dir, 'repo-raw'), XDG_CACHE_HOME: join(dir, 'cache') },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(m);
    const uri = await new Promise<string>((res, rej) => {
      createInterface({ input: m.stdout! }).once('line', res);
      m.once('exit', (c) => rej(new Error(`vmvault mount exited (${c})`)));
    });
    const qemuUri = `nbd+unix:///?socket=${qsock}`;
    nbdcopy(qemuUri);
    nbdcopy(uri);
    const cpu0 = cpuSeconds(m.pid!);
    const {
      theirs: qemuS,
      ours: mountS,
      ratios,
    } = alternateRounds(
      runs,
      () => nbdcopy(qemuUri),
      () => nbdcopy(uri),
      (r, qs, ms) =>
        log(
          `  round ${r}: qemu-nbd ${qs.toFixed(2)} s, vmvault mount ${ms.toFixed(2)} s (${((100 * qs) / ms).toFixed(0)} %)`,
        ),
    );
    const mountCpu = (cpuSeconds(m.pid!) - cpu0) / runs;
    await stop(m);
    await stop(q);

    const rate = (s: number): string => (sizeMiB / s).toFixed(0);
    const mountRatio = qemuS / mountS;
    const rows = [
      '| measurement | time (s) | virtual MiB/s | ratio | bar | pass |',
      '| --- | ---: | ---: | ---: | --- | --- |',
      `| nbdcopy ← qemu-nbd -r -f raw | ${qemuS.toFixed(2)} | ${rate(qemuS)} | 1.00 | | |`,
      `| nbdcopy ← vmvault mount | ${mountS.toFixed(2)} | ${rate(mountS)} | ${(mountRatio * 100).toFixed(0)} % of qemu-nbd | ≥ 50 % | ${mountRatio >= 0.5 ? 'yes' : 'NO'} |`,
      `| vmvault backup raw | ${rawS.toFixed(2)} | ${rate(rawS)} | 1.00 | | |`,
    ];
    if (bQcow && bNbd) {
      const backupRatio = bQcow.seconds / rawS;
      const nbdRatio = bNbd.seconds / rawS;
      rows.push(
        `| vmvault backup qcow2 | ${bQcow.seconds.toFixed(2)} | ${rate(bQcow.seconds)} | ${backupRatio.toFixed(2)}× raw | ≤ 1.2× | ${backupRatio <= 1.2 ? 'yes' : 'NO'} |`,
        `| vmvault backup qcow2, VMVAULT_IMAGE_DIRECT=0 (all via qemu-nbd) | ${bNbd.seconds.toFixed(2)} | ${rate(bNbd.seconds)} | ${nbdRatio.toFixed(2)}× raw | (≤ 1.2×) | ${nbdRatio <= 1.2 ? 'yes' : 'NO'} |`,
      );
    }
    const out = [
      `## vmvault mount / image-source benchmark (${sizeMiB} MiB ${synthetic ? 'striped' : 'ext4'} image, ${textArg('compression', 'zstd')} repositories, best of ${runs} alternating rounds)`,
      '',
      ...rows,
      '',
      `- mount / qemu-nbd per round: ${ratios.map((x) => `${(x * 100).toFixed(0)} %`).join(', ')}; vmvault mount used ${mountCpu.toFixed(2)} s of CPU per read`,
      `- command: \`${['node dist/bench/mount-bench.js', ...process.argv.slice(2)].join(' ')}\``,
      ...machine(),
      '',
    ];
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    for (const c of children) await stop(c);
    if (!process.argv.includes('--keep')) rmSync(dir, { recursive: true, force: true });
  }
}

runBench('mount-bench', main);
