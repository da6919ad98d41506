import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { errnoCode, formatBytes, VmvaultError } from '../../core/index.js';
import { startLiveServer, TraceStore } from '../../live/index.js';
import { CodecPool } from '../../repository/index.js';
import type { CommandRun } from '../command.js';
import { untilStopSignal } from '../signals.js';
import { resolvePointDisk } from '../point-disk.js';

function qemuImg(args: string[]): Promise<string> {
  return new Promise((res, rej) => {
    execFile('qemu-img', args, { timeout: 60_000 }, (err, out, stderr) => {
      if (!err) return res(out);
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      rej(
        new VmvaultError(
          missing ? 'E_UNSUPPORTED' : 'E_TARGET',
          `qemu-img ${args[0]}: ${missing ? 'not installed' : stderr.trim()}`,
          {
            hint: missing ? 'install qemu-utils' : undefined,
          },
        ),
      );
    });
  });
}

/** The backing spec a clone records: the live mount on `socket`, export `id`. */
function backingSpec(socket: string, id: string): string {
  const nbd = { driver: 'nbd', server: { type: 'unix', path: socket }, export: id, 'reconnect-delay': 300 };
  return `json:${JSON.stringify({ driver: 'raw', file: nbd })}`;
}

/** Runs `vmvault clone` (its options and help: `cloneSpec` in specs.ts). */
export const run: CommandRun = async (ctx, args, v) => {
  if (args.length !== 2)
    throw new VmvaultError('E_USAGE', 'clone takes a restore point id and a new qcow2 path');
  const clone = resolve(args[1]!);
  const socket = resolve(
    (v.socket as string | undefined) ??
      join(
        process.env.XDG_RUNTIME_DIR || tmpdir(),
        `vmvault-clone-${createHash('sha256').update(clone).digest('hex').slice(0, 12)}.sock`,
      ),
  );
  if (Buffer.byteLength(socket) > 107) {
    throw new VmvaultError('E_USAGE', `socket path ${socket} is too long for a unix socket`, {
      hint: 'pass a shorter --socket PATH',
    });
  }
  const say = (m: string): void => {
    if (!ctx.opts.quiet && !ctx.json) process.stderr.write(`${m}\n`);
  };
  await ctx.withRepo('shared', `clone ${args[0]}`, async (repo) => {
    const { point, disk } = await resolvePointDisk(repo, args[0]!, v.disk as string | undefined);
    const spec = backingSpec(socket, point.id);
    let created = false;
    const existing = await stat(clone).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return null;
      throw err;
    });
    if (existing) {
      // Serve an existing clone again, but only our own clone of this point.
      const info = JSON.parse(await qemuImg(['info', '-U', '--output=json', clone])) as {
        format?: string;
        'backing-filename'?: string;
      };
      if (info.format !== 'qcow2' || info['backing-filename'] !== spec) {
        throw new VmvaultError(
          'E_TARGET',
          `${clone} exists and is not a clone of ${point.id} served at ${socket}`,
          {
            hint: 'choose another path (or the --socket it was created with)',
          },
        );
      }
    } else {
      let cluster = 512;
      while (cluster < disk.chunkSize && cluster < 2 << 20) cluster *= 2;
      await qemuImg([
        'create',
        '-q',
        '-f',
        'qcow2',
        '-o',
        `cluster_size=${cluster}`,
        '-F',
        'raw',
        '-b',
        spec,
        '-u',
        clone,
        String(disk.size),
      ]);
      created = true;
    }
    const pool = new CodecPool(repo);
    try {
      await rm(socket, { force: true });
      const server = await startLiveServer({
        repo,
        pool,
        point,
        disk,
        listen: { socketPath: socket },
        exportName: point.id,
        traces: new TraceStore(join(dirname(ctx.catalogPath(repo)), 'traces')),
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
