/** `--help` for the benchmark scripts. */

/**
 * Prints `usage` and exits with status 0 when `argv` asks for help (`--help` or `-h`); returns
 * otherwise, so a script calls it before parsing its options.
 */
export function exitOnHelp(argv: readonly string[], usage: string): void {
  if (!argv.includes('--help') && !argv.includes('-h')) return;
  process.stdout.write(usage.endsWith('\n') ? usage : `${usage}\n`);
  process.exit(0);
}
