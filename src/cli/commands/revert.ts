import { VmvaultError, formatBytes, formatDuration } from '../../core/index.js';
import { CodecPool } from '../../repository/index.js';
import { revertDisk } from '../../restore/index.js';
import type { CommandRun } from '../command.js';
import { resolvePointDisk } from '../point-disk.js';

/** Runs `vmvault revert` (its options and help: `revertSpec` in specs.ts). */
export const run: CommandRun = async (ctx, args, v) => {
  if (args.length !== 1) throw new VmvaultError('E_USAGE', 'revert takes one restore point id');
  const target = v.to as string | undefined;
  if (!target) throw new VmvaultError('E_USAGE', 'revert needs --to DISK');
  const format = (v.format as string | undefined) ?? 'auto';
  if (format !== 'auto' && format !== 'raw' && format !== 'qcow2') {
    throw new VmvaultError('E_USAGE', `--format takes raw or qcow2, not ${format}`);
  }
  ctx.prestartPool();
  await ctx.withRepo('shared', `revert ${args[0]}`, async (repo) => {
    const { point, disk } = await resolvePointDisk(repo, args[0]!, v.disk as string | undefined);
    const pool = new CodecPool(repo);
    const bar = ctx.progress(`revert ${point.id.slice(0, 8)}`);
    try {
      const t0 = Date.now();
      const r = await revertDisk(repo, pool, disk, target, {
        format,
        allowLarger: v['allow-larger'] === true,
        onProgress: (p) => bar.update(p.done, p.total, `${p.chunksWritten} chunks rewritten`),
      });
      bar.done();
      const ms = Date.now() - t0;
      ctx.out(
        { id: point.id, name: point.name, disk: disk.name, ...r, durationMs: ms },
        () =>
          `reverted ${r.target} to ${point.id} (${point.name}, ${disk.name}): ${r.chunksWritten} of ` +
          `${r.chunksCompared} chunks differed, wrote ${formatBytes(r.bytesWritten)} in ${formatDuration(ms / 1000)}`,
      );
    } finally {
      bar.done();
      await pool.close();
    }
  });
  return 0;
};
