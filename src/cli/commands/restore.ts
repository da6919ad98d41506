import { VmvaultError, formatBytes, formatDuration } from '../../core/index.js';
import { restoreDisk } from '../../restore/index.js';
import type { CommandRun } from '../command.js';
import { resolvePointDisk } from '../point-disk.js';

/** Runs `vmvault restore` (its options and help: `restoreSpec` in specs.ts). */
export const run: CommandRun = async (ctx, args, v) => {
  if (args.length !== 2) {
    throw new VmvaultError('E_USAGE', 'restore takes a restore point id and a target', {
      hint: 'vmvault restore <id> <target>',
    });
  }
  const format = targetFormat(args[1]!, v.format as string | undefined);
  ctx.prestartPool();
  await ctx.withRepo('shared', `restore ${args[0]}`, async (repo) => {
    const { point, disk } = await resolvePointDisk(repo, args[0]!, v.disk as string | undefined);
    const pool = await ctx.codecPool(repo);
    const bar = ctx.progress(`restore ${point.id.slice(0, 8)}`);
    try {
      const started = Date.now();
      const r = await restoreDisk(repo, pool, disk, args[1]!, {
        force: v.force === true,
        format,
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
          format,
          size: r.size,
          bytesWritten: r.bytesWritten,
          chunks: r.chunks,
          durationMs: ms,
        },
        () =>
          `restored ${point.id} (${point.name}, ${formatBytes(r.size)}) to ${r.target}: ` +
          `wrote ${formatBytes(r.bytesWritten)} in ${formatDuration(ms / 1000)}`,
      );
    } finally {
      bar.done();
      await ctx.releasePool(pool);
    }
  });
  return 0;
};

/** The target format: `--format`, else qcow2 for a `.qcow2` name, else raw. */
function targetFormat(target: string, given: string | undefined): 'raw' | 'qcow2' {
  if (given === undefined) return /\.qcow2$/i.test(target) ? 'qcow2' : 'raw';
  if (given === 'raw' || given === 'qcow2') return given;
  throw new VmvaultError('E_USAGE', `restore writes raw or qcow2, not '${given}'`, {
    hint: 'use --format raw or --format qcow2 (convert other formats with qemu-img convert)',
  });
}
