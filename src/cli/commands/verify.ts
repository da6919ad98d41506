import { formatBytes } from '../../core/index.js';
import { type VerifyReport, verifyRepository } from '../../repository/index.js';
import type { CommandRun } from '../command.js';

function describe(r: VerifyReport): string {
  const head = `checked ${r.pointsChecked} restore point(s), ${r.chunksChecked} chunks, ${formatBytes(r.bytesChecked)} in ${r.packsChecked} packs`;
  if (r.damaged.length === 0 && r.problems.length === 0) return `${head}: no problems found`;
  const lines = [`${head}: ${r.problems.length} problem(s)`];
  for (const p of r.problems.slice(0, 20)) lines.push(`  ${p.code}: ${p.message}`);
  if (r.problems.length > 20) lines.push(`  … ${r.problems.length - 20} more`);
  for (const d of r.damaged)
    lines.push(`damaged restore point ${d.id} (${d.name}, ${d.time}): ${d.problems} bad chunk(s)`);
  return lines.join('\n');
}

/** Runs `vmvault verify` (its options and help: `verifySpec` in specs.ts). */
export const run: CommandRun = async (ctx, args) => {
  ctx.prestartPool();
  const r = await ctx.withRepo('shared', 'verify', async (repo) => {
    const pool = await ctx.codecPool(repo);
    const bar = ctx.progress('verify');
    try {
      const points =
        args.length > 0 ? await Promise.all(args.map((a) => repo.resolvePoint(a))) : await repo.listPoints();
      return await verifyRepository(repo, pool, points, (p) => bar.update(p.done, p.total));
    } finally {
      bar.done();
      await ctx.releasePool(pool);
    }
  });
  ctx.out(r, () => describe(r));
  if (r.damaged.length > 0 || r.problems.length > 0) {
    const names = r.damaged.map((d) => d.id.slice(0, 8)).join(', ');
    process.stderr.write(
      `vmvault: verify found ${r.problems.length} problem(s)${names ? `; damaged restore points: ${names}` : ''}; ` +
        'restore from another restore point, or back the disk up again\n',
    );
    return 3;
  }
  return 0;
};
