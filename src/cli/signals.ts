/** Foreground commands that serve until stopped (`mount`, `clone`, `serve`). */

/**
 * Resolves with the first SIGINT or SIGTERM. Call it before printing the "ready" line: a
 * script that reads that line and signals at once must find the handlers in place, or the
 * signal's default action kills the process without its clean-up.
 */
export function untilStopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals): void => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
