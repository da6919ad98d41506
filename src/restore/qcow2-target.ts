/**
 * A thin qcow2 restore target: `qemu-img create -f qcow2` makes the image (under a temporary
 * name), a writable `qemu-nbd` that vmvault starts serves it on a private unix socket, data
 * chunks are written through {@link NbdMultiClient} (zero chunks are never written, so their
 * clusters stay unallocated), then the image is flushed, qemu-nbd stopped and the file renamed
 * into place. On failure qemu-nbd is stopped and the partial image removed.
 */
import { execFile } from 'node:child_process';
import { rename, rm } from 'node:fs/promises';
import { VmvaultError } from '../core/index.js';
import { NbdMultiClient } from '../protocols/nbd/index.js';
import { type QemuNbdServer, startQemuNbd } from '../sources/index.js';
import { checkReplaceable, type RestoreTarget, statTarget } from './restore-target.js';

function qemuImgCreate(path: string, size: number, clusterSize: number): Promise<void> {
  const args = ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${clusterSize}`, path, String(size)];
  return new Promise((resolve, reject) => {
    execFile('qemu-img', args, { timeout: 60_000 }, (err, _out, stderr) => {
      if (!err) return resolve();
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      const why = missing ? 'qemu-img is not installed' : stderr.trim().split('\n').pop();
      reject(
        new VmvaultError(
          missing ? 'E_UNSUPPORTED' : 'E_TARGET',
          `cannot create qcow2 image ${path}: ${why}`,
          {
            hint: missing
              ? 'install qemu-utils, or restore to a raw file'
              : 'check the directory and free space',
          },
        ),
      );
    });
  });
}

/** qcow2 cluster size for a chunk size: the same when qcow2 allows it (512 B – 2 MiB). */
export function qcow2ClusterSize(chunkSize: number): number {
  let c = 512;
  while (c < chunkSize && c < 2 << 20) c *= 2;
  return c;
}

/** Opens a new thin qcow2 image of `size` bytes at `target` for writing. */
export async function openQcow2Target(
  target: string,
  size: number,
  chunkSize: number,
  force: boolean,
  opts: { resume?: boolean } = {},
): Promise<RestoreTarget> {
  const st = await statTarget(target);
  if (st?.isBlockDevice()) {
    throw new VmvaultError('E_USAGE', `${target} is a block device; qcow2 restores go to files`, {
      hint: 'drop --format qcow2 to write the raw disk to the device',
    });
  }
  const tmp = `${target}.vmvault-partial`;
  const resuming = opts.resume === true && (await statTarget(tmp))?.isFile() === true;
  if (!resuming) {
    checkReplaceable(target, st, force);
    await rm(tmp, { force: true });
    await qemuImgCreate(tmp, size, qcow2ClusterSize(chunkSize));
  }
  let server: QemuNbdServer | undefined;
  let client: NbdMultiClient | undefined;
  const cleanup = async (): Promise<void> => {
    await client?.close().catch(() => {});
    await server?.stop();
  };
  try {
    server = await startQemuNbd(tmp, { format: 'qcow2', readOnly: false });
    client = await connectRetrying(server.socketPath);
  } catch (err) {
    await cleanup();
    await rm(tmp, { force: true });
    throw err instanceof VmvaultError
      ? new VmvaultError('E_TARGET', `cannot write qcow2 image ${target}: ${err.message}`, { cause: err })
      : err;
  }
  const c = client;
  return {
    needsZeros: false,
    write: (buf, offset) => c.write(offset, buf),
    writeZeros: (offset, length) => c.writeZeroes(offset, length),
    sync: () => c.flush(),
    finalize: async () => {
      await c.flush();
      await cleanup();
      const code = server?.process.exitStatus()?.code;
      if (code !== 0 && code !== undefined && code !== null) {
        throw new VmvaultError('E_TARGET', `qemu-nbd failed while writing ${target} (exit code ${code})`);
      }
      await rename(tmp, target);
    },
    abort: async (keep) => {
      await cleanup().catch(() => {});
      if (!keep) await rm(tmp, { force: true }).catch(() => {});
    },
  };
}

async function connectRetrying(socketPath: string): Promise<NbdMultiClient> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await NbdMultiClient.connect({ socketPath, exportName: '', connections: 4 });
    } catch (err) {
      if (attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
