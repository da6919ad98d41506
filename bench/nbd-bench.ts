/**
 * NBD benchmark: our NbdServer (FileExport) against qemu-nbd on the same raw file.
 *
 *   node dist/bench/nbd-bench.js [--size-mib 1024] [--reads 20000] [--runs 3]
 *
 * 1. Sequential: `nbdcopy --connections=4 URI null:` against each server, `--runs` rounds
 *    alternating between the two (best of each; the per-round ratios are printed too).
 * 2. Random: 64 parallel loops of 4 KiB reads with our NbdClient; p50/p99 latency.
 * Each server runs in its own process; the file is read once first so both start from a warm
 * page cache. Prints a markdown table. Bars: sequential ≥ 80 % of qemu-nbd, p99 ≤ 2× qemu-nbd.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NbdClient } from '../src/protocols/nbd/client.js';
import { FileExport } from '../src/protocols/nbd/file-export.js';
import { NbdServer } from '../src/protocols/nbd/server.js';
import { type AlternateResult, alternateRounds } from './lib/alternate.js';
import { runBench } from './lib/main.js';
import { warmFile } from './lib/image.js';
import { numberArg } from './lib/args.js';

const MiB = 1024 * 1024;

/** Child mode: serve `file` on `sock` until killed. */
async function serve(file: string, sock: string): Promise<void> {
  const exp = await FileExport.open(file, { readOnly: true });
  const server = new NbdServer();
  server.addExport('disk', exp);
  await server.listen({ socketPath: sock });
  process.stdout.write('ready\n');
  const stop = async (): Promise<void> => {
    await server.close();
    await exp.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}

/** 1/2 pseudo-random data, 1/4 written zeros, 1/4 holes, in 4 MiB stripes. */
function makeImage(path: string, size: number): void {
  const fd = openSync(path, 'w');
  const data = Buffer.allocUnsafe(4 * MiB);
  let x = 12345;
  for (let i = 0; i < data.length; i += 4) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    data.writeUInt32LE(x, i);
  }
  const zero = Buffer.alloc(4 * MiB);
  for (let off = 0, i = 0; off < size; off += 4 * MiB, i++) {
    const kind = i % 4;
    if (kind === 0 || kind === 2) {
      data.writeUInt32LE(i, 0); // make stripes differ
      writeSync(fd, data, 0, Math.min(data.length, size - off), off);
    } else if (kind === 1) writeSync(fd, zero, 0, Math.min(zero.length, size - off), off);
  }
  writeSync(fd, Buffer.alloc(1), 0, 1, size - 1);
  closeSync(fd);
}

