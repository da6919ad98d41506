/** Phase timings of VM backups for `VMVAULT_VM_TRACE=1`. */

/**
 * With `VMVAULT_VM_TRACE` set, prints `[ms since the process started] phase` on stderr (the
 * CLI adds its own phases).
 */
export function trace(phase: string): void {
  if (process.env.VMVAULT_VM_TRACE) process.stderr.write(`[${performance.now().toFixed(0)} ms] ${phase}\n`);
}
