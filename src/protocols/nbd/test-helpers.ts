/** Helpers shared by the NBD tests: temp dirs, child processes that always die, waiting. */
import { type ChildProcess, type SpawnOptions, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** A fresh temp dir; remove with the returned cleanup. */
export function tempDir(prefix = 'vmvault-nbd-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Starts a long-running process that is killed at exit even when a test fails. */
export function startProcess(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  children.add(child);
  let err = '';
  child.stderr?.on('data', (b: Buffer) => {
    err += b.toString();
    if (err.length > 8192) err = err.slice(-8192);
  });
  child.once('exit', () => children.delete(child));
  (child as ChildProcess & { stderrText: () => string }).stderrText = () => err;
  return child;
}

/** Kills a process started with {@link startProcess} and waits for it to exit. */
export async function stopProcess(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(t);
}

/** Runs a command to completion; resolves with its output, rejects on non-zero exit/timeout. */
export function run(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; allowFail?: boolean } = {},
): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 64 * 1024 * 1024, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        children.delete(child);
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        if (err && !opts.allowFail) {
          reject(new Error(`${cmd} ${args.join(' ')} failed (${code}): ${stderr || err.message}`));
        } else resolve({ stdout, stderr, code });
      },
    );
    children.add(child);
  });
}

/** Waits until `path` exists (a pidfile or socket). */
export async function waitForPath(path: string, timeoutMs = 10_000, child?: ChildProcess): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (child && child.exitCode !== null) {
      const text = (child as ChildProcess & { stderrText?: () => string }).stderrText?.() ?? '';
      throw new Error(`process exited (${child.exitCode}) before creating ${path}: ${text}`);
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${path}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A deterministic pseudo-random buffer. */
export function patternBuffer(length: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/** True when every named program is on PATH. */
export function haveTools(...names: string[]): boolean {
  const dirs = (process.env.PATH ?? '').split(':');
  return names.every((n) => dirs.some((d) => existsSync(join(d, n))));
}
