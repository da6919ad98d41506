import { formatBytes, formatDuration, parseBytes, VmvaultError } from '../../core/index.js';
import { startLiveServer } from '../../live/index.js';
import { recoverDisk, type RecoveryServe } from '../../recovery/index.js';
import { CodecPool, type DiskRecord, type Repository, type RestorePoint } from '../../repository/index.js';
import type { CommandRun } from '../command.js';
import type { Context } from '../context.js';
import { resolvePointDisk } from '../point-disk.js';

/** Runs `vmvault recover` (its options and help: `recoverSpec` in specs.ts). */
export const run: CommandRun = async (ctx, args, v, passthrough = []) => {
  if (args.length !== 1) throw new VmvaultError('E_USAGE', 'recover takes one restore point id');
  const target = v.to as string | undefined;
  if (!target)
    throw new VmvaultError('E_USAGE', 'recover needs --to TARGET (a raw file, qcow2 image or device)');
  const format = v.format as string | undefined;
  if (format !== undefined && format !== 'raw' && format !== 'qcow2') {
    throw new VmvaultError('E_USAGE', `--format takes raw or qcow2, not ${format}`);
  }
  const accel = v.accel as string | undefined;
  if (accel !== undefined && accel !== 'tcg' && accel !== 'kvm') {
    throw new VmvaultError('E_USAGE', `--accel takes tcg or kvm, not ${accel}`);
  }
  const delayText = v['reconnect-delay'] as string | undefined;
  const reconnectDelay = delayText === undefined ? undefined : Number(delayText);
  if (reconnectDelay !== undefined && !(Number.isInteger(reconnectDelay) && reconnectDelay >= 0)) {
    throw new VmvaultError('E_USAGE', `--reconnect-delay takes whole seconds, not ${delayText}`);
  }
  const bandwidth = v.bandwidth === undefined ? undefined : parseBytes(v.bandwidth as string);
  ctx.prestartPool();
  await ctx.withRepo('shared', `recover ${args[0]}`, async (repo) => {
    const { point, disk } = await resolvePointDisk(repo, args[0]!, v.disk as string | undefined);
    const pool = new CodecPool(repo);
    const bar = ctx.progress(`recover ${point.id.slice(0, 8)}`);
    const say = (m: string): void => {
      if (!ctx.opts.quiet && !ctx.json) {
        bar.done();
        process.stderr.write(`${m}\n`);
      }
    };
    try {
      const r = await recoverDisk(repo, pool, point, disk, {
        target,
        format: format as 'raw' | 'qcow2' | undefined,
        force: v.force === true,
        stateDir: v['state-dir'] as string | undefined,
        qemuArgs: passthrough.length > 0 ? passthrough : undefined,
        accel: accel as 'tcg' | 'kvm' | undefined,
        bytesPerSecond: bandwidth,
        reconnectDelay,
        serve: servePoint(ctx, repo, pool, point, disk),
        onNotice: say,
        onPhase: (phase) => {
          if (phase === 'switching') say('all data is on the target; moving the running VM onto it');
        },
        onProgress: (p) =>
          p.phase === 'copying'
            ? bar.update(p.done, p.total, 'relocated')
            : bar.update(p.done, Math.max(1, p.total), 'guest writes'),
      });
      bar.done();
      ctx.out(
        { ...r, id: point.id, name: point.name },
        () =>
          `recovered ${point.id} (${point.name}, ${disk.name}, ${formatBytes(disk.size)}) to ${r.target}` +
          `${r.resumed ? ' (resumed)' : ''}: VM running since ${formatDuration(r.startMs / 1000)}, ` +
          `copied ${formatBytes(r.bytesWritten)} in ${formatDuration(r.copyMs / 1000)}, ` +
          `switched in ${formatDuration(r.switchMs / 1000)}\n` +
          `the VM (pid ${r.qemuPid ?? '?'}) now runs on ${r.target}; its QMP monitor: ${r.qmpSocket}`,
      );
    } finally {
      bar.done();
      await pool.close();
    }
  });
  return 0;
};

/** The live mount a recovering VM boots from (with block priorities and boot traces). */
function servePoint(
  ctx: Context,
  repo: Repository,
  pool: CodecPool,
  point: RestorePoint,
  disk: DiskRecord,
): RecoveryServe {
  return async (socketPath, exportName) =>
    startLiveServer({
      repo,
      pool,
      point,
      disk,
      listen: { socketPath },
      exportName,
      traces: ctx.traceStore(repo),
      onError: (err, where) => {
        if (!ctx.opts.quiet && !ctx.json)
          process.stderr.write(`vmvault: nbd ${where}: ${(err as Error).message}\n`);
      },
    });
}
