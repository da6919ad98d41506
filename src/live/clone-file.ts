/**
 * Clone files: a thin qcow2 whose backing file is a live mount of a restore point, so QEMU can
 * use a copy of the point at once while the data stays in the repository. Shared by `vmvault
 * clone` and the server's clone mounts (`POST /api/v1/mounts` with `clone`).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errnoCode, VmvaultError } from '../core/index.js';
import type { DiskRecord, RestorePoint } from '../repository/index.js';

/** Runs `qemu-img`; E_UNSUPPORTED when it is not installed, E_TARGET with its message otherwise. */
export function qemuImg(args: string[]): Promise<string> {
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

/** The backing spec a clone records: the live mount on `socket`, export `exportName`. */
export function cloneBackingSpec(socket: string, exportName: string): string {
  const nbd = {
    driver: 'nbd',
    server: { type: 'unix', path: socket },
    export: exportName,
    'reconnect-delay': 300,
  };
  return `json:${JSON.stringify({ driver: 'raw', file: nbd })}`;
}

/**
 * The socket a clone's backing data is served on when none is given: one per clone path, in
 * `XDG_RUNTIME_DIR` (or the temporary directory), so serving the clone again finds it.
 */
export function defaultCloneSocket(clone: string): string {
  return join(
    process.env.XDG_RUNTIME_DIR || tmpdir(),
    `vmvault-clone-${createHash('sha256').update(clone).digest('hex').slice(0, 12)}.sock`,
  );
}

/**
 * Creates the clone file `clone` of `disk` of `point`, backed by the mount on `socket` (export
 * the point id); or, when it exists, checks that it is this point's clone served there (else
 * E_TARGET). Removes a stale socket file, for the mount to listen there. `created` says which;
 * a caller that fails afterwards removes a created file.
 */
export async function prepareCloneFile(
  clone: string,
  point: RestorePoint,
  disk: DiskRecord,
  socket: string,
): Promise<{ created: boolean }> {
  if (Buffer.byteLength(socket) > 107) {
    throw new VmvaultError('E_USAGE', `socket path ${socket} is too long for a unix socket`, {
      hint: 'pass a shorter socket path',
    });
  }
  const spec = cloneBackingSpec(socket, point.id);
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
          hint: 'choose another path (or the socket it was created with)',
        },
      );
    }
    await rm(socket, { force: true }); // a stale socket of an earlier run would refuse the mount
    return { created: false };
  }
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
  await rm(socket, { force: true }); // a stale socket of an earlier run would refuse the mount
  return { created: true };
}
