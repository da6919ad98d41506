/**
 * The recovering VM's QEMU process: started daemonized (it must outlive vmvault, which may be
 * killed mid-recovery or finish while the guest keeps running), found again by its pidfile and
 * QMP socket when a recovery resumes.
 */
import { execFile } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { errnoCode, VmvaultError } from '../core/index.js';
import { QmpClient } from '../protocols/qmp/index.js';

/** Starts QEMU with `args` (binary first, `-daemonize` included); resolves once it is up. */
export function startDaemonized(args: string[], pidFile: string): Promise<void> {
  return new Promise((resolve, reject) => {
    void rm(pidFile, { force: true }).then(() => {
      execFile(args[0]!, args.slice(1), { timeout: 60_000 }, (err, _out, stderr) => {
        if (!err) return resolve();
        const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
        const why = missing ? `${args[0]} is not installed` : stderr.trim().split('\n').slice(-3).join('; ');
        reject(
          new VmvaultError(missing ? 'E_UNSUPPORTED' : 'E_VM', `cannot start the VM: ${why}`, {
            hint: missing
              ? 'install qemu-system-x86'
              : 'check the QEMU command (run with --json for the full line)',
            details: { args },
          }),
        );
      });
    });
  });
}

/** The pid in `pidFile` if that process is alive, else null. */
export async function livePid(pidFile: string): Promise<number | null> {
  let text: string;
  try {
    text = await readFile(pidFile, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  }
  const pid = Number.parseInt(text.trim(), 10);
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return null;
  }
}

/** Connects to the VM's QMP monitor. */
export function connectQmp(qmpSocket: string, timeoutMs = 10_000): Promise<QmpClient> {
  return QmpClient.connect({ path: qmpSocket }, { connectTimeoutMs: timeoutMs, retryConnectMs: timeoutMs });
}
