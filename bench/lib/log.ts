/** Progress notes on stderr, so stdout holds only the report. */

const t0 = performance.now();

/** Writes `msg` to stderr prefixed with the seconds since the script started. */
export function note(msg: string): void {
  process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`);
}
