/**
 * Decides, per disk, how a VM backup captures it: a bitmap incremental when the bitmap the
 * latest restore point of this chain started is present, consistent, recording and unused;
 * otherwise a read-compare (read everything allocated, store only new chunks) that starts a new
 * chain, or a full backup for a disk the parent point does not have. Never trusts a bitmap it
 * cannot prove belongs to the parent point: that is how no point silently misses a change.
 */
import type { DiskRecord, RestorePoint } from '../../repository/index.js';
import { bitmapName, bitmapSeq, isVmvaultBitmap } from './bitmap-names.js';
import { type DiskPlan, type VmDiskInfo, vmRecordOf } from './types.js';

/** Inputs of {@link planDisk}. */
export interface PlanInput {
  disk: VmDiskInfo;
  /** Bitmap chain prefix of this repository and backup name. */
  chain: string;
  /** Latest restore point of this backup name, or null. */
  parent: RestorePoint | null;
  /** Backup name, for messages. */
  name: string;
}

/** Plans one disk; pure (reads nothing but its inputs). */
export function planDisk(input: PlanInput): DiskPlan {
  const { disk, chain, parent } = input;
  const persistent = disk.format === 'qcow2';
  const ours = disk.bitmaps.filter((b) => bitmapSeq(chain, b.name) !== undefined);
  const parentRecord: DiskRecord | undefined = parent?.disks.find((d) => d.name === disk.name);
  const track = vmRecordOf(parent)?.tracking[disk.name];
  const seqs = ours.map((b) => bitmapSeq(chain, b.name) ?? 0);
  const parentSeq = track ? (bitmapSeq(chain, track.bitmap) ?? 0) : 0;
  const newBitmap = bitmapName(chain, Math.max(0, parentSeq, ...seqs) + 1);
  const tracking = persistent
    ? 'persistent dirty bitmap'
    : `non-persistent dirty bitmap (${disk.format} images cannot store bitmaps: tracking lasts while QEMU runs)`;
  const restart = (method: DiskPlan['method'], why: string): DiskPlan => ({
    disk,
    method,
    reason: `${why}; ${method === 'full' ? 'read all allocated data' : 'read all allocated data, stored only chunks not already in the repository'}, new chain with ${tracking} ${newBitmap}`,
    oldBitmap: undefined,
    newBitmap,
    persistent,
    removeBitmaps: ours.map((b) => b.name),
  });

  if (!parent) return restart('full', `first backup of ${input.name}`);
  if (!parentRecord) return restart('full', `disk ${disk.name} is new since restore point ${parent.id}`);
  if (parentRecord.size !== disk.size) {
    return restart(
      'read-compare',
      `disk ${disk.name} changed size from ${parentRecord.size} to ${disk.size} bytes since restore point ${parent.id}`,
    );
  }
  if (!track) {
    return restart(
      'read-compare',
      `restore point ${parent.id} has no change-tracking record for disk ${disk.name} (taken by another method or tool)`,
    );
  }
  const want = track.bitmap;
  const found = disk.bitmaps.find((b) => b.name === want);
  if (!found) {
    const others = disk.bitmaps.filter((b) => isVmvaultBitmap(b.name)).map((b) => b.name);
    const newer = ours.filter((b) => (bitmapSeq(chain, b.name) ?? 0) > parentSeq).map((b) => b.name);
    let why: string;
    if (newer.length > 0) {
      why = `bitmap ${want} of restore point ${parent.id} is gone and ${newer.join(', ')} of a later backup is there: a later restore point of ${input.name} was deleted, or its backup was interrupted`;
    } else if (!track.persistent) {
      why = `non-persistent bitmap ${want} is gone from node ${disk.node}: QEMU was restarted since restore point ${parent.id}`;
    } else {
      why = `bitmap ${want} of restore point ${parent.id} is missing from node ${disk.node}: QEMU was killed before saving it, or the disk was replaced or restored`;
    }
    if (others.length > newer.length) why += ` (found ${others.join(', ')})`;
    return restart('read-compare', why);
  }
  if (found.inconsistent) {
    return restart(
      'read-compare',
      `bitmap ${want} on node ${disk.node} is inconsistent: QEMU stopped without saving it (killed or crashed) after restore point ${parent.id}`,
    );
  }
  if (!found.recording) {
    return restart(
      'read-compare',
      `bitmap ${want} on node ${disk.node} is not recording (disabled by another tool, or an earlier backup was interrupted)`,
    );
  }
  if (found.busy) {
    return restart('read-compare', `bitmap ${want} on node ${disk.node} is in use by another job or export`);
  }
  return {
    disk,
    method: 'bitmap',
    reason: `dirty bitmap ${want} on node ${disk.node} has tracked every write since restore point ${parent.id}: read only dirty chunks, copied the rest from it; new ${tracking} ${newBitmap}`,
    oldBitmap: want,
    newBitmap,
    persistent,
    removeBitmaps: ours.filter((b) => b.name !== want).map((b) => b.name),
  };
}
