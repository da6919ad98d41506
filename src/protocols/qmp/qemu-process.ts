/**
 * Starting and stopping `qemu-storage-daemon` and `qemu-system-x86_64` with a QMP monitor on a
 * unix socket. Readiness: the pidfile appears (QEMU writes it once set up) and the monitor
 * answers. On any start-up failure the process is killed before the error is thrown.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { QmpClient } from './qmp-client.js';
import { exitedEarly, type ExitStatus, type ManagedProcess, spawnManaged, waitForPath } from './process.js';

/** Escapes a value for QEMU's key=value option syntax (commas are doubled). */
export function qemuOptValue(v: string): string {
  return v.replaceAll(',', ',,');
}

/** A running QEMU process with a connected QMP client. */
export interface QemuHandle {
  readonly process: ManagedProcess;
  /** Path of the QMP unix socket. */
  readonly qmpSocket: string;
  /** Connected QMP client (negotiated). */
  readonly qmp: QmpClient;
  /**
   * Stops QEMU: QMP `quit`, then SIGTERM, then SIGKILL, each after `graceMs` (default 3 s).
   * Closes the QMP client. Safe to call more than once.
   */
  stop(options?: { graceMs?: number }): Promise<ExitStatus>;
}

/** Options of {@link startStorageDaemon}. */
export interface StorageDaemonOptions {
  /** Directory for the QMP socket and pidfile (must exist; short path: sockets max 107 bytes). */
  dir: string;
  /** `--blockdev` JSON objects (`BlockdevOptions`). */
  blockdevs?: Record<string, unknown>[];
  /** Start the NBD server on this unix socket path or TCP address. */
  nbdServer?: { path: string } | { host: string; port: number };
  /** `--export` JSON objects (`BlockExportOptions`). */
  exports?: Record<string, unknown>[];
  /** Extra raw arguments. */
  extraArgs?: string[];
  /** Start-up limit (default 10 s). */
  readyTimeoutMs?: number;
  /** Binary (default `qemu-storage-daemon`). */
  binary?: string;
}

/**
 * Starts `qemu-storage-daemon` with the given nodes, NBD server and exports, plus a QMP monitor
 * on `<dir>/qsd-qmp.sock`; ready when `<dir>/qsd.pid` appears and QMP is negotiated.
 */
export async function startStorageDaemon(options: StorageDaemonOptions): Promise<QemuHandle> {
  const qmpSocket = join(options.dir, 'qsd-qmp.sock');
  const pidfile = join(options.dir, 'qsd.pid');
  await rm(pidfile, { force: true });
  const args: string[] = [];
  for (const b of options.blockdevs ?? []) args.push('--blockdev', JSON.stringify(b));
  if (options.nbdServer) {
    const a = options.nbdServer;
    args.push(
      '--nbd-server',
      'path' in a
        ? `addr.type=unix,addr.path=${qemuOptValue(a.path)}`
        : `addr.type=inet,addr.host=${qemuOptValue(a.host)},addr.port=${a.port}`,
    );
  }
  for (const e of options.exports ?? []) args.push('--export', JSON.stringify(e));
  args.push(
    '--chardev',
    `socket,id=vmvault_qmp,path=${qemuOptValue(qmpSocket)},server=on,wait=off`,
    '--monitor',
    'chardev=vmvault_qmp',
    '--pidfile',
    pidfile,
    ...(options.extraArgs ?? []),
  );
  const proc = await spawnManaged(options.binary ?? 'qemu-storage-daemon', args, {
    name: 'qemu-storage-daemon',
  });
  return finishStart(proc, qmpSocket, pidfile, options.readyTimeoutMs ?? 10_000);
}

/** Options of {@link startQemuSystem}. */
export interface QemuSystemOptions {
  /** Directory for the QMP socket and pidfile (must exist; keep the path short). */
  dir: string;
  /** Accelerator (default `tcg`). Use `probeKvm()` to decide whether `kvm` is safe. */
  accel?: 'tcg' | 'kvm';
  /** Guest RAM in MiB (default 256). */
  memoryMiB?: number;
  /** vCPUs (default 1). */
  smp?: number;
  /** Machine type (default QEMU's, `pc`). */
  machine?: string;
  /** Direct kernel boot. */
  kernel?: string;
  initrd?: string;
  append?: string;
  /** `-blockdev` JSON objects. */
  blockdevs?: Record<string, unknown>[];
  /** `-chardev` option strings. */
  chardevs?: string[];
  /** `-device` option strings, e.g. `virtio-blk-pci,drive=disk0,id=vda`. */
  devices?: string[];
  /**
   * Serial port: `{file}` writes it to a file, `{chardev}` attaches an existing `-chardev` id,
   * `{socket}` connects as a client to a unix socket the caller listens on; default: none.
   */
  serial?: { file: string } | { chardev: string } | { socket: string };
  /** VM name (`-name`). */
  name?: string;
  /** Start with the CPUs stopped (`-S`). */
  paused?: boolean;
  extraArgs?: string[];
  /** Start-up limit (default 15 s). */
  readyTimeoutMs?: number;
  /** Binary (default `qemu-system-x86_64`). */
  binary?: string;
}

