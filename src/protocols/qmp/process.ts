/**
 * Child-process supervision for QEMU binaries: every process started here is tracked and killed
 * (SIGKILL) when the Node process exits, so tests and the product never leak QEMU processes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import { VmvaultError } from '../../core/errors.js';

/** How a process ended. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A supervised child process. */
export interface ManagedProcess {
  /** Short label for messages, e.g. `qemu-storage-daemon`. */
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<ExitStatus>;
  /** The exit status once exited, else `undefined`. */
  exitStatus(): ExitStatus | undefined;
  /** The last 64 KiB of stderr (and stdout, interleaved) for diagnostics. */
  output(): string;
  /**
   * Stops the process: SIGTERM, then SIGKILL after `graceMs` (default 3 s). Resolves once it has
   * exited. Safe to call more than once.
   */
  stop(options?: { graceMs?: number }): Promise<ExitStatus>;
}

const live = new Set<ManagedProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const p of live) {
      try {
        p.child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

/** Processes started through {@link spawnManaged} that have not exited yet. */
export function liveProcesses(): ManagedProcess[] {
  return [...live];
}

/**
 * Spawns `command` with `args` under supervision. stdin is closed; stdout and stderr are kept
 * (last 64 KiB) for error messages. Fails with `E_UNSUPPORTED` when the binary is missing.
 */
export async function spawnManaged(
  command: string,
  args: string[],
  options: { name?: string; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<ManagedProcess> {
  installExitHook();
  const name = options.name ?? command;
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const keep = (chunk: Buffer): void => {
    out += chunk.toString('utf8');
    if (out.length > 65536) out = out.slice(-65536);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let status: ExitStatus | undefined;
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once('exit', (code, signal) => {
      status = { code, signal };
      resolve(status);
    });
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', (err) => {
      const missing = (err as { code?: string }).code === 'ENOENT';
      reject(
        new VmvaultError(missing ? 'E_UNSUPPORTED' : 'E_IO', `cannot start ${name}: ${err.message}`, {
          cause: err,
          hint: missing ? `install the package that provides ${command}` : undefined,
        }),
      );
    });
  });
  const handle: ManagedProcess = {
    name,
    pid: child.pid ?? -1,
    child,
    exited,
    exitStatus: () => status,
    output: () => out,
    stop: async (opts = {}) => {
      if (status) return status;
      const graceMs = opts.graceMs ?? 3000;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (!status) child.kill('SIGKILL');
      }, graceMs);
      const s = await exited;
      clearTimeout(timer);
      return s;
    },
  };
  live.add(handle);
  void exited.then(() => live.delete(handle));
  return handle;
}

/**
 * Waits until `path` exists, polling every 25 ms. Fails with `E_TIMEOUT` after `timeoutMs`, or
 * at once with `E_CLOSED` when `proc` exits first (its output goes in the message).
 */
export async function waitForPath(path: string, timeoutMs: number, proc?: ManagedProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await access(path);
      return;
    } catch {
      // not yet
    }
    const st = proc?.exitStatus();
    if (proc && st) throw exitedEarly(proc, st);
    if (Date.now() >= deadline) {
      throw new VmvaultError(
        'E_TIMEOUT',
        `${proc?.name ?? 'process'}: ${path} did not appear within ${timeoutMs} ms`,
        {
          details: { output: proc?.output().slice(-2000) },
        },
      );
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The error for a process that died during start-up. */
export function exitedEarly(proc: ManagedProcess, st: ExitStatus): VmvaultError {
  const how = st.signal ? `signal ${st.signal}` : `exit code ${st.code}`;
  const tail = proc.output().trim().split('\n').slice(-5).join(' | ');
  return new VmvaultError('E_IO', `${proc.name} exited during start-up (${how})${tail ? `: ${tail}` : ''}`, {
    details: { output: proc.output().slice(-4000) },
  });
}
