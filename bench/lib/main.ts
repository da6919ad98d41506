/** The entry point every benchmark script shares. */

/**
 * Runs a benchmark's `main`: the number it resolves with (0 for anything else) becomes the exit code;
 * a failure is printed as `name: stack` and exits with 1. With `exit`, the process ends as soon as
 * `main` settles (for benchmarks whose QEMU or timers may still hold the event loop); without it,
 * the process ends once nothing is left to do (so a child mode that resolves once it listens
 * keeps serving).
 */
export function runBench(name: string, main: () => Promise<unknown>, opts: { exit?: boolean } = {}): void {
  main().then(
    (result) => {
      const code = typeof result === 'number' ? result : 0;
      if (opts.exit) process.exit(code);
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
