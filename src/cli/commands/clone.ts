import { rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { formatBytes, VmvaultError } from '../../core/index.js';
import { defaultCloneSocket, prepareCloneFile, startLiveServer } from '../../live/index.js';
import { CodecPool } from '../../repository/index.js';
import type { CommandRun } from '../command.js';
import { cacheOption } from '../cache-size.js';
import { untilStopSignal } from '../signals.js';
import { resolvePointDisk } from '../point-disk.js';

/** Runs `vmvault clone` (its options and help: `cloneSpec` in specs.ts). */
export const run: CommandRun = async (ctx, args, v) => {
  if (args.length !== 2)
    throw new VmvaultError('E_USAGE', 'clone takes a restore point id and a new qcow2 path');
  const clone = resolve(args[1]!);
  const cacheBytes = cacheOption(v.cache);
  const socket = resolve((v.socket as string | undefined) ?? defaultCloneSocket(clone));
  const say = (m: string): void => {
    if (!ctx.opts.quiet && !ctx.json) process.stderr.write(`${m}\n`);
  };
  ctx.prestartPool();
  await ctx.withRepo('shared', `clone ${args[0]}`, async (repo) => {
    const { point, disk } = await resolvePointDisk(repo, args[0]!, v.disk as string | undefined);
    const { created } = await prepareCloneFile(clone, point, disk, socket);
    const pool = new CodecPool(repo);
    try {
      const server = await startLiveServer({
        repo,
        pool,
        point,
        disk,
        listen: { socketPath: socket },
        exportName: point.id,
        traces: ctx.traceStore(repo),
        cacheBytes,
        onError: (err, where) => say(`vmvault: nbd ${where}: ${(err as Error).message}`),
      });
      const stop = untilStopSignal();
      process.stdout.write(
        ctx.json
          ? `${JSON.stringify({ clone, id: point.id, disk: disk.name, size: disk.size, socket, uri: server.uri, created })}\n`
          : `${clone}\n`,
      );
      say(
        `${created ? 'created' : 'serving'} clone ${clone} of ${point.id} (${point.name}, ${disk.name}, ` +
          `${formatBytes(disk.size)}); its backing data is served from ${socket}: keep this running ` +
          'while the clone is in use (Ctrl-C to stop)',
      );
      await stop;
      await server.close();
      await rm(socket, { force: true });
    } catch (err) {
      if (created) await rm(clone, { force: true });
      throw err;
    } finally {
      await pool.close();
    }
    say('stopped; the clone is unusable until `vmvault clone` serves it again');
  });
  return 0;
};
