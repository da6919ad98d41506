/**
 * Chunk-size study: for each chunk size, a fresh encrypted vmvault repository gets a full
 * backup, incrementals after 640 aligned and 640 unaligned random 64 KiB writes, and a backup
 * of the unchanged disk. Prints a markdown table; it decides the default chunk size.
 *
 *   node dist/bench/chunk-size-study.js [--size 1G] [--chunk-sizes 16K,32K,64K,128K,256K]
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseBenchArgs } from './lib/args.js';
import { applyWrites, buildImage, copySparse, planWrites, writableBlocks } from './lib/image.js';
import { note } from './lib/log.js';
import { warmCache } from './lib/proc.js';
import { Prng } from './lib/prng.js';
import { withGrowth } from './lib/repo.js';
import { markdownTable } from './lib/table.js';
import { machineInfo, Vmvault } from './lib/tools.js';
import { fmtBytes, fmtMs, fmtRatio, median } from './lib/units.js';
import { runBench } from './lib/main.js';

const WRITES = 640;
const WRITE_LEN = 64 << 10;

async function main(): Promise<number> {
  const opts = parseBenchArgs(process.argv.slice(2), { size: '1G' });
  const base = await mkdtemp(join(opts.workdir, 'vmvault-chunk-study-'));
  try {
    const header = [
      `command: \`node dist/bench/chunk-size-study.js${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}\``,
      `date: ${new Date().toISOString()}`,
      `machine: ${await machineInfo()}`,
      `image: ${opts.sizeText} sparse, ext4 from ${opts.source}; encrypted repositories; ` +
        `${opts.repeat === 1 ? 'one run' : `median of ${opts.repeat} runs`}`,
    ];
    const master = join(base, 'master.img');
    note(`building ${opts.sizeText} image in ${base}`);
    await buildImage(master, opts.size, opts.source);
    const map = await writableBlocks(master);
    const used = new Uint8Array(map.length);
    const prng = new Prng(opts.seed);
    const aligned = planWrites(map, used, prng, WRITES, WRITE_LEN, WRITE_LEN);
    const unaligned = planWrites(map, used, prng, WRITES, WRITE_LEN, 4096, WRITE_LEN);
    const rows: string[][] = [];
    for (const cs of opts.chunkSizes) {
      const runs: Record<string, number>[] = [];
      for (let i = 0; i < opts.repeat; i++) {
        const dir = join(base, `cs-${cs}-${i + 1}`);
        await mkdir(dir, { recursive: true });
        const img = join(dir, 'disk.img');
        await copySparse(master, img);
        const env = { ...process.env, XDG_CACHE_HOME: join(dir, 'xdg'), VMVAULT_PASSWORD: 'study' };
        const vm = new Vmvault(join(dir, 'repo'), env);
        await vm.init({ encrypt: true, chunkSize: cs });
        const f: Record<string, number> = {};
        const step = async (key: string) => {
          await warmCache(img);
          const r = await withGrowth(vm.repo, () => vm.backup(img, 'disk'));
          f[`${key}.ms`] = r.ms;
          f[`${key}.growth`] = r.growth;
          f[`${key}.stored`] = r.bytesStored;
          f[`${key}.rss`] = r.maxRss;
          note(`${cs} ${key}: ${(r.ms / 1000).toFixed(2)} s, growth ${r.growth}, rss ${r.maxRss}`);
        };
        await step('full');
        f.changedA = await applyWrites(img, aligned, new Prng(opts.seed + 1));
        await step('incA');
        f.changedU = await applyWrites(img, unaligned, new Prng(opts.seed + 2));
        await step('incU');
        await step('same');
        runs.push(f);
        if (!opts.keep) await rm(dir, { recursive: true, force: true });
      }
      const m = (k: string) => median(runs.map((r) => r[k] ?? Number.NaN));
      const rss = Math.max(m('full.rss'), m('incA.rss'), m('incU.rss'));
      rows.push([
        cs,
        fmtMs(m('full.ms')),
        fmtBytes(m('full.growth')),
        fmtMs(m('incA.ms')),
        fmtRatio(m('incA.growth'), m('changedA')),
        fmtRatio(m('incU.growth'), m('changedU')),
        fmtBytes(m('same.growth')),
        fmtMs(m('same.ms')),
        fmtBytes(rss),
      ]);
    }
    const table = markdownTable(
      [
        'chunk size',
        'full backup',
        'repo after full',
        'incremental (aligned)',
        'growth / changed, aligned',
        'growth / changed, unaligned',
        'unchanged backup adds',
        'unchanged backup time',
        'peak RSS',
      ],
      rows,
    );
    process.stdout.write(`${header.join('  \n')}\n\n${table}\n`);
    return 0;
  } finally {
    if (!opts.keep) await rm(base, { recursive: true, force: true });
    else note(`kept ${base}`);
  }
}

runBench('chunk-size-study', main);
