/** Helpers around repositories on disk: warming them and measuring what a step added. */
import { duBytes, run } from './proc.js';

/** Reads every file of `dir` once so restore starts from a warm page cache. */
export async function warmDir(dir: string): Promise<void> {
  await run('sh', ['-c', 'find "$1" -type f -exec cat {} + > /dev/null', 'sh', dir]);
}

/** Runs `step` and returns its result with the growth of `dir` (`du -sb`) it caused. */
export async function withGrowth<T>(dir: string, step: () => Promise<T>): Promise<T & { growth: number }> {
  const before = await duBytes(dir);
  const r = await step();
  return { ...r, growth: (await duBytes(dir)) - before };
}