async function waitFor(path: string, child: ChildProcess): Promise<void> {
  const end = Date.now() + 15_000;
  while (!existsSync(path)) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    if (Date.now() > end) throw new Error(`timeout waiting for ${path}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** One `nbdcopy --connections=4 URI null:` run; seconds. */
function nbdcopy(uri: string): number {
  const t0 = process.hrtime.bigint();
  execFileSync('nbdcopy', ['--connections=4', uri, 'null:'], { stdio: 'inherit' });
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** `rounds` alternating nbdcopy reads of each server: the best time of each and the per-round ratios. */
function alternate(ours: string, theirs: string, rounds: number): AlternateResult {
  return alternateRounds(
    rounds,
    () => nbdcopy(theirs),
    () => nbdcopy(ours),
  );
}

async function randomReads(
  sock: string,
  size: number,
  total: number,
): Promise<{ p50: number; p99: number; iops: number }> {
  const c = await NbdClient.connect({ socketPath: sock, exportName: 'disk', maxInFlight: 64 });
  const lat: number[] = [];
  let left = total;
  let seed = 987654321;
  const blocks = Math.floor(size / 4096);
  const loop = async (): Promise<void> => {
    const buf = Buffer.allocUnsafe(4096);
    while (left-- > 0) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      const off = (seed % blocks) * 4096;
      const t0 = process.hrtime.bigint();
      await c.readInto(off, buf);
      lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  };
  // warm-up
  await Promise.all(Array.from({ length: 64 }, () => c.read(0, 4096)));
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: 64 }, loop));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  await c.close();
  lat.sort((a, b) => a - b);
  return {
    p50: lat[Math.floor(lat.length * 0.5)]!,
    p99: lat[Math.floor(lat.length * 0.99)]!,
    iops: lat.length / secs,
  };
}

async function main(): Promise<void> {
  if (process.argv[2] === '--serve') return serve(process.argv[3]!, process.argv[4]!);
  const sizeMiB = numberArg('size-mib', 1024);
  const reads = numberArg('reads', 20000);
  const size = sizeMiB * MiB;
  const dir = mkdtempSync(join(tmpdir(), 'vmvault-nbd-bench-'));
  const children: ChildProcess[] = [];
  const kill = (): void => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  };
  process.on('exit', kill);
  try {
    const image = join(dir, 'disk.raw');
    process.stderr.write(`building ${sizeMiB} MiB image...\n`);
    makeImage(image, size);
    warmFile(image);
    const ourSock = join(dir, 'ours.sock');
    const qSock = join(dir, 'qemu.sock');
    const ours = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve', image, ourSock], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    children.push(ours);
    // Its pid file appears once the socket listens (the socket file, a moment before).
    const qPid = `${qSock}.pid`;
    const qemu = spawn(
      'qemu-nbd',
      ['-r', '-f', 'raw', '-k', qSock, `--pid-file=${qPid}`, '-x', 'disk', '-e', '8', '-t', image],
      {
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    );
    children.push(qemu);
    await waitFor(ourSock, ours);
    await waitFor(qPid, qemu);
    const ourUri = `nbd+unix:///disk?socket=${ourSock}`;
    const qUri = `nbd+unix:///disk?socket=${qSock}`;

    process.stderr.write('sequential (nbdcopy)...\n');
    const seq = alternate(ourUri, qUri, numberArg('runs', 3));
    const seqQ = seq.theirs;
    const seqO = seq.ours;
    process.stderr.write('random 4 KiB reads...\n');
    const rq = await randomReads(qSock, size, reads);
    const ro = await randomReads(ourSock, size, reads);

    const mbps = (s: number): string => `${(size / MiB / s).toFixed(0)} MiB/s`;
    const seqRatio = seqQ / seqO;
    const p99Ratio = ro.p99 / rq.p99;
    const lines = [
      `NBD benchmark: ${sizeMiB} MiB raw image (1/2 data, 1/4 zeros, 1/4 holes), unix sockets, warm page cache`,
      '',
      '| test | vmvault NbdServer | qemu-nbd | ratio | bar | ok |',
      '| --- | --- | --- | --- | --- | --- |',
      `| nbdcopy --connections=4 → null: | ${mbps(seqO)} (${seqO.toFixed(2)} s) | ${mbps(seqQ)} (${seqQ.toFixed(2)} s) | ${(seqRatio * 100).toFixed(0)} % | ≥ 80 % | ${seqRatio >= 0.8 ? 'yes' : 'NO'} |`,
      `| 64 × random 4 KiB reads: p50 | ${ro.p50.toFixed(3)} ms | ${rq.p50.toFixed(3)} ms | ${(ro.p50 / rq.p50).toFixed(2)}× | | |`,
      `| 64 × random 4 KiB reads: p99 | ${ro.p99.toFixed(3)} ms | ${rq.p99.toFixed(3)} ms | ${p99Ratio.toFixed(2)}× | ≤ 2× | ${p99Ratio <= 2 ? 'yes' : 'NO'} |`,
      `| 64 × random 4 KiB reads: IOPS | ${ro.iops.toFixed(0)} | ${rq.iops.toFixed(0)} | ${(ro.iops / rq.iops).toFixed(2)}× | | |`,
      '',
      `(nbdcopy: best of ${seq.ratios.length} alternating rounds, per round ${seq.ratios.map((r) => `${(r * 100).toFixed(0)} %`).join(', ')}; ${reads} random reads per server, client: vmvault NbdClient in one process)`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

runBench('nbd-bench', main);
