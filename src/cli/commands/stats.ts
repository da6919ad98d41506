import { formatBytes } from '../../core/index.js';
import { BlobType } from '../../repository/index.js';
import type { CommandRun } from '../command.js';

/** Runs `vmvault stats` (its options and help: `statsSpec` in specs.ts). */
export const run: CommandRun = async (ctx) => {
  const repo = await ctx.openRepo();
  try {
    const points = await repo.listPoints();
    let logicalBytes = 0;
    let referencedBytes = 0;
    for (const p of points) {
      for (const d of p.disks) {
        logicalBytes += d.size;
        referencedBytes += Math.min(d.size, (d.stats.chunksNew + d.stats.chunksReused) * d.chunkSize);
      }
    }
    let uniqueRaw = 0;
    let uniqueStored = 0;
    let chunks = 0;
    let pageBytes = 0;
    for (const pack of repo.index.packIds()) {
      for (const e of repo.index.packEntries(pack)!) {
        if (e.type === BlobType.data) {
          uniqueRaw += e.rawLength;
          uniqueStored += e.length;
          chunks++;
        } else pageBytes += e.length;
      }
    }
    let storedBytes = 0;
    let packs = 0;
    for (const prefix of ['packs', 'index', 'snapshots', 'config']) {
      for (const o of prefix === 'config'
        ? [await repo.backend.stat('config')]
        : await repo.backend.list(prefix)) {
        if (!o) continue;
        storedBytes += o.size;
        if (prefix === 'packs') packs++;
      }
    }
    const r = {
      restorePoints: points.length,
      logicalBytes,
      referencedBytes,
      uniqueBytes: uniqueRaw,
      storedBytes,
      chunks,
      packs,
      indexPageBytes: pageBytes,
      dedupRatio: uniqueRaw > 0 ? referencedBytes / uniqueRaw : 1,
      compressionRatio: uniqueStored > 0 ? uniqueRaw / uniqueStored : 1,
      totalRatio: storedBytes > 0 ? logicalBytes / storedBytes : 1,
    };
    ctx.out(r, () =>
      [
        `restore points   ${r.restorePoints}`,
        `logical size     ${formatBytes(r.logicalBytes)} (disk sizes, holes included)`,
        `data referenced  ${formatBytes(r.referencedBytes)}`,
        `unique data      ${formatBytes(r.uniqueBytes)} in ${r.chunks} chunks`,
        `stored size      ${formatBytes(r.storedBytes)} in ${r.packs} packs`,
        `dedup ratio      ${r.dedupRatio.toFixed(2)}x`,
        `compression      ${r.compressionRatio.toFixed(2)}x`,
        `logical/stored   ${r.totalRatio.toFixed(2)}x`,
      ].join('\n'),
    );
    return 0;
  } finally {
    await repo.close();
  }
};
