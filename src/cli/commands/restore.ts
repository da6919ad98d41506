import { VmvaultError, formatBytes, formatDuration } from '../../core/index.js';
import { CodecPool } from '../../repository/index.js';
import { restoreDisk } from '../../restore/index.js';
import type { Command } from '../command.js';

export const restoreCommand: Command = {
  name: 'restore',
  summary: 'write a restore point back to a sparse raw file or a block device',
  usage: 'restore <id> <target> [--disk NAME] [--force]',
  options: { disk: { type: 'string' }, force: { type: 'boolean' } },
  async run(ctx, args, v) {
    if (args.length !== 2)
      throw new VmvaultError('E_USAGE', 'restore takes a restore point id and a target', {
        hint: 'vmvault restore <id> <target>',
      });
    const repo = await ctx.openRepo();
    const lock = await repo.lock('shared', `restore ${args[0]}`, ctx.lockWaitMs(), ctx.onLockWait);
    const pool = new CodecPool(repo);
    const bar = ctx.progress(`restore ${args[0]}`);
    try {
      const point = await repo.resolvePoint(args[0]!);
      const diskName = v.disk as string | undefined;
      const disk = diskName ? point.disks.find((d) => d.name === diskName) : point.disks[0];
      if (!disk)
        throw new VmvaultError('E_NOT_FOUND', `restore point ${point.id} has no disk ${diskName}`, {
          hint: `disks: ${point.disks.map((d) => d.name).join(', ')}`,
        });
      const started = Date.now();
      const r = await restoreDisk(repo, pool, disk, args[1]!, {
        force: v.force === true,
        onProgress: (p) => bar.update(p.done, p.total),
      });
      bar.done();
      const ms = Date.now() - started;
      ctx.out(
        {
          id: point.id,
          name: point.name,
          disk: disk.name,
          target: r.target,
          size: r.size,
          bytesWritten: r.bytesWritten,
          chunks: r.chunks,
          durationMs: ms,
        },
        () =>
          `restored ${point.id} (${point.name}, ${formatBytes(r.size)}) to ${r.target}: wrote ${formatBytes(r.bytesWritten)} in ${formatDuration(ms / 1000)}`,
      );
      return 0;
    } finally {
      bar.done();
      await pool.close();
      await lock.release();
      await repo.close();
    }
  },
};
