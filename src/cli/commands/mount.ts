import { VmvaultError, formatBytes } from '../../core/index.js';
// The serving path is imported file by file, not through the subsystems' index files: those
// also pull in restores to qcow2, overlay saving and the backup pipeline, and a mount must be
// ready in well under a second. What only a writable mount needs is imported when asked for.
import { startLiveServer } from '../../live/serve.js';
import { MountOverlay } from '../../live/mount-overlay.js';
import { CodecPool } from '../../repository/codec-pool.js';
import type { CommandRun } from '../command.js';
import { cacheOption } from '../cache-size.js';
import { untilStopSignal } from '../signals.js';
import { resolvePointDisk } from '../point-disk.js';

/** Runs `vmvault mount` (its options and help: `mountSpec` in specs.ts). */
export const run: CommandRun = async (ctx, args, v) => {
  if (args.length !== 1) throw new VmvaultError('E_USAGE', 'mount takes one restore point id');
  const socketPath = v.socket as string | undefined;
  const portText = v.port as string | undefined;
  if ((socketPath === undefined) === (portText === undefined)) {
    throw new VmvaultError('E_USAGE', 'mount needs exactly one of --socket PATH or --port N');
  }
  const port = portText === undefined ? undefined : Number(portText);
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) {
    throw new VmvaultError('E_USAGE', `--port takes a TCP port number, not ${portText}`);
  }
  const cacheBytes = cacheOption(v.cache);
  const writable = v.writable === true || v.overlay !== undefined;
  if (!writable && (v['save-on-exit'] || v['keep-overlay'])) {
    throw new VmvaultError('E_USAGE', '--save-on-exit and --keep-overlay need --writable');
  }
  const say = (m: string): void => {
    if (!ctx.opts.quiet && !ctx.json) process.stderr.write(`${m}\n`);
  };
  ctx.prestartPool();
  await ctx.withRepo('shared', `mount ${args[0]}`, async (repo) => {
    const { point, disk } = await resolvePointDisk(repo, args[0]!, v.disk as string | undefined);
    // Chunks are decoded and checked on worker threads; sequential streams are read ahead.
    const pool = new CodecPool(repo);
    let mo: MountOverlay | undefined;
    try {
      if (writable) {
        mo = await MountOverlay.open(point, disk, v.overlay as string | undefined);
        if (mo.overlay.uncleanShutdown) {
          say(
            `overlay ${mo.overlay.path} was not closed cleanly last time; every write that was flushed is in it`,
          );
        }
      }
      const server = await startLiveServer({
        repo,
        pool,
        point,
        disk,
        listen:
          socketPath !== undefined
            ? { socketPath }
            : { port: port!, host: (v.host as string | undefined) ?? '127.0.0.1' },
        exportName: (v.export as string | undefined) ?? point.id,
        overlay: mo?.overlay,
        traces: v['no-trace'] ? undefined : ctx.traceStore(repo),
        cacheBytes,
        onError: (err, where) => say(`vmvault: nbd ${where}: ${(err as Error).message}`),
      });
      const stop = untilStopSignal();
      // First line of stdout: the URI (or {"uri"} with --json), so scripts can wait for it.
      process.stdout.write(
        ctx.json
          ? `${JSON.stringify({ uri: server.uri, id: point.id, disk: disk.name, size: disk.size, writable, overlay: mo?.overlay.path ?? null })}\n`
          : `${server.uri}\n`,
      );
      say(
        `serving ${point.id} (${point.name}, ${disk.name}, ${formatBytes(disk.size)}) ` +
          `${mo ? `writable, overlay ${mo.temporary ? '(temporary) ' : ''}${mo.overlay.path}` : 'read-only'}; Ctrl-C to stop`,
      );
      await stop;
      await server.close();
      const stats = server.reader.stats;
      let saved: string | undefined;
      if (mo) {
        const r = await mo.finish(repo, pool, point, {
          save: v['save-on-exit'] === true,
          keepOverlay: v['keep-overlay'] === true,
          ...(v.name !== undefined ? { name: v.name as string } : {}),
        });
        mo = undefined;
        if (r) {
          saved = r.id;
          say(`saved the overlay as restore point ${saved} (${formatBytes(r.bytesStored)} added)`);
        }
      }
      if (ctx.json) {
        process.stdout.write(
          `${JSON.stringify({
            stopped: true,
            saved: saved ?? null,
            chunkFetches: stats.chunkFetches,
            prefetched: stats.prefetched ?? 0,
            cacheHits: stats.cacheHits,
            packReads: stats.packReads ?? 0,
            queued: server.queued,
            traced: server.traced(),
          })}\n`,
        );
      }
    } finally {
      await mo?.release();
      await pool.close();
    }
    say('stopped');
  });
  return 0;
};
