/**
 * `recover`: bring a VM back at once from a restore point, then move its disk home while it runs.
 *
 * 1. **Serve** the point's disk read-only over NBD on a private unix socket (the live mount).
 * 2. **Start the VM** (daemonized) on a local qcow2 overlay whose backing is that mount: the guest
 *    boots at once, reads what it needs from the backup, and every write it makes lands in the
 *    overlay — nothing the guest writes ever depends on vmvault staying alive.
 * 3. **Copy** every chunk of the point to the target in the background, with the restore
 *    pipeline (optionally bandwidth-limited), checkpointing progress in the journal.
 * 4. **Switch**: a QEMU mirror job copies the overlay's clusters (the guest's writes, which win)
 *    onto the target and pivots the guest's device onto it (`switch.ts`).
 * 5. **Clean up**: delete the overlay and mount nodes, stop serving, remove the overlay file and
 *    the journal. The VM keeps running on the target.
 *
 * The journal (`state.ts`) makes every step resumable: if vmvault is killed, the VM keeps
 * running (its reads of not-yet-copied data wait for the mount to come back, up to the
 * reconnect delay), and running the same `recover` again serves the point again, finds the VM,
 * continues the copy from its last checkpoint and finishes. If QEMU died too, it is started again
 * on the same overlay, so no write the guest flushed is lost.
 */
