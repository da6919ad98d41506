/**
 * File-level restore benchmark (issue #6): on the core benchmark image (4 GiB sparse ext4 made
 * from /usr/lib/x86_64-linux-gnu), measures listing `/`, extracting one ~1 MiB file (time and
 * chunk bytes read), `vmvault find` over 100 restore points, and what the file index costs a
 * backup. In-process figures exclude Node's start-up; CLI figures include it and are timed by
 * bash's `time` in a shell the bench starts (what a user sees; the bench's own fork, slow for a
 * process with a large heap, is not counted). `files ls` is timed
 * both ways: from the file index in the catalog (the default) and from the filesystem (--from-fs).
 *
 *   node dist/bench/files-bench.js [--size 4G] [--points 100] [--workdir DIR] [--keep]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Catalog } from '../src/catalog/index.js';
import { lsFromIndex } from '../src/cli/commands/files.js';
import { PointFiles } from '../src/files/index.js';
import { Repository } from '../src/repository/index.js';
import { buildImage } from './lib/image.js';
import { run, runTimedInShell } from './lib/proc.js';
import { markdownTable } from './lib/table.js';
import { machineInfo, VMVAULT_BIN } from './lib/tools.js';
import { fmtBytes, fmtMs, median, parseSize } from './lib/units.js';
import { runBench } from './lib/main.js';
import { textArg } from './lib/args.js';

async function main(): Promise<void> {
  const size = parseSize(textArg('size', '4G'));
  const points = Number(textArg('points', '100'));
  const work = await mkdtemp(join(textArg('workdir', '/var/tmp'), 'vmvault-files-bench-'));
  const env = { ...process.env, XDG_CACHE_HOME: join(work, 'cache') };
  const cli = (args: string[]) =>
    run(process.execPath, [VMVAULT_BIN, ...args, '--repo', join(work, 'repo')], { env });
  // Start-up sensitive CLI figures are timed by a shell, as a user sees them (see runTimedInShell).
  const shellCli = (args: string[]) =>
    runTimedInShell(process.execPath, [VMVAULT_BIN, ...args, '--repo', join(work, 'repo')], { env });
  try {
    const img = join(work, 'disk.img');
    await buildImage(img, size, '/usr/lib/x86_64-linux-gnu');
    await run('cat', [img], { allowFail: true }); // warm the page cache
    await cli(['init']);

    // Cost of the file index on a full backup: fresh repositories with and without it.
    const fullWith: number[] = [];
    const fullWithout: number[] = [];
    for (let i = 0; i < 2; i++) {
      for (const idx of [false, true]) {
        const r = join(work, `full-${i}-${idx}`);
        await run(process.execPath, [VMVAULT_BIN, 'init', '--repo', r], { env });
        const t = await run(
          process.execPath,
          [VMVAULT_BIN, 'backup', img, '--repo', r, '--json', ...(idx ? [] : ['--no-file-index'])],
          { env },
        );
        (idx ? fullWith : fullWithout).push(t.ms);
        await rm(r, { recursive: true, force: true });
      }
    }
    const fullCost = median(fullWith) / median(fullWithout) - 1;
    // ... and on a backup of the unchanged disk (read-compare), alternating.
    const withIdx: number[] = [];
    const without: number[] = [];
    const firstId = JSON.parse((await cli(['backup', img, '--name', 'vm', '--json'])).stdout).id as string;
    for (let i = 0; i < 3; i++) {
      without.push((await cli(['backup', img, '--name', 'noidx', '--no-file-index', '--json'])).ms);
      withIdx.push((await cli(['backup', img, '--name', 'vm', '--json'])).ms);
    }
    const indexCost = median(withIdx) / median(without) - 1;

    // In-process: list /, then extract a ~1 MiB file, each on a fresh reader.
    const repo = await Repository.open(join(work, 'repo'), { passphrase: null });
    const repoId = repo.config.id;
    const point = await repo.resolvePoint(firstId);
    const lsTimes: number[] = [];
    for (let i = 0; i < 5; i++) {
      const files = new PointFiles(repo, point);
      const t = performance.now();
      const r = await files.resolve('/disk');
      await (await files.filesystem(r.volume!)).readdir('/');
      lsTimes.push(performance.now() - t);
    }
    const files0 = new PointFiles(repo, point);
    const vol = (await files0.volumes())[0]!;
    const fs0 = await files0.filesystem(vol);
    let target = '';
    for await (const e of fs0.walk()) {
      if (e.type === 'file' && e.size >= 900_000 && e.size <= 1_200_000) {
        target = e.path;
        break;
      }
    }
    const exTimes: number[] = [];
    let fetched = 0;
    let fileSize = 0;
    for (let i = 0; i < 5; i++) {
      const files = new PointFiles(repo, point);
      const t = performance.now();
      const fs = await files.filesystem((await files.volumes())[0]!);
      let n = 0;
      for await (const piece of fs.readFile(target)) n += piece.length;
      exTimes.push(performance.now() - t);
      fetched = files.chunkBytesFetched;
      fileSize = n;
    }
    await repo.close();

    // More restore points, then find across all of them.
    for (let i = 0; i < points - 4; i++)
      await cli(['backup', img, '--name', `vm${i % 10}`, '--no-file-index']);
    await cli(['find', 'libc.so*', '--json']); // indexes the points backed up without the index
    const findCli: number[] = [];
    for (let i = 0; i < 5; i++) findCli.push((await shellCli(['find', 'libc.so*', '--json'])).ms);
    const lsCli: number[] = [];
    const lsCliFs: number[] = [];
    const helpCli: number[] = [];
    const nodeBare: number[] = [];
    for (let i = 0; i < 5; i++) {
      lsCli.push((await shellCli(['files', 'ls', firstId, '/disk', '--json'])).ms);
      lsCliFs.push((await shellCli(['files', 'ls', firstId, '/disk', '--from-fs', '--json'])).ms);
      helpCli.push((await runTimedInShell(process.execPath, [VMVAULT_BIN, '--help'], { env })).ms);
      nodeBare.push((await runTimedInShell(process.execPath, ['-e', '0'], { env })).ms);
    }
    // `files ls` answered from the file index in the catalog, in process (catalog already open).
    const catalog = Catalog.open(join(work, 'cache', 'vmvault', repoId, 'catalog.db'));
    const lsIndex: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      lsFromIndex(catalog, firstId, '/disk');
      lsIndex.push(performance.now() - t);
    }
    catalog.close();

    console.log(`# vmvault file-level restore benchmark\n\n${await machineInfo()}\n`);
    console.log(
      `command: node dist/bench/files-bench.js --size ${textArg('size', '4G')} --points ${points}\n`,
    );
    console.log(
      markdownTable(
        ['figure', 'measured', 'bar', 'result'],
        [
          [
            'list `/` of the filesystem (in process, cold reader)',
            fmtMs(median(lsTimes)),
            '≤ 50 ms',
            median(lsTimes) <= 50 ? 'PASS' : 'FAIL',
          ],
          ['list `/` from the file index in the catalog (in process)', fmtMs(median(lsIndex)), 'info', ''],
          ['`vmvault files ls ID /disk` (CLI, from the file index)', fmtMs(median(lsCli)), 'info', ''],
          [
            '`vmvault files ls ID /disk --from-fs` (CLI, reads the filesystem)',
            fmtMs(median(lsCliFs)),
            'info',
            '',
          ],
          ['`vmvault --help` (CLI)', fmtMs(median(helpCli)), 'info', ''],
          ['`node -e 0` (Node start-up alone, for reference)', fmtMs(median(nodeBare)), 'info', ''],
          [
            `extract ${target} (${fmtBytes(fileSize)}), in process`,
            fmtMs(median(exTimes)),
            '≤ 100 ms',
            median(exTimes) <= 100 ? 'PASS' : 'FAIL',
          ],
          [
            'chunk data read for that extraction',
            fmtBytes(fetched),
            '≤ 4 MiB',
            fetched <= 4 << 20 ? 'PASS' : 'FAIL',
          ],
          [
            `\`vmvault find\` over ${points} restore points (CLI)`,
            fmtMs(median(findCli)),
            '≤ 200 ms',
            median(findCli) <= 200 ? 'PASS' : 'FAIL',
          ],
          [
            'full backup time added by the file index',
            `${(fullCost * 100).toFixed(1)}%`,
            '≤ 15%',
            fullCost <= 0.15 ? 'PASS' : 'FAIL',
          ],
          [
            'unchanged-disk backup time added by the file index',
            `${(indexCost * 100).toFixed(1)}%`,
            '≤ 15%',
            indexCost <= 0.15 ? 'PASS' : 'FAIL',
          ],
        ],
      ),
    );
  } finally {
    if (!process.argv.includes('--keep')) await rm(work, { recursive: true, force: true });
  }
}

runBench('files-bench', main);
