import { formatBytes } from '../../core/index.js';
import type { Command } from '../command.js';
import { table } from '../table.js';

export const listCommand: Command = {
  name: 'list',
  summary: 'list restore points, grouped by name',
  usage: 'list [--name NAME]',
  options: { name: { type: 'string' } },
  async run(ctx, _args, v) {
    const repo = await ctx.openRepo(false);
    try {
      const cat = await ctx.openCatalog(repo);
      const points = cat.list(v.name as string | undefined);
      cat.close();
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
    } finally {
      await repo.close();
    }
  },
};
