import { formatBytes } from '../../core/index.js';
import { CodecPool, verifyRepository } from '../../repository/index.js';
import type { Command } from '../command.js';

export const verifyCommand: Command = {
  name: 'verify',
  summary: 're-read and check every chunk (of one restore point, or of all)',
  usage: 'verify [<id>...]',
  options: {},
  async run(ctx, args) {
    const repo = await ctx.openRepo();
    const lock = await repo.lock('shared', 'verify', ctx.lockWaitMs(), ctx.onLockWait);
    const pool = new CodecPool(repo);
    const bar = ctx.progress('verify');
    try {
      const points =
        args.length > 0 ? await Promise.all(args.map((a) => repo.resolvePoint(a))) : await repo.listPoints();
      const r = await verifyRepository(repo, pool, points, (p) => bar.update(p.done, p.total));
      bar.done();
      ctx.out(r, () => {
        const head = `checked ${r.pointsChecked} restore point(s), ${r.chunksChecked} chunks, ${formatBytes(r.bytesChecked)} in ${r.packsChecked} packs`;
        if (r.damaged.length === 0 && r.problems.length === 0) return `${head}: no problems found`;
        const lines = [`${head}: ${r.problems.length} problem(s)`];
        for (const p of r.problems.slice(0, 20)) lines.push(`  ${p.code}: ${p.message}`);
        if (r.problems.length > 20) lines.push(`  … ${r.problems.length - 20} more`);
        for (const d of r.damaged)
          lines.push(`damaged restore point ${d.id} (${d.name}, ${d.time}): ${d.problems} bad chunk(s)`);
        return lines.join('\n');
      });
      if (r.damaged.length > 0 || r.problems.length > 0) {
        const names = r.damaged.map((d) => d.id.slice(0, 8)).join(', ');
        process.stderr.write(
          `vmvault: verify found ${r.problems.length} problem(s)${names ? `; damaged restore points: ${names}` : ''}; restore from another point or re-run the backup\n`,
        );
        return 3;
      }
      return 0;
    } finally {
      bar.done();
      await pool.close();
      await lock.release();
      await repo.close();
    }
  },
};
