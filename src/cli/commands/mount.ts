import { once } from 'node:events';
import { VmvaultError, formatBytes } from '../../core/index.js';
import { formatNbdUri, NbdServer } from '../../protocols/nbd/index.js';
import { CodecPool } from '../../repository/index.js';
import { PointExport, PointReader } from '../../restore/index.js';
import type { Command } from '../command.js';

export const mountCommand: Command = {
  name: 'mount',
  summary: 'serve a restore point read-only over NBD until interrupted',
  usage: 'mount <id> (--socket PATH | --port N [--host 127.0.0.1]) [--disk NAME] [--export NAME]',
  options: {
    socket: { type: 'string' },
    port: { type: 'string' },
    host: { type: 'string' },
    disk: { type: 'string' },
    export: { type: 'string' },
  },
  async run(ctx, args, v) {
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
    await ctx.withRepo('shared', `mount ${args[0]}`, async (repo) => {
      const point = await repo.resolvePoint(args[0]!);
      const diskName = v.disk as string | undefined;
      const disk = diskName ? point.disks.find((d) => d.name === diskName) : point.disks[0];
      if (!disk) throw new VmvaultError('E_NOT_FOUND', `restore point ${point.id} has no disk ${diskName}`);
      // Chunks are decoded and checked on worker threads; sequential streams are read ahead.
      const pool = new CodecPool(repo);
      const reader = new PointReader(repo, disk, { pool });
      try {
        const exportName = (v.export as string | undefined) ?? point.id;
        const server = new NbdServer({
          onError: (err, where) => {
            if (!ctx.opts.quiet) process.stderr.write(`vmvault: nbd ${where}: ${(err as Error).message}\n`);
          },
        });
        server.addExport(exportName, new PointExport(reader, `${point.name} ${point.time} ${disk.name}`));
        const addr = await server.listen(
          socketPath !== undefined
            ? { socketPath }
            : { port: port!, host: (v.host as string | undefined) ?? '127.0.0.1' },
        );
        const uri = formatNbdUri({
          exportName,
          ...(addr.socketPath !== undefined
            ? { socketPath: addr.socketPath }
            : { host: addr.host!, port: addr.port! }),
        });
        // First line of stdout: the URI (or {"uri"} with --json), so scripts can wait for it.
        process.stdout.write(
          ctx.json
            ? `${JSON.stringify({ uri, id: point.id, disk: disk.name, size: disk.size })}\n`
            : `${uri}\n`,
        );
        if (!ctx.opts.quiet && !ctx.json) {
          process.stderr.write(
            `serving ${point.id} (${point.name}, ${disk.name}, ${formatBytes(disk.size)}) read-only; Ctrl-C to stop\n`,
          );
        }
        const stop = await Promise.race([once(process, 'SIGINT'), once(process, 'SIGTERM')]);
        void stop;
        await server.close();
      } finally {
        await pool.close();
      }
      if (!ctx.opts.quiet && !ctx.json) process.stderr.write('stopped\n');
    });
    return 0;
  },
};
