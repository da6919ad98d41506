/**
 * The recovery journal: one small JSON file (`state.json` in the recovery's state directory)
 * that says how far a `recover` got, so a killed recovery resumes where it stopped. It is
 * rewritten atomically (temporary name, fsync, rename, directory fsync) at every phase change
 * and at every copy checkpoint.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { errnoCode, VmvaultError } from '../core/index.js';

/** Where a recovery is. Phases only move forward. */
export type RecoveryPhase = 'copying' | 'switching' | 'cleanup' | 'done';

/** The journal of one recovery. */
export interface RecoveryState {
  version: 1;
  /** Restore point and disk being recovered. */
  pointId: string;
  disk: string;
  /** Target path (absolute) and its format. */
  target: string;
  format: 'raw' | 'qcow2';
  /** `file` targets are written beside the final name and renamed; `device` in place. */
  targetKind: 'file' | 'device';
  /** Private runtime directory: NBD and QMP sockets, QEMU's pidfile. */
  runDir: string;
  /** The guest's writes until the switch: a qcow2 whose backing is the live mount. */
  overlay: string;
  /** The QEMU command line, exactly as started (so a dead QEMU can be started again). */
  qemuArgs: string[];
  qemuPid?: number;
  phase: RecoveryPhase;
  /** Chunks below this are on the target and durable (phase `copying`). */
  copiedChunks: number;
  startedAt: string;
  /** Times the recovery was resumed. */
  resumes: number;
}

/** The paths a recovery of `target` uses. */
export interface RecoveryPaths {
  stateDir: string;
  stateFile: string;
  overlay: string;
  runDir: string;
  nbdSocket: string;
  qmpSocket: string;
  pidFile: string;
}

/**
 * Paths for a recovery to `target`: the state directory is `<target>.vmvault-recover` for a
 * file target (same filesystem, so the overlay lands where the data goes) or `stateDir` when
 * given; sockets live in a short private directory under the temp dir (unix socket paths are
 * limited to 107 bytes), named after a hash of the state directory so a resume finds them.
 */
export function recoveryPaths(target: string, stateDir?: string): RecoveryPaths {
  const abs = resolve(target);
  const dir = resolve(stateDir ?? `${join(dirname(abs), basename(abs))}.vmvault-recover`);
  const tag = createHash('sha256').update(dir).digest('hex').slice(0, 12);
  const runDir = join(process.env.XDG_RUNTIME_DIR || tmpdir(), `vmvault-rec-${tag}`);
  return {
    stateDir: dir,
    stateFile: join(dir, 'state.json'),
    overlay: join(dir, 'overlay.qcow2'),
    runDir,
    nbdSocket: join(runDir, 'nbd.sock'),
    qmpSocket: join(runDir, 'qmp.sock'),
    pidFile: join(runDir, 'qemu.pid'),
  };
}

/** Reads the journal, or null when there is none. */
export async function loadState(file: string): Promise<RecoveryState | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw new VmvaultError('E_IO', `cannot read recovery state ${file}: ${(err as Error).message}`);
  }
  let s: RecoveryState;
  try {
    s = JSON.parse(text) as RecoveryState;
  } catch {
    throw new VmvaultError('E_CORRUPT', `recovery state ${file} is not valid JSON`, {
      hint: 'remove the state directory to start the recovery over (the guest writes in its overlay are then lost)',
    });
  }
  if (s.version !== 1 || typeof s.pointId !== 'string' || typeof s.phase !== 'string') {
    throw new VmvaultError('E_CORRUPT', `recovery state ${file} has an unknown layout`);
  }
  return s;
}

/** Writes the journal atomically and durably. */
export async function saveState(file: string, state: RecoveryState): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(`${JSON.stringify(state, null, 2)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  const dh = await open(dirname(file), 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
