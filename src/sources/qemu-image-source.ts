/**
 * Disk images in any format QEMU opens (qcow2, vmdk, vhdx, vdi, ...). The format is detected
 * with `qemu-img info`; the image is then served read-only by a `qemu-nbd` that vmvault starts
 * on a unix socket in a private temporary directory and always stops: on close, on errors, on
 * SIGINT/SIGTERM/SIGHUP of vmvault, and — because it is started without `--persistent` — by
 * itself when vmvault's connections go away (even after SIGKILL). Reads go through
 * {@link NbdSource}: multi-conn, `base:allocation`, several requests in flight.
 */
import { rmSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isVmvaultError, VmvaultError } from '../core/index.js';
import { type ManagedProcess, spawnManaged, waitForPath } from '../protocols/qmp/index.js';
import { MappedImageSource, mapQcow2, spansFromMap } from './mapped-image.js';
import { NbdSource } from './nbd-source.js';
import { lastLine, runTool } from './qemu-tools.js';

/** What `qemu-img info` says about an image. */
export interface ImageInfo {
  format: string;
  virtualSize: number;
  backingFilename?: string;
  /** Whether the image is encrypted (qcow2 with LUKS, for example). */
  encrypted?: boolean;
  /** External data file of a qcow2 image. */
  dataFile?: string;
}

/** Hint for QEMU's image-lock failure. */
function lockHint(message: string): string | undefined {
  return /lock/i.test(message)
    ? 'a running VM uses the image: back it up with "vmvault backup qmp:SOCKET" or shut the VM down'
    : undefined;
}

/** Detects the format and virtual size of `path` with `qemu-img info --output=json`. */
export async function probeImage(path: string): Promise<ImageInfo> {
  const r = await runTool('qemu-img', ['info', '--output=json', path]);
  if (r.code !== 0) {
    const why = lastLine(r.stderr);
    throw new VmvaultError('E_SOURCE', `cannot open image ${path}: ${why}`, {
      hint: lockHint(why) ?? 'check that the file is a complete disk image',
    });
  }
  const j = JSON.parse(r.stdout) as {
    format?: string;
    'virtual-size'?: number;
    'backing-filename'?: string;
    encrypted?: boolean;
    'format-specific'?: { data?: { 'data-file'?: string } };
  };
  if (typeof j.format !== 'string' || typeof j['virtual-size'] !== 'number') {
    throw new VmvaultError('E_SOURCE', `qemu-img info gave no format or size for ${path}`);
  }
  const dataFile = j['format-specific']?.data?.['data-file'];
  return {
    format: j.format,
    virtualSize: j['virtual-size'],
    ...(j['backing-filename'] ? { backingFilename: j['backing-filename'] } : {}),
    ...(j.encrypted ? { encrypted: true } : {}),
    ...(typeof dataFile === 'string' ? { dataFile } : {}),
  };
}

/**
 * Checks a qcow2 image's metadata (`qemu-img check`): a truncated or damaged image would
 * otherwise read as zeros where its clusters are missing. Leaked clusters are harmless.
 */
async function checkQcow2(path: string): Promise<void> {
  const r = await runTool('qemu-img', ['check', '--output=json', '-f', 'qcow2', path], 600_000);
  if (r.code === 0 || r.code === 3) return; // 3 = only leaked clusters
  let detail = lastLine(r.stderr);
  try {
    const j = JSON.parse(r.stdout) as { corruptions?: number; 'check-errors'?: number };
    if (j.corruptions) detail = `${j.corruptions} corrupt or missing clusters`;
    else if (j['check-errors']) detail = `${j['check-errors']} errors while checking`;
  } catch {
    // no JSON: keep stderr
  }
  throw new VmvaultError('E_SOURCE', `qcow2 image ${path} is damaged (${detail})`, {
    hint:
      lockHint(detail) ??
      'run "qemu-img check" on it; repair a copy with "qemu-img check -r all" before backing it up',
  });
}

/** A `qemu-nbd` started by vmvault, and how to stop it. */
export interface QemuNbdServer {
  /** Unix socket it listens on. */
  readonly socketPath: string;
  /** `nbd+unix` URI of its export. */
  readonly uri: string;
  readonly process: ManagedProcess;
  /** Stops it (SIGTERM, then SIGKILL) and removes its directory. Safe to call more than once. */
  stop(): Promise<void>;
}

/** Options of {@link startQemuNbd}. */
export interface QemuNbdOptions {
  /** Image format (never probed by qemu-nbd). */
  format: string;
  /** Serve read-only (default true). */
  readOnly?: boolean;
  /** Connections allowed at once (default 8). */
  shared?: number;
  /** Start-up limit (default 15 s). */
  readyTimeoutMs?: number;
}

// Servers alive in this process, stopped on SIGINT/SIGTERM/SIGHUP before vmvault dies.
const running = new Set<QemuNbdServer>();
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
let guarded = false;

function onSignal(sig: NodeJS.Signals): void {
  for (const s of running) {
    try {
      s.process.child.kill('SIGTERM');
    } catch {
      // already gone
    }
    rmSync(join(s.socketPath, '..'), { recursive: true, force: true });
  }
  running.clear();
  unguard();
  // Nobody else handles this signal: die of it, as the default action would have.
  if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
}

function guard(): void {
  if (guarded) return;
  guarded = true;
  for (const s of SIGNALS) process.on(s, onSignal);
}

