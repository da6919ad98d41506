/**
 * Live-mount benchmark (issue #5), in one run:
 *
 *   npx tsc -p . && node dist/bench/live-bench.js [--size 4G] [--repeat 5] [--source DIR]
 *
 * (a) Time to first byte: from spawning `vmvault mount <id> --socket S` until an NBD client
 *     (libnbd's `nbdinfo` would add its own start-up, so our own client, in this process) has
 *     read the first 4 KiB of the export; on the benchmark disk (ext4 from --source, as in the
 *     core benchmark), median of --repeat. Bar ≤ 300 ms. Also reported: when the mount printed
 *     its URI (it is listening then), which splits the figure into start-up and first read.
 * (b) Boot of the test guest (Debian kernel + busybox, TCG) from its local raw disk against a boot
 *     from `vmvault mount --writable` of its backup: time from starting QEMU to the guest's ready
 *     marker; the mount is cold on the first boot and has the first boot's read trace on the
 *     second. Each round boots all three; the local boot takes the first, second and third slot
 *     in turn. Median of --repeat per variant. Bar: live mount ≤ 1.5× local.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { NbdClient } from '../src/protocols/nbd/index.js';
import { buildTestGuest, createGuestDisk, startTestGuest } from '../test/fixtures/guest/index.js';
import { parseBenchArgs } from './lib/args.js';
import { buildImage } from './lib/image.js';
import { note } from './lib/log.js';
import { run } from './lib/proc.js';
import { markdownTable } from './lib/table.js';
import { machineInfo, VMVAULT_BIN } from './lib/tools.js';
import { median } from './lib/units.js';
import { exitOnHelp } from './lib/usage.js';
import { runBench } from './lib/main.js';

const USAGE = `usage: node dist/bench/live-bench.js [--size 4G] [--repeat N] [--source DIR] [--workdir DIR] [--keep]

Time from spawning \`vmvault mount\` to the first 4 KiB read (bar <= 300 ms), and the test guest's
boot from its local raw disk against a boot from a writable live mount of its backup, cold and
with the first boot's read trace (bar <= 1.5x). Medians of --repeat. Report on stdout.`;

/** Seconds with two decimals, comma-separated. */
function secs(ms: readonly number[]): string {
  return ms.map((x) => (x / 1000).toFixed(2)).join(', ');
}

/** Spawns `vmvault mount` and waits for its first stdout line. */
function mount(env: NodeJS.ProcessEnv, args: string[]): Promise<ChildProcess> {
  const p = spawn(process.execPath, [VMVAULT_BIN, 'mount', ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    p.stdout!.on('data', (d: Buffer) => {
      out += d;
      if (out.includes('\n')) resolve(p);
    });
    p.once('exit', (c) => reject(new Error(`mount exited ${c}`)));
  });
}

function stop(p: ChildProcess): Promise<void> {
  return new Promise((r) => {
    p.removeAllListeners('exit');
    p.once('exit', () => r());
    p.kill('SIGINT');
  });
}

/** Milliseconds from spawning the mount until it printed its URI and until 4 KiB were read. */
interface FirstByte {
  listeningMs: number;
  firstByteMs: number;
}

