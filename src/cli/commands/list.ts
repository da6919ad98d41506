import type { CatalogPoint } from '../../catalog/index.js';
import { formatBytes } from '../../core/units.js';
import type { CommandRun } from '../command.js';
import type { Context } from '../context.js';
import { table } from '../table.js';

/** The points from the catalog alone when it is up to date, else after a sync with the repository. */
async function catalogPoints(ctx: Context, name: string | undefined): Promise<CatalogPoint[]> {
  const quick = await ctx.withCatalogOnly(false, (cat) => cat.list(name));
  return quick ?? ctx.withSyncedCatalog((cat) => cat.list(name));
}

/** Runs `vmvault list` (its options and help: `listSpec` in specs.ts). */
export const run: CommandRun = async (ctx, _args, v) => {
  const points = await catalogPoints(ctx, v.name as string | undefined);
  ctx.out(
    points.map((p) => ({
      id: p.id,
      name: p.name,
      time: p.time,
      hostname: p.hostname,
      size: p.size,
      bytesRead: p.bytesRead,
      bytesStored: p.bytesStored,
      durationMs: p.durationMs,
      disks: p.disks.map((d) => ({ name: d.name, size: d.size, method: d.method, source: d.source })),
    })),
    () => {
      if (points.length === 0) return 'no restore points';
      const groups = new Map<string, typeof points>();
      for (const p of points) groups.set(p.name, [...(groups.get(p.name) ?? []), p]);
      const parts: string[] = [];
      for (const [name, pts] of groups) {
        parts.push(
          `${name} (${pts.length} restore point${pts.length === 1 ? '' : 's'})\n` +
            table(
              ['  id', 'time', 'size', 'stored', 'method'],
              pts.map((p) => [
                `  ${p.id.slice(0, 8)}`,
                p.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
                formatBytes(p.size),
                formatBytes(p.bytesStored),
                p.disks.map((d) => d.method).join(','),
              ]),
            ),
        );
      }
      return parts.join('\n\n');
    },
  );
  return 0;
};
