import { basename } from 'node:path';
import { runBackup } from '../../backup/index.js';
import { VmvaultError, formatBytes, formatDuration } from '../../core/index.js';
import { CodecPool } from '../../repository/index.js';
import { openSource } from '../../sources/index.js';
import type { Command } from '../command.js';
import { collectFiles, sourceReader } from '../index-files.js';
import { backupVmCommand, VM_BACKUP_OPTIONS } from './backup-vm.js';

export const backupCommand: Command = {
  name: 'backup',
  summary:
    'back up a disk image (raw, qcow2, vmdk…), a block device, an NBD export or a running VM (qmp:SOCKET)',
  usage:
    'backup <path> [--name NAME] [--tag TAG]... [--no-file-index]\n  backup qmp:<socket> [--name NAME] [--guest-agent PATH | --no-guest-agent] [--freeze-timeout S] [--disk NODE]... [--nbd-socket PATH] [--scratch-dir DIR]',
  options: {
    name: { type: 'string' },
    tag: { type: 'string', multiple: true },
    'no-file-index': { type: 'boolean' },
    ...VM_BACKUP_OPTIONS,
  },
  async run(ctx, args, v) {
    if (args.length !== 1) {
      throw new VmvaultError('E_USAGE', 'backup takes one source path', {
        hint: 'vmvault backup <path> [--name NAME]',
      });
    }
    const path = args[0]!;
    if (path.startsWith('qmp:')) return backupVmCommand(ctx, path, v);
    const name = (v.name as string | undefined) ?? basename(path);
    await ctx.withRepo('shared', `backup ${name}`, async (repo) => {
      const source = await openSource(path);
      const pool = new CodecPool(repo);
      const bar = ctx.progress(`backup ${name}`);
      try {
        await repo.recoverOrphanPacks();
        // The file index reads filesystem metadata from the source while the backup runs: the
        // main thread is mostly idle then (workers hash and compress), so it costs little time.
        const indexStarted = Date.now();
        let indexMs = 0;
        const indexing =
          v['no-file-index'] === true
            ? null
            : collectFiles(
                [{ disk: { name: 'disk0', chunkSize: repo.config.chunkSize }, reader: sourceReader(source) }],
                (vol, err) => {
                  if (!ctx.opts.quiet)
                    process.stderr.write(
                      `vmvault: not indexing files of ${vol}: ${(err as Error).message}\n`,
                    );
                },
              ).finally(() => {
                indexMs = Date.now() - indexStarted;
              });
        const r = await runBackup(repo, pool, [{ name: 'disk0', source }], {
          name,
          tags: (v.tag as string[] | undefined) ?? [],
          onProgress: (p) => bar.update(p.done, p.total),
        });
        bar.done();
        const records = indexing ? await indexing : [];
        const cat = await ctx.openCatalog(repo);
        let filesIndexed = 0;
        try {
          if (indexing) filesIndexed = cat.setFiles(r.point.id, records);
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
        await pool.close();
        await source.close();
      }
    });
    return 0;
  },
};
