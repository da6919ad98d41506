import { VmvaultError, formatBytes } from '../../core/index.js';
import type { Command } from '../command.js';
import { table } from '../table.js';

export const findCommand: Command = {
  name: 'find',
  summary: 'find files by name or path glob across every restore point',
  usage: "find <glob> [--name NAME]   (e.g. 'hosts', '*.conf', '/part1/etc/*')",
  options: { name: { type: 'string' } },
  async run(ctx, args, v) {
    if (args.length !== 1) throw new VmvaultError('E_USAGE', 'find takes one glob pattern');
    // Read-only and lock-free: manifests and the catalog are read, nothing is deleted.
    const repo = await ctx.openRepo(false);
    try {
      const cat = await ctx.openCatalog(repo);
      try {
        if (cat.unindexedPoints().length > 0) {
          // Loaded only when needed: indexing from the repository pulls in the filesystem readers.
          const { indexMissingPoints } = await import('../index-files.js');
          await indexMissingPoints(repo, cat);
        }
        const found = cat.findFiles(args[0]!, v.name as string | undefined);
        // Number the versions of each path in time order: same size and mtime = same version.
        const versions = new Map<string, Map<string, number>>();
        const rows = found.map((f) => {
          let vs = versions.get(f.path);
          if (!vs) {
            vs = new Map();
            versions.set(f.path, vs);
          }
          const key = `${f.type}:${f.size}:${f.mtimeMs}`;
          if (!vs.has(key)) vs.set(key, vs.size + 1);
          return { ...f, mtime: new Date(f.mtimeMs).toISOString(), version: vs.get(key)! };
        });
        ctx.out(rows, () =>
          rows.length === 0
            ? 'no match'
            : table(
                ['path', 'version', 'size', 'mtime', 'restore point', 'name', 'time'],
                rows.map((r) => [
                  r.path,
                  `v${r.version}`,
                  formatBytes(r.size),
                  r.mtime,
                  r.pointId.slice(0, 8),
                  r.pointName,
                  r.time,
                ]),
              ),
        );
        return 0;
      } finally {
        cat.close();
      }
    } finally {
      await repo.close();
    }
  },
};