function unguard(): void {
  if (!guarded) return;
  guarded = false;
  for (const s of SIGNALS) process.off(s, onSignal);
}

/**
 * Starts `qemu-nbd` on `image` on a unix socket in a fresh private directory and waits until it
 * listens. It is started without `--persistent`: it exits when its last client disconnects.
 */
export async function startQemuNbd(image: string, opts: QemuNbdOptions): Promise<QemuNbdServer> {
  const dir = await mkdtemp(join(tmpdir(), 'vmvault-nbd-'));
  const socketPath = join(dir, 'nbd.sock');
  // qemu-nbd writes its pid file only once the socket listens: the socket file itself appears
  // at bind(), a moment before listen(), when a connection is still refused.
  const pidFile = join(dir, 'qemu-nbd.pid');
  const args = [
    `--format=${opts.format}`,
    `--socket=${socketPath}`,
    `--pid-file=${pidFile}`,
    `--shared=${opts.shared ?? 8}`,
    '--cache=writeback',
    '--aio=threads',
    ...(opts.readOnly === false ? ['--detect-zeroes=off'] : ['--read-only']),
    image,
  ];
  let proc: ManagedProcess;
  try {
    proc = await spawnManaged('qemu-nbd', args, { name: 'qemu-nbd' });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  let stopping: Promise<void> | undefined;
  const server: QemuNbdServer = {
    socketPath,
    uri: `nbd+unix:///?socket=${socketPath}`,
    process: proc,
    stop: () => {
      stopping ??= (async () => {
        running.delete(server);
        if (running.size === 0) unguard();
        // Without --persistent it usually exits on its own once we disconnect.
        await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 200))]);
        await proc.stop({ graceMs: 2000 });
        await rm(dir, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
  running.add(server);
  guard();
  try {
    await waitForPath(pidFile, opts.readyTimeoutMs ?? 15_000, proc);
  } catch (err) {
    const st = await Promise.race([
      proc.exited,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 300)),
    ]);
    await server.stop();
    const why = st ? lastLine(proc.output()) : (err as Error).message;
    throw new VmvaultError('E_SOURCE', `qemu-nbd cannot serve ${image} (${opts.format}): ${why}`, {
      cause: err,
      hint: lockHint(why) ?? 'check the image with "qemu-img check"',
    });
  }
  return server;
}

/** Connects to a freshly started server, retrying briefly while it starts listening. */
async function connectRetrying(server: QemuNbdServer, image: string, format: string): Promise<NbdSource> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await NbdSource.connect(
        { socketPath: server.socketPath, exportName: '' },
        { kind: 'qemu-image', format, path: image, onClose: () => server.stop() },
      );
    } catch (err) {
      if (attempt >= 20 || server.process.exitStatus() || !isVmvaultError(err, 'E_SOURCE')) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/**
 * Whether qcow2 images may be read directly from their file where `qemu-img map` allows (see
 * `mapped-image.ts`). On unless the environment sets `VMVAULT_IMAGE_DIRECT=0` (benchmarks use
 * that to measure the NBD-only path).
 */
export function directReadsEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.VMVAULT_IMAGE_DIRECT !== '0';
}

/**
 * Opens an image of `format` through qemu-nbd (a qcow2 is checked with `qemu-img check` while
 * qemu-nbd starts; no data is read before the check passed). When
 * `info` is given (from {@link probeImage}) the served size must match its virtual size. A plain
 * qcow2 is then read directly from its file wherever its map allows ({@link MappedImageSource}),
 * the rest over NBD. The returned source stops qemu-nbd when closed.
 */
export async function openQemuImage(
  path: string,
  format: string,
  info?: ImageInfo,
): Promise<NbdSource | MappedImageSource> {
  // The check and qemu-nbd's start-up overlap; nothing is read before the check passed.
  const checked = format === 'qcow2' ? checkQcow2(path) : Promise.resolve();
  checked.catch(() => {}); // awaited below
  let server: QemuNbdServer;
  try {
    server = await startQemuNbd(path, { format, readOnly: true });
  } catch (err) {
    await checked; // a damaged image explains a failed start best
    throw err;
  }
  // Once qemu-nbd holds the image lock, the check, the connections and the map go in parallel.
  const direct = format === 'qcow2' && directReadsEnabled();
  const connected = connectRetrying(server, path, format);
  const mapped = direct
    ? (async () => mapQcow2(path, info ?? (await probeImage(path))))()
    : Promise.resolve(null);
  const [check, conn, map] = await Promise.allSettled([checked, connected, mapped]);
  const src = conn.status === 'fulfilled' ? conn.value : undefined;
  try {
    if (check.status === 'rejected') throw check.reason;
    if (conn.status === 'rejected') throw conn.reason;
    if (info !== undefined && src!.size !== info.virtualSize) {
      throw new VmvaultError(
        'E_SOURCE',
        `qemu-nbd serves ${src!.size} bytes of ${path} but qemu-img reports ${info.virtualSize}`,
      );
    }
    // No usable map (or none asked for): everything goes over NBD.
    const m = map.status === 'fulfilled' ? map.value : null;
    const spans = m ? spansFromMap(m.entries, src!.size, m.fileSize) : null;
    return spans ? await MappedImageSource.open(path, src!, spans) : src!;
  } catch (err) {
    await src?.close();
    await server.stop();
    throw err;
  }
}

/** True when `path` names something on the filesystem (not a URI). */
export async function isLocalPath(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
