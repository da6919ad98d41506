import { VmvaultError } from '../../core/index.js';
import type { CommandRun } from '../command.js';

/** Runs `vmvault forget` (its options and help: `forgetSpec` in specs.ts). */
export const run: CommandRun = async (ctx, args) => {
  if (args.length === 0) throw new VmvaultError('E_USAGE', 'forget takes one or more restore point ids');
  return ctx.withRepo(
    'shared',
    'forget',
    async (repo) => {
      const points = await Promise.all(args.map((a) => repo.resolvePoint(a)));
      for (const p of points) await repo.deletePoint(p.id);
      (await ctx.openCatalog(repo)).close();
      ctx.out({ removed: points.map((p) => p.id) }, () =>
        points.map((p) => `removed ${p.id} (${p.name}, ${p.time})`).join('\n'),
      );
      return 0;
    },
    false,
  );
};