import { execFile } from 'node:child_process';
import { mkdir, rm, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { errnoCode, VmvaultError } from '../core/index.js';
import type { QmpClient } from '../protocols/qmp/index.js';
import type { CodecPool, DiskRecord, Repository, RestorePoint } from '../repository/index.js';
import { restoreDisk } from '../restore/index.js';
import { buildQemuArgs } from './qemu-args.js';
import { loadState, type RecoveryPaths, type RecoveryState, recoveryPaths, saveState } from './state.js';
import { removeRecoveryNodes, switchToTarget } from './switch.js';
import { connectQmp, livePid, startDaemonized } from './vm.js';

/** Export name of the live mount a recovering VM reads. */
export const RECOVERY_EXPORT = 'vmvault-recover';

/** Serves a point's disk over NBD for the recovering VM; returns how to stop serving. */
export type RecoveryServe = (socketPath: string, exportName: string) => Promise<{ close(): Promise<void> }>;

/** Options of {@link recoverDisk}. */
export interface RecoverOptions {
  /** Where the disk goes: a raw file, a qcow2 image or a block device. */
  target: string;
  /** Target format (default: qcow2 for a `.qcow2` name, else raw). */
  format?: 'raw' | 'qcow2';
  /** Overwrite an existing target file. */
  force?: boolean;
  /** Journal and overlay directory (default `<target>.vmvault-recover`). */
  stateDir?: string;
  /** The QEMU command (binary first); default: built from the point's saved VM configuration. */
  qemuArgs?: string[];
  /** Accelerator for a command built from the saved configuration (default `tcg`). */
  accel?: 'tcg' | 'kvm';
  /** Bandwidth limit of the background copy, bytes per second. */
  bytesPerSecond?: number;
  /** Seconds QEMU holds guest I/O while the live mount is away (default 600). */
  reconnectDelay?: number;
  /** Starts the live mount (the CLI passes one that also records and replays read traces). */
  serve: RecoveryServe;
  onProgress?: (p: RecoverProgress) => void;
  /** One-line notices for the user (resuming, VM restarted, …). */
  onNotice?: (message: string) => void;
  /** Test hook: called after each phase is journaled. */
  onPhase?: (phase: RecoveryState['phase']) => void;
}

/** Progress of a recovery. */
export interface RecoverProgress {
  phase: 'copying' | 'switching';
  /** Bytes of the disk relocated to the target so far, and the disk size. */
  done: number;
  total: number;
  /** Chunk data bytes written in this run. */
  bytesWritten: number;
}

/** What a recovery did. */
export interface RecoverResult {
  pointId: string;
  disk: string;
  target: string;
  format: 'raw' | 'qcow2';
  /** The VM, still running on the target. */
  qemuPid: number | null;
  qmpSocket: string;
  /** True when this run continued an interrupted recovery. */
  resumed: boolean;
  /** True when QEMU had died and was started again on the overlay. */
  vmRestarted: boolean;
  bytesWritten: number;
  /** Milliseconds from start until the VM was running, copying, and switching. */
  startMs: number;
  copyMs: number;
  switchMs: number;
}

const CHECKPOINT_BYTES = 256 << 20;

/** Recovers `disk` of `point` to `opts.target` with the VM running from the backup meanwhile. */
export async function recoverDisk(
  repo: Repository,
  pool: CodecPool,
  point: RestorePoint,
  disk: DiskRecord,
  opts: RecoverOptions,
): Promise<RecoverResult> {
  const t0 = Date.now();
  const target = resolve(opts.target);
  const paths = recoveryPaths(target, opts.stateDir);
  const notice = opts.onNotice ?? (() => undefined);
  let state = await loadState(paths.stateFile);
  const resumed = state !== null;
  if (state) {
    if (state.pointId !== point.id || state.disk !== disk.name || state.target !== target) {
      throw new VmvaultError(
        'E_USAGE',
        `${paths.stateDir} holds a recovery of ${state.pointId} disk ${state.disk} to ${state.target}`,
        { hint: 'resume that recovery with the same point and target, or pass another --state-dir' },
      );
    }
    if (state.phase === 'done') {
      await rm(paths.stateDir, { recursive: true, force: true });
      throw new VmvaultError('E_USAGE', `the recovery to ${target} had already finished`);
    }
    state.resumes++;
    notice(`resuming the recovery of ${point.id} to ${target} (phase ${state.phase})`);
  } else {
    state = await prepare(point, disk, target, paths, opts);
  }
  await saveState(paths.stateFile, state);
  const st: RecoveryState = state;

  await mkdir(paths.runDir, { recursive: true, mode: 0o700 });
  await rm(paths.nbdSocket, { force: true });
  const server = await opts.serve(paths.nbdSocket, RECOVERY_EXPORT);
  let qmp: QmpClient | undefined;
  let vmRestarted = false;
  let bytesWritten = 0;
  let copyMs = 0;
  let switchMs = 0;
  let startMs = 0;
  try {
    // The VM: still running (a resume), or started now.
    let pid = await livePid(paths.pidFile);
    if (pid === null && st.phase !== 'cleanup') {
      if (resumed) {
        notice(
          'the VM is not running any more: starting it again on its overlay (its flushed writes are kept)',
        );
        vmRestarted = true;
      }
      await startDaemonized(st.qemuArgs, paths.pidFile);
      pid = await livePid(paths.pidFile);
    }
    st.qemuPid = pid ?? undefined;
    await saveState(paths.stateFile, st);
    if (pid !== null) qmp = await connectQmp(paths.qmpSocket);
    startMs = Date.now() - t0;

    if (st.phase === 'copying') {
      const c0 = Date.now();
      bytesWritten = await copy(repo, pool, disk, st, paths, opts);
      copyMs = Date.now() - c0;
      st.phase = 'switching';
      await saveState(paths.stateFile, st);
      opts.onPhase?.('switching');
    }
    if (st.phase === 'switching') {
      if (!qmp) throw new VmvaultError('E_VM', 'the VM is not running, so its disk cannot be switched');
      const s0 = Date.now();
      await switchToTarget(qmp, { path: target, format: st.format, kind: st.targetKind }, (done, total) =>
        opts.onProgress?.({ phase: 'switching', done, total, bytesWritten }),
      );
      switchMs = Date.now() - s0;
      st.phase = 'cleanup';
      await saveState(paths.stateFile, st);
      opts.onPhase?.('cleanup');
    }
    if (qmp) await removeRecoveryNodes(qmp);
  } finally {
    await qmp?.close().catch(() => undefined);
    await server.close();
  }
  st.phase = 'done';
  await saveState(paths.stateFile, st);
  opts.onPhase?.('done');
  await rm(paths.stateDir, { recursive: true, force: true });
  await rm(paths.nbdSocket, { force: true });
  return {
    pointId: point.id,
    disk: disk.name,
    target,
    format: st.format,
    qemuPid: await livePid(paths.pidFile),
    qmpSocket: paths.qmpSocket,
    resumed,
    vmRestarted,
    bytesWritten,
    startMs,
    copyMs,
    switchMs,
  };
}

/** A new recovery: checks the target, creates the overlay and the journal. */
async function prepare(
  point: RestorePoint,
  disk: DiskRecord,
  target: string,
  paths: RecoveryPaths,
  opts: RecoverOptions,
): Promise<RecoveryState> {
  const format = opts.format ?? (/\.qcow2$/i.test(target) ? 'qcow2' : 'raw');
  let kind: 'file' | 'device' = 'file';
  try {
    const s = await stat(target);
    if (s.isBlockDevice()) kind = 'device';
    else if (!s.isFile())
      throw new VmvaultError('E_TARGET', `${target} is neither a file nor a block device`);
    else if (!opts.force) {
      throw new VmvaultError('E_TARGET', `${target} already exists`, {
        hint: 'pass --force to overwrite it, or choose another path',
      });
    }
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  if (kind === 'device' && format === 'qcow2') {
    throw new VmvaultError('E_USAGE', `${target} is a block device; it takes the raw disk, not qcow2`);
  }
  const vm = point.vm as { config?: unknown } | undefined;
  const qemuArgs = buildQemuArgs({
    userArgs: opts.qemuArgs,
    config: vm?.config,
    disk,
    accel: opts.accel,
    nbdSocket: paths.nbdSocket,
    exportName: RECOVERY_EXPORT,
    overlay: paths.overlay,
    qmpSocket: paths.qmpSocket,
    pidFile: paths.pidFile,
    reconnectDelay: opts.reconnectDelay ?? 600,
  });
  await mkdir(paths.stateDir, { recursive: true });
  await createOverlay(paths.overlay, disk.size, disk.chunkSize);
  return {
    version: 1,
    pointId: point.id,
    disk: disk.name,
    target,
    format,
    targetKind: kind,
    runDir: paths.runDir,
    overlay: paths.overlay,
    qemuArgs,
    phase: 'copying',
    copiedChunks: 0,
    startedAt: new Date().toISOString(),
    resumes: 0,
  };
}

/** The background copy: the restore pipeline, resumable from the journal's checkpoint. */
async function copy(
  repo: Repository,
  pool: CodecPool,
  disk: DiskRecord,
  st: RecoveryState,
  paths: RecoveryPaths,
  opts: RecoverOptions,
): Promise<number> {
  // Killed between the final rename and the journal update: the copy is complete.
  if (st.targetKind === 'file' && st.copiedChunks > 0) {
    const partial = await stat(`${st.target}.vmvault-partial`).catch(() => null);
    const whole = await stat(st.target).catch(() => null);
    if (!partial && whole?.isFile()) return 0;
  }
  const r = await restoreDisk(repo, pool, disk, st.target, {
    format: st.format,
    force: opts.force === true || st.resumes > 0,
    // Only a partial file of this recovery may be continued (a stale one would leave old data
    // where the point has holes).
    resume: st.resumes > 0,
    fromChunk: st.copiedChunks,
    keepPartial: true,
    bytesPerSecond: opts.bytesPerSecond,
    checkpoint: {
      everyBytes: CHECKPOINT_BYTES,
      save: async (chunk) => {
        st.copiedChunks = chunk;
        await saveState(paths.stateFile, st);
      },
    },
    onProgress: (p) =>
      opts.onProgress?.({ phase: 'copying', done: p.done, total: p.total, bytesWritten: p.bytesWritten }),
  });
  return r.bytesWritten;
}

function createOverlay(path: string, size: number, chunkSize: number): Promise<void> {
  let cluster = 512;
  while (cluster < chunkSize && cluster < 2 << 20) cluster *= 2;
  const args = ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cluster}`, path, String(size)];
  return new Promise((resolvePromise, reject) => {
    execFile('qemu-img', args, { timeout: 60_000 }, (err, _o, stderr) => {
      if (!err) return resolvePromise();
      reject(
        new VmvaultError('E_TARGET', `cannot create the overlay ${path}: ${stderr.trim() || err.message}`),
      );
    });
  });
}