async function firstByte(env: NodeJS.ProcessEnv, id: string, sock: string): Promise<FirstByte> {
  await rm(sock, { force: true });
  const t0 = performance.now();
  const p = spawn(process.execPath, [VMVAULT_BIN, 'mount', id, '--socket', sock, '--no-trace'], {
    env,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  let listeningMs = Number.NaN;
  p.stdout!.once('data', () => {
    listeningMs = performance.now() - t0;
  });
  p.stdout!.resume();
  try {
    // Poll for the socket the way a client that was started together with the mount would.
    for (;;) {
      try {
        const c = await NbdClient.connect({ socketPath: sock, exportName: id });
        const b = await c.read(0, 4096);
        const ms = performance.now() - t0;
        await c.close();
        if (b.length !== 4096) throw new Error('short read');
        return { listeningMs, firstByteMs: ms };
      } catch (err) {
        if (p.exitCode !== null) throw new Error(`mount exited ${p.exitCode}: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 2));
      }
    }
  } finally {
    await stop(p);
  }
}

async function main(): Promise<number> {
  exitOnHelp(process.argv.slice(2), USAGE);
  const opts = parseBenchArgs(process.argv.slice(2), { size: '4G' });
  const base = await mkdtemp(join(opts.workdir, 'vmvault-live-bench-'));
  const env = { ...process.env, XDG_CACHE_HOME: join(base, 'cache'), VMVAULT_REPO: join(base, 'repo') };
  const cli = (args: string[]) =>
    run(process.execPath, [VMVAULT_BIN, args[0]!, '--json', ...args.slice(1)], { env });
  try {
    await cli(['init']);
    note(`building ${opts.sizeText} image from ${opts.source}`);
    const image = join(base, 'disk.img');
    await buildImage(image, opts.size, opts.source);
    const id = String(JSON.parse((await cli(['backup', image, '--name', 'bench'])).stdout).id);
    await rm(image);
    note('time to first byte');
    const starts: FirstByte[] = [];
    for (let i = 0; i < opts.repeat; i++) starts.push(await firstByte(env, id, join(base, 'ttfb.sock')));
    const ttfb = starts.map((x) => x.firstByteMs);
    const listening = starts.map((x) => x.listeningMs);

    note('building the test guest');
    const guest = await buildTestGuest();
    const local = await createGuestDisk(guest, join(base, 'guest.raw'), 'raw');
    const gid = String(JSON.parse((await cli(['backup', local, '--name', 'guest'])).stdout).id);
    const boot = async (blockdev?: Record<string, unknown>): Promise<number> => {
      const t0 = performance.now();
      const g = await startTestGuest({
        disk: local,
        diskFormat: 'raw',
        guest,
        ...(blockdev ? { blockdev } : {}),
        readyTimeoutMs: 120_000,
      });
      const ms = performance.now() - t0;
      await g.stop();
      return ms;
    };
    const localMs: number[] = [];
    const coldMs: number[] = [];
    const tracedMs: number[] = [];
    const liveBoot = async (roundEnv: NodeJS.ProcessEnv, sock: string): Promise<number> => {
      await rm(sock, { force: true });
      const m = await mount(roundEnv, [gid, '--socket', sock, '--writable']);
      try {
        return await boot({ driver: 'nbd', server: { type: 'unix', path: sock }, export: gid });
      } finally {
        await stop(m);
      }
    };
    for (let i = 0; i < opts.repeat; i++) {
      note(`boots, round ${i + 1} of ${opts.repeat}`);
      // A fresh cache dir per round: the first mount has no trace, the second has the first's.
      // The local boot moves through the three slots from round to round, so a load that drifts
      // during a round does not always fall on the same variant.
      const roundEnv = { ...env, XDG_CACHE_HOME: join(base, `cache-${i}`) };
      const sock = join(base, `boot-${i}.sock`);
      const steps: (() => Promise<void>)[] = [
        async () => void coldMs.push(await liveBoot(roundEnv, sock)),
        async () => void tracedMs.push(await liveBoot(roundEnv, sock)),
      ];
      steps.splice(i % 3, 0, async () => void localMs.push(await boot()));
      for (const step of steps) await step();
    }
    const t = median(ttfb);
    const l = median(localMs);
    const c = median(coldMs);
    const w = median(tracedMs);
    process.stdout.write(
      [
        `command: \`node dist/bench/live-bench.js ${process.argv.slice(2).join(' ')}\``,
        `date: ${new Date().toISOString()}`,
        `machine: ${await machineInfo()}`,
        `point: ${opts.sizeText} ext4 from ${opts.source}; guest: Debian kernel + busybox, TCG, 256 MiB; median of ${opts.repeat}`,
        '',
        markdownTable(
          ['figure', 'result', 'bar'],
          [
            [
              'mount start → URI printed (listening)',
              `${median(listening).toFixed(0)} ms (all: ${listening.map((x) => x.toFixed(0)).join(', ')})`,
              '',
            ],
            [
              'mount start → first 4 KiB read',
              `${t.toFixed(0)} ms (all: ${ttfb.map((x) => x.toFixed(0)).join(', ')})`,
              `≤ 300 ms: ${t <= 300 ? 'met' : 'NOT met'}`,
            ],
            ['guest boot, local raw disk', `${(l / 1000).toFixed(2)} s (all: ${secs(localMs)})`, ''],
            [
              'guest boot, live mount (cold)',
              `${(c / 1000).toFixed(2)} s = ${(c / l).toFixed(2)}× (all: ${secs(coldMs)})`,
              `≤ 1.5×: ${c / l <= 1.5 ? 'met' : 'NOT met'}`,
            ],
            [
              'guest boot, live mount (with trace)',
              `${(w / 1000).toFixed(2)} s = ${(w / l).toFixed(2)}× (all: ${secs(tracedMs)})`,
              `≤ 1.5×: ${w / l <= 1.5 ? 'met' : 'NOT met'}`,
            ],
          ],
        ),
        '',
      ].join('\n'),
    );
    return 0;
  } finally {
    if (!opts.keep) await rm(base, { recursive: true, force: true });
  }
}

runBench('live-bench', main, { exit: true });
