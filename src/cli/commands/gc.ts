import { formatBytes } from '../../core/index.js';
import { collectGarbage } from '../../repository/index.js';
import type { CommandRun } from '../command.js';

/** Runs `vmvault gc` (its options and help: `gcSpec` in specs.ts). */
export const run: CommandRun = async (ctx, _args, v) => {
  const repo = await ctx.openRepo();
  const lock = await repo.lock('exclusive', 'gc', ctx.lockWaitMs(), ctx.onLockWait);
  try {
    // Re-read the index under the lock: writers may have added segments while we waited.
    await repo.close();
    const fresh = await ctx.openRepo();
    try {
      const threshold = v['repack-threshold'] === undefined ? undefined : Number(v['repack-threshold']);
      const r = await collectGarbage(fresh, {
        dryRun: v['dry-run'] === true,
        ...(threshold !== undefined && Number.isFinite(threshold) ? { repackThreshold: threshold } : {}),
      });
      ctx.out(
        { dryRun: v['dry-run'] === true, ...r },
        () =>
          `${v['dry-run'] ? 'would free' : 'freed'} ${formatBytes(r.bytesFreed)}: ${r.packsRemoved} of ${r.packsBefore} pack(s) removed, ${r.packsRepacked} repacked into ${r.packsWritten}, ${r.blobsRemoved} unused chunk(s)`,
      );
      return 0;
    } finally {
      await fresh.close();
    }
  } finally {
    await lock.release();
  }
};
