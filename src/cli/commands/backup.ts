import { basename } from 'node:path';
import { VmvaultError, formatBytes, formatDuration } from '../../core/index.js';
import type { CommandRun } from '../command.js';

/** Runs `vmvault backup` (its options and help: `backupSpec` in specs.ts). */
export const run: CommandRun = async (ctx, args, v) => {
  if (args.length !== 1) {
    throw new VmvaultError('E_USAGE', 'backup takes one source path', {
      hint: 'vmvault backup <path> [--name NAME]',
    });
  }
  const path = args[0]!;
  // Each kind of source loads only its own modules (a VM backup needs no filesystem readers).
  if (path.startsWith('qmp:')) return (await import('./backup-vm.js')).backupVmCommand(ctx, path, v);
  const [{ latestPoint, runBackup }, { openSource }, { collectFiles, sourceReader }] = await Promise.all([
    import('../../backup/index.js'),
    import('../../sources/index.js'),
    import('../index-files.js'),
  ]);
  const name = (v.name as string | undefined) ?? basename(path);
  ctx.prestartPool();
  await ctx.withRepo('shared', `backup ${name}`, async (repo) => {
    const pool = await ctx.codecPool(repo);
    const source = await openSource(path).catch(async (err: unknown) => {
      await ctx.releasePool(pool);
      throw err;
    });
    const bar = ctx.progress(`backup ${name}`);
    try {
      await repo.recoverOrphanPacks();
      const parent = await latestPoint(repo, name);
      const wantIndex = v['no-file-index'] !== true;
      const onSkip = (vol: string, err: unknown): void => {
        if (!ctx.opts.quiet)
          process.stderr.write(`vmvault: not indexing files of ${vol}: ${(err as Error).message}\n`);
      };
      // Time spent indexing (the walk's own duration when it overlaps the backup).
      let indexMs = 0;
      const walk = () => {
        const t0 = Date.now();
        return collectFiles(
          [{ disk: { name: 'disk0', chunkSize: repo.config.chunkSize }, reader: sourceReader(source) }],
          onSkip,
        ).finally(() => {
          indexMs += Date.now() - t0;
        });
      };
      // A first backup reads everything and keeps the workers busy for long: walk the source's
      // filesystems for the file index meanwhile (the main thread is mostly idle). Later
      // backups decide afterwards: an unchanged disk inherits its parent's index.
      const early = wantIndex && !parent ? walk() : null;
      const r = await runBackup(repo, pool, [{ name: 'disk0', source }], {
        name,
        parent,
        tags: (v.tag as string[] | undefined) ?? [],
        onProgress: (p) => bar.update(p.done, p.total),
      });
      bar.done();
      const cat = await ctx.openCatalog(repo);
      let filesIndexed = 0;
      try {
        if (wantIndex) {
          const unchanged = parent && parent.disks[0]?.root === r.point.disks[0]!.root;
          const t0 = Date.now();
          const copied = unchanged ? cat.copyFiles(parent.id, r.point.id) : null;
          if (copied !== null) indexMs += Date.now() - t0;
          filesIndexed = copied ?? cat.setFiles(r.point.id, early ? await early : await walk());
        }
      } finally {
        cat.close();
      }
      const fileIndexMs = indexMs;
      const d = r.point.disks[0]!;
      ctx.out(
        {
          id: r.point.id,
          name: r.point.name,
          time: r.point.time,
          size: d.size,
          bytesRead: r.bytesRead,
          bytesStored: r.bytesStored,
          durationMs: r.point.durationMs,
          method: d.method,
          reason: d.reason,
          chunks: { new: d.stats.chunksNew, reused: d.stats.chunksReused, zero: d.stats.chunksZero },
          filesIndexed,
          fileIndexMs,
        },
        () =>
          `restore point ${r.point.id} of ${name}: ${formatBytes(d.size)} disk, read ${formatBytes(r.bytesRead)}, ` +
          `stored ${formatBytes(r.bytesStored)} (${d.stats.chunksNew} new, ${d.stats.chunksReused} reused, ` +
          `${d.stats.chunksZero} zero chunks) in ${formatDuration(r.point.durationMs / 1000)}`,
      );
    } finally {
      bar.done();
      await ctx.releasePool(pool);
      await source.close();
    }
  });
  return 0;
};
