/** Running QEMU's short-lived command-line tools (`qemu-img info`, `check`, `map`). */
import { execFile } from 'node:child_process';
import { VmvaultError } from '../core/index.js';

/**
 * Runs a short-lived QEMU tool and resolves to its exit code (-1 when killed or failed to run),
 * stdout and stderr. Rejects with `E_UNSUPPORTED` only when the tool is not installed.
 */
export function runTool(
  cmd: string,
  args: string[],
  timeoutMs = 60_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(
          new VmvaultError('E_UNSUPPORTED', `cannot run ${cmd}: it is not installed`, {
            hint: 'install qemu-utils (Debian) or qemu-img (RPM)',
          }),
        );
        return;
      }
      const code = err
        ? typeof (err as { code?: unknown }).code === 'number'
          ? (err as { code: number }).code
          : -1
        : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The last meaningful line of a QEMU tool's stderr, without the `qemu-img: ` prefix. */
export function lastLine(text: string): string {
  const lines = text
    .trim()
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  return (lines[lines.length - 1] ?? 'no message').replace(/^qemu-(img|nbd): /, '');
}
