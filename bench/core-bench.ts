/**
 * Core benchmark: vmvault against restic on a 4 GiB sparse ext4 image, in one run, printed as
 * a markdown table of ratios with PASS/FAIL against the bars. Not a test: it measures.
 *
 *   node dist/bench/core-bench.js [--size 4G] [--workdir /var/tmp] [--repeat N] [--keep]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseBenchArgs } from './lib/args.js';
import { type Figures, runCoreScenario } from './lib/core-scenario.js';
import { buildImage, planWrites, writableBlocks } from './lib/image.js';
import { note } from './lib/log.js';
import { Prng } from './lib/prng.js';
import { markdownTable } from './lib/table.js';
import { machineInfo } from './lib/tools.js';
import { fmtBytes, fmtMs, fmtRatio, median } from './lib/units.js';
import { runBench } from './lib/main.js';

const WRITES = 640;
const WRITE_LEN = 64 << 10;

async function main(): Promise<number> {
  const opts = parseBenchArgs(process.argv.slice(2), { size: '4G' });
  const base = await mkdtemp(join(opts.workdir, 'vmvault-core-bench-'));
  try {
    const header = [
      `command: \`node dist/bench/core-bench.js ${process.argv.slice(2).join(' ')}\``.replace(' `', '`'),
      `date: ${new Date().toISOString()}`,
      `machine: ${await machineInfo()}`,
    ];
    note(`building ${opts.sizeText} image from ${opts.source} in ${base}`);
    const master = join(base, 'master.img');
    await buildImage(master, opts.size, opts.source);
    const map = await writableBlocks(master);
    const used = new Uint8Array(map.length);
    const prng = new Prng(opts.seed);
    const aligned = planWrites(map, used, prng, WRITES, WRITE_LEN, WRITE_LEN);
    const unaligned = planWrites(map, used, prng, WRITES, WRITE_LEN, 4096, WRITE_LEN);
    const runs: Figures[] = [];
    for (let i = 0; i < opts.repeat; i++) {
      note(`repetition ${i + 1} of ${opts.repeat}`);
      const dir = join(base, `rep-${i + 1}`);
      runs.push(await runCoreScenario({ dir, master, aligned, unaligned, seed: opts.seed }));
      if (!opts.keep) await rm(dir, { recursive: true, force: true });
    }
    const m = (k: string) => median(runs.map((r) => r[k] ?? Number.NaN));
    header.push(
      `image: ${opts.sizeText} sparse, ext4 from ${opts.source}; ${WRITES} writes of ${fmtBytes(WRITE_LEN)} per variant; ` +
        `${opts.repeat === 1 ? 'one run' : `median of ${opts.repeat} runs`}`,
    );
    process.stdout.write(`${header.join('  \n')}\n\n${report(m)}\n`);
    return 0;
  } finally {
    if (!opts.keep) await rm(base, { recursive: true, force: true });
    else note(`kept ${base}`);
  }
}

/** Builds the markdown table from the median figure getter `m`. */
function report(m: (k: string) => number): string {
  const rows: string[][] = [];
  const pass = (ok: boolean) => (ok ? 'PASS' : 'FAIL');
  const time = (label: string, vm: string, rs: string, bar?: number) => {
    const r = m(`${vm}.ms`) / m(`${rs}.ms`);
    rows.push([
      label,
      fmtMs(m(`${vm}.ms`)),
      fmtMs(m(`${rs}.ms`)),
      fmtRatio(m(`${vm}.ms`), m(`${rs}.ms`)),
      bar ? `≤ ${bar.toFixed(2)}×` : 'info',
      bar ? pass(r <= bar) : '',
    ]);
  };
  const growth = (label: string, vm: string, rs: string, changedKey: string, bar?: number) => {
    const c = m(changedKey);
    const g = m(`${vm}.growth`);
    const gr = m(`${rs}.growth`);
    rows.push([
      `${label} (changed ${fmtBytes(c)})`,
      `${fmtBytes(g)} = ${fmtRatio(g, c)} changed (stored ${fmtBytes(m(`${vm}.stored`))})`,
      `${fmtBytes(gr)} = ${fmtRatio(gr, c)} changed`,
      fmtRatio(g, gr),
      bar ? `≤ ${bar}× changed` : 'info',
      bar ? pass(g <= bar * c) : '',
    ]);
  };
  time('full backup, wall time (vmvault encrypted)', 'vm.full', 'restic.full', 0.25);
  time('full backup, wall time (vmvault unencrypted)', 'vm.plain.full', 'restic.full');
  time(
    'full backup, wall time (vmvault encrypted, `init --compression lz4`)',
    'vm.lz4.full',
    'restic.full',
    0.25,
  );
  rows.push([
    'repository size after full backup',
    `${fmtBytes(m('vm.full.growth'))} enc / ${fmtBytes(m('vm.plain.full.growth'))} plain / ${fmtBytes(m('vm.lz4.full.growth'))} lz4 enc`,
    fmtBytes(m('restic.full.growth')),
    fmtRatio(m('vm.full.growth'), m('restic.full.growth')),
    'info',
    '',
  ]);
  time('incremental after 640 aligned 64 KiB writes, wall time', 'vm.incA', 'restic.incA', 0.25);
  growth('repository growth, aligned incremental', 'vm.incA', 'restic.incA', 'changedAligned', 1.5);
  time('incremental after 640 unaligned (4 KiB-aligned) 64 KiB writes, wall time', 'vm.incU', 'restic.incU');
  growth('repository growth, unaligned incremental', 'vm.incU', 'restic.incU', 'changedUnaligned');
  time('full restore, wall time', 'vm.restore', 'restic.restore', 1 / 3);
  time(
    'full restore from the lz4 repository (its full backup), wall time',
    'vm.lz4.restore',
    'restic.restore',
    1 / 3,
  );
  time(
    'full restore, restic followed by `sync FILE` (vmvault fsyncs, restic 0.14 does not)',
    'vm.restore',
    'restic.restoreSync',
  );
  const rss = Math.max(
    m('vm.full.rss'),
    m('vm.plain.full.rss'),
    m('vm.lz4.full.rss'),
    m('vm.incA.rss'),
    m('vm.incU.rss'),
    m('vm.same.rss'),
  );
  const rrss = Math.max(m('restic.full.rss'), m('restic.incA.rss'), m('restic.incU.rss'));
  rows.push([
    'peak RSS during backup (max over all backups)',
    `${fmtBytes(rss)} (full enc ${fmtBytes(m('vm.full.rss'))})`,
    fmtBytes(rrss),
    fmtRatio(rss, rrss),
    '≤ 300 MB',
    pass(rss <= 300e6),
  ]);
  rows.push([
    'peak RSS during restore',
    fmtBytes(m('vm.restore.rss')),
    fmtBytes(m('restic.restore.rss')),
    fmtRatio(m('vm.restore.rss'), m('restic.restore.rss')),
    'info',
    '',
  ]);
  const same = m('vm.same.growth');
  rows.push([
    'metadata added by a backup of the unchanged disk (repo growth)',
    `${fmtBytes(same)} (bytesStored ${fmtBytes(m('vm.same.stored'))})`,
    `${fmtBytes(m('restic.same.growth'))}`,
    fmtRatio(same, m('restic.same.growth')),
    '≤ 64 KiB',
    pass(same <= 64 * 1024 && m('vm.same.stored') <= 64 * 1024),
  ]);
  time('backup of the unchanged disk, wall time', 'vm.same', 'restic.same');
  return markdownTable(['figure', 'vmvault', 'restic 0.14', 'vmvault / restic', 'bar', 'result'], rows);
}

runBench('core-bench', main);
