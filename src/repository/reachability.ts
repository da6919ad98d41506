/** Walks restore-point trees to find the blobs they use (for gc and verify). */
import { VmvaultError } from '../core/index.js';
import { fromHex } from './crypto.js';
import type { RestorePoint } from './manifest.js';
import type { Repository } from './repository.js';

/** Digest (latin1 key) → ids of the points that use it. */
export type UsageMap = Map<string, Set<string>>;

/** A point whose tree could not be walked. */
export interface TreeFailure {
  point: string;
  error: VmvaultError;
}

/**
 * Adds every blob (pages and chunks) that `points` use to `usage`. Points whose trees are
 * damaged are reported in the result instead of throwing.
 */
export async function collectUsage(
  repo: Repository,
  points: readonly RestorePoint[],
  usage: UsageMap,
): Promise<TreeFailure[]> {
  const failures: TreeFailure[] = [];
  const use = (d: Buffer, id: string): void => {
    const k = d.toString('latin1');
    const s = usage.get(k);
    if (s) s.add(id);
    else usage.set(k, new Set([id]));
  };
  for (const p of points) {
    for (const disk of p.disks) {
      try {
        const reader = repo.treeReader(fromHex(disk.root), disk.size, disk.chunkSize);
        for await (const leaf of reader.leaves((d) => use(d, p.id))) {
          for (const e of leaf.entries) if (e) use(e, p.id);
        }
      } catch (err) {
        if (!(err instanceof VmvaultError)) throw err;
        failures.push({ point: p.id, error: err });
      }
    }
  }
  return failures;
}
