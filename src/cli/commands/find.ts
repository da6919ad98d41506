import type { Catalog, FoundFile } from '../../catalog/index.js';
import { VmvaultError } from '../../core/errors.js';
import { formatBytes } from '../../core/units.js';
import type { CommandRun } from '../command.js';
import type { Context } from '../context.js';
import { table } from '../table.js';

/**
 * The matches from the catalog; when it lacks points or file indexes, opens the repository,
 * syncs the catalog and indexes the missing points from the backups first.
 */
async function findInCatalog(ctx: Context, query: (cat: Catalog) => FoundFile[]): Promise<FoundFile[]> {
  // Usual case: the catalog is up to date and answers alone (no repository, no zstd, no lock).
  const quick = await ctx.withCatalogOnly(true, query);
  if (quick) return quick;
  return ctx.withSyncedCatalog(async (cat, repo) => {
    if (cat.unindexedPoints().length > 0) {
      // Loaded only when needed: indexing from the repository pulls in the filesystem readers.
      const { indexMissingPoints } = await import('../index-files.js');
      await indexMissingPoints(repo, cat);
    }
    return query(cat);
  });
}

/** Runs `vmvault find` (its options and help: `findSpec` in specs.ts). */
export const run: CommandRun = async (ctx, args, v) => {
  if (args.length !== 1) throw new VmvaultError('E_USAGE', 'find takes one glob pattern');
  const found = await findInCatalog(ctx, (cat) => cat.findFiles(args[0]!, v.name as string | undefined));
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
};
