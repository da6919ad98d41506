import { VmvaultError } from '../../core/index.js';
import { applyRetention, isEmptyPolicy, type RetentionPolicy } from '../../repository/index.js';
import type { CommandRun } from '../command.js';
import { PRUNE_RULES } from './specs.js';
import { table } from '../table.js';

/** Runs `vmvault prune` (its options and help: `pruneSpec` in specs.ts). */
export const run: CommandRun = async (ctx, _args, v) => {
  const policy: RetentionPolicy = {};
  for (const r of PRUNE_RULES) {
    const raw = v[`keep-${r}`];
    if (raw === undefined) continue;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0)
      throw new VmvaultError('E_USAGE', `--keep-${r} takes a whole number, not ${raw}`);
    policy[r] = n;
  }
  if (isEmptyPolicy(policy)) {
    throw new VmvaultError('E_USAGE', 'prune without a --keep-* rule would remove every restore point', {
      hint: 'give at least one of --keep-last/--keep-hourly/--keep-daily/--keep-weekly/--keep-monthly/--keep-yearly',
    });
  }
  const dryRun = v['dry-run'] === true;
  return ctx.withRepo(
    'shared',
    'prune',
    async (repo) => {
      let points = await repo.listPoints();
      const only = v.name as string | undefined;
      if (only !== undefined) points = points.filter((p) => p.name === only);
      const decisions = applyRetention(points, policy);
      const removed = decisions.filter((d) => !d.keep);
      if (!dryRun) for (const d of removed) await repo.deletePoint(d.point.id);
      if (!dryRun) (await ctx.openCatalog(repo)).close();
      ctx.out(
        {
          dryRun,
          kept: decisions
            .filter((d) => d.keep)
            .map((d) => ({ id: d.point.id, name: d.point.name, time: d.point.time, reasons: d.reasons })),
          removed: removed.map((d) => ({ id: d.point.id, name: d.point.name, time: d.point.time })),
        },
        () =>
          `${table(
            ['id', 'name', 'time', 'decision'],
            decisions.map((d) => [
              d.point.id.slice(0, 8),
              d.point.name,
              d.point.time,
              d.keep ? `keep (${d.reasons.join(', ')})` : dryRun ? 'would remove' : 'removed',
            ]),
          )}\n${dryRun ? 'dry run: nothing removed' : `removed ${removed.length} restore point(s); run 'vmvault gc' to free their space`}`,
      );
      return 0;
    },
    false,
  );
};