/** Builds the qemu-system argument list for {@link startQemuSystem} (exported for tests and logs). */
export function qemuSystemArgs(options: QemuSystemOptions, qmpSocket: string, pidfile: string): string[] {
  const args = ['-nodefaults', '-nographic', '-no-user-config', '-accel', options.accel ?? 'tcg'];
  if (options.machine) args.push('-machine', options.machine);
  args.push('-m', String(options.memoryMiB ?? 256), '-smp', String(options.smp ?? 1));
  if (options.name) args.push('-name', qemuOptValue(options.name));
  if (options.kernel) args.push('-kernel', options.kernel);
  if (options.initrd) args.push('-initrd', options.initrd);
  if (options.append !== undefined) args.push('-append', options.append);
  for (const c of options.chardevs ?? []) args.push('-chardev', c);
  const serial = options.serial;
  if (!serial) args.push('-serial', 'none');
  else if ('file' in serial) args.push('-serial', `file:${serial.file}`);
  else if ('chardev' in serial) args.push('-serial', `chardev:${serial.chardev}`);
  else
    args.push(
      '-chardev',
      `socket,id=vmvault_serial,path=${qemuOptValue(serial.socket)}`,
      '-serial',
      'chardev:vmvault_serial',
    );
  for (const b of options.blockdevs ?? []) args.push('-blockdev', JSON.stringify(b));
  for (const d of options.devices ?? []) args.push('-device', d);
  args.push('-qmp', `unix:${qmpSocket},server=on,wait=off`, '-pidfile', pidfile);
  if (options.paused) args.push('-S');
  args.push(...(options.extraArgs ?? []));
  return args;
}

/** Starts `qemu-system-x86_64` with `-qmp unix:<dir>/qemu-qmp.sock`; ready when QMP is negotiated. */
export async function startQemuSystem(options: QemuSystemOptions): Promise<QemuHandle> {
  const qmpSocket = join(options.dir, 'qemu-qmp.sock');
  const pidfile = join(options.dir, 'qemu.pid');
  await rm(pidfile, { force: true });
  const args = qemuSystemArgs(options, qmpSocket, pidfile);
  const proc = await spawnManaged(options.binary ?? 'qemu-system-x86_64', args, {
    name: 'qemu-system-x86_64',
  });
  return finishStart(proc, qmpSocket, pidfile, options.readyTimeoutMs ?? 15_000);
}

async function finishStart(
  proc: ManagedProcess,
  qmpSocket: string,
  pidfile: string,
  timeoutMs: number,
): Promise<QemuHandle> {
  const deadline = Date.now() + timeoutMs;
  let qmp: QmpClient;
  try {
    await waitForPath(pidfile, timeoutMs, proc);
    await waitForPath(qmpSocket, Math.max(100, deadline - Date.now()), proc);
    qmp = await QmpClient.connect(
      { path: qmpSocket },
      { connectTimeoutMs: Math.max(1000, deadline - Date.now()), retryConnectMs: 2000 },
    );
  } catch (err) {
    // Died on its own during start-up: report that (with its output) rather than a timeout.
    // (QEMU may create the socket and then fail: give it a moment to exit.)
    const st = await Promise.race([
      proc.exited,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 500)),
    ]);
    await proc.stop({ graceMs: 1000 });
    if (st) throw exitedEarly(proc, st);
    throw err;
  }
  let stopping: Promise<ExitStatus> | undefined;
  const stop = (opts: { graceMs?: number } = {}): Promise<ExitStatus> => {
    stopping ??= (async () => {
      const graceMs = opts.graceMs ?? 3000;
      if (!proc.exitStatus() && qmp.connected) {
        try {
          await qmp.execute('quit', undefined, { timeoutMs: graceMs });
        } catch {
          // the socket may close before the reply: fine
        }
        await Promise.race([proc.exited, new Promise((r) => setTimeout(r, graceMs))]);
      }
      await qmp.close();
      return proc.stop({ graceMs });
    })();
    return stopping;
  };
  return { process: proc, qmpSocket, qmp, stop };
}
