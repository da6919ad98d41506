/**
 * Names of vmvault's dirty bitmaps. A bitmap belongs to one chain: one repository and one
 * backup name. Its name is `vmvault-<repo id, 8 hex>-<name hash, 8 hex>-<sequence>`, so two
 * repositories (or two backup names) backing up the same VM never touch each other's bitmaps,
 * and a bitmap of this chain that the latest restore point does not name is known to be stale.
 */
import { createHash } from 'node:crypto';

/** Every vmvault bitmap starts with this. */
export const BITMAP_PREFIX = 'vmvault-';

/** The name prefix of the chain of `backupName` in repository `repoId`. */
export function chainPrefix(repoId: string, backupName: string): string {
  const nameHash = createHash('sha256').update(backupName, 'utf8').digest('hex').slice(0, 8);
  return `${BITMAP_PREFIX}${repoId.slice(0, 8)}-${nameHash}-`;
}

/** The bitmap name with sequence number `seq` in the chain `prefix`. */
export function bitmapName(prefix: string, seq: number): string {
  return `${prefix}${seq}`;
}

/** The sequence number of `name` in chain `prefix`, or `undefined` when it is not of that chain. */
export function bitmapSeq(prefix: string, name: string): number | undefined {
  if (!name.startsWith(prefix)) return undefined;
  const rest = name.slice(prefix.length);
  return /^\d{1,15}$/.test(rest) ? Number(rest) : undefined;
}

/** True for a bitmap some vmvault chain made (this one or another). */
export function isVmvaultBitmap(name: string): boolean {
  return name.startsWith(BITMAP_PREFIX);
}
