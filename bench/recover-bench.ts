/**
 * Recover benchmark (issue #5): a full `vmvault recover` of the benchmark disk against a plain
 * `vmvault restore` of the same point, in one run.
 *
 *   npx tsc -p . && node dist/bench/recover-bench.js [--size 4G] [--repeat 3] [--source DIR]
 *
 * The disk is the core benchmark's (bench/lib/image.ts: ext4 filled from --source). `recover`
 * starts a VM (qemu-system-x86_64 under TCG with no OS: its firmware looks at the disk and
 * idles) on the live mount, copies every chunk to the target, switches the running VM onto it
 * and leaves it running; the time is from spawning `vmvault recover` to its exit. The VM is then
 * stopped. Both targets are checked to be identical to the image. Bar: recover ≤ 1.5× restore.
 * Each repetition runs restore and recover back to back (alternating which goes first); the
 * table gives the median ratio.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { QmpClient } from '../src/protocols/qmp/index.js';
import { parseBenchArgs } from './lib/args.js';
import { buildImage } from './lib/image.js';
import { note } from './lib/log.js';
import { run, sameFiles } from './lib/proc.js';
import { markdownTable } from './lib/table.js';
import { machineInfo, VMVAULT_BIN } from './lib/tools.js';
import { median } from './lib/units.js';
import { exitOnHelp } from './lib/usage.js';
import { runBench } from './lib/main.js';

const USAGE = `usage: node dist/bench/recover-bench.js [--size 4G] [--repeat N] [--source DIR] [--workdir DIR] [--keep]

A full \`vmvault recover ID --to TARGET\` of the benchmark disk (a TCG VM without an OS runs on the
live mount meanwhile and is switched onto the target) against a plain \`vmvault restore\` of the
same point, back to back, --repeat times. Bar: median recover / restore <= 1.5x. Report on stdout.`;

async function main(): Promise<number> {
  exitOnHelp(process.argv.slice(2), USAGE);
  const opts = parseBenchArgs(process.argv.slice(2), { size: '4G' });
  const base = await mkdtemp(join(opts.workdir, 'vmvault-recover-bench-'));
  const env = { ...process.env, XDG_CACHE_HOME: join(base, 'cache'), VMVAULT_REPO: join(base, 'repo') };
  const cli = (args: string[]) =>
    run(process.execPath, [VMVAULT_BIN, args[0]!, '--json', ...args.slice(1)], { env });
  try {
    note(`building ${opts.sizeText} image from ${opts.source} in ${base}`);
    const image = join(base, 'disk.img');
    await buildImage(image, opts.size, opts.source);
    await cli(['init']);
    const id = String(JSON.parse((await cli(['backup', image, '--name', 'bench'])).stdout).id);
    const rows: string[][] = [];
    const ratios: number[] = [];
    for (let i = 0; i < opts.repeat; i++) {
      const restoreTarget = join(base, `restore-${i}.raw`);
      const recoverTarget = join(base, `recover-${i}.raw`);
      const doRestore = async () => (await cli(['restore', id, restoreTarget])).ms;
      const doRecover = async () => {
        const r = await cli([
          'recover',
          id,
          '--to',
          recoverTarget,
          '--',
          'qemu-system-x86_64',
          '-accel',
          'tcg',
          '-m',
          '64',
          '-nodefaults',
          '-display',
          'none',
        ]);
        const out = JSON.parse(r.stdout) as {
          qmpSocket: string;
          copyMs: number;
          switchMs: number;
          startMs: number;
        };
        const q = await QmpClient.connect({ path: out.qmpSocket });
        const status = await q.execute<{ status: string }>('query-status');
        await q.execute('quit').catch(() => undefined);
        await q.close();
        if (status.status !== 'running') throw new Error(`the VM is ${status.status} after recover`);
        return { ms: r.ms, ...out };
      };
      note(`repetition ${i + 1} of ${opts.repeat}`);
      let restoreMs: number;
      let rec: Awaited<ReturnType<typeof doRecover>>;
      if (i % 2 === 0) {
        restoreMs = await doRestore();
        rec = await doRecover();
      } else {
        rec = await doRecover();
        restoreMs = await doRestore();
      }
      if (!(await sameFiles(image, restoreTarget)) || !(await sameFiles(image, recoverTarget))) {
        throw new Error('a target differs from the image');
      }
      await rm(restoreTarget);
      await rm(recoverTarget);
      ratios.push(rec.ms / restoreMs);
      rows.push([
        String(i + 1),
        `${(restoreMs / 1000).toFixed(2)} s`,
        `${(rec.ms / 1000).toFixed(2)} s`,
        `${(rec.startMs / 1000).toFixed(2)} s`,
        `${(rec.copyMs / 1000).toFixed(2)} s`,
        `${(rec.switchMs / 1000).toFixed(2)} s`,
        `${(rec.ms / restoreMs).toFixed(2)}×`,
      ]);
    }
    const m = median(ratios);
    process.stdout.write(
      [
        `command: \`node dist/bench/recover-bench.js ${process.argv.slice(2).join(' ')}\``,
        `date: ${new Date().toISOString()}`,
        `machine: ${await machineInfo()}`,
        `image: ${opts.sizeText} sparse, ext4 from ${opts.source}`,
        '',
        markdownTable(
          ['run', 'restore', 'recover', 'VM running after', 'copy', 'switch', 'recover / restore'],
          rows,
        ),
        '',
        `median recover / restore: ${m.toFixed(2)}× (bar ≤ 1.5×: ${m <= 1.5 ? 'met' : 'NOT met'})`,
        '',
      ].join('\n'),
    );
    return 0;
  } finally {
    if (!opts.keep) await rm(base, { recursive: true, force: true });
  }
}

runBench('recover-bench', main, { exit: true });
