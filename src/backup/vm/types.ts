/** Shared types of the VM backup: disks found in QEMU, per-disk plans, and what a point records. */
import type { DirtyBitmapInfo, VmDescription } from '../../protocols/qmp/index.js';

/** A disk of the VM, as found in QEMU's block graph. */
export interface VmDiskInfo {
  /** Disk name inside the restore point: the guest device id (`vda`) or the node name. */
  name: string;
  /** Node the backup addresses (the top format node). */
  node: string;
  /** Driver of that node (`qcow2`, `raw`...). */
  format: string;
  /** Image file name as QEMU reports it. */
  filename: string;
  /** Virtual size in bytes. */
  size: number;
  /** Dirty bitmaps on the node. */
  bitmaps: DirtyBitmapInfo[];
}

/** How one disk is backed up, and why. */
export interface DiskPlan {
  disk: VmDiskInfo;
  method: 'full' | 'read-compare' | 'bitmap';
  /** Why: stored in the disk record and printed. */
  reason: string;
  /** The bitmap the parent point started (only for `bitmap`): its dirty bits are read. */
  oldBitmap: string | undefined;
  /** The bitmap this backup starts in the transaction. */
  newBitmap: string;
  /** Whether the new bitmap is stored in the image (qcow2) or lives only while QEMU runs. */
  persistent: boolean;
  /** Bitmaps of this chain to remove before the backup (stale, inconsistent, foreign). */
  removeBitmaps: string[];
}

/** Per-disk change-tracking record of a point: what the next backup looks for. */
export interface DiskTracking {
  node: string;
  bitmap: string;
  persistent: boolean;
  format: string;
  filename: string;
}

/** How consistent the point is. */
export interface Consistency {
  /** `application`: guest filesystems were frozen by the agent; `crash`: as after power loss. */
  level: 'application' | 'crash';
  /** Why (no agent, agent failed, frozen N filesystems in M ms). */
  detail: string;
  /** Milliseconds the guest was frozen, when it was. */
  frozenMs?: number;
}

/** What a VM restore point stores in `RestorePoint.vm`. */
export interface VmPointRecord {
  kind: 'qemu';
  /** Bitmap chain prefix (repository and backup name). */
  chain: string;
  /** QMP socket the backup used. */
  qmp: string;
  consistency: Consistency;
  /** Change tracking per disk name. */
  tracking: Record<string, DiskTracking>;
  /** The VM's configuration as QEMU reported it at the point in time. */
  config: VmDescription;
}

/** Reads the VM record of a point (`undefined` for points of other sources). */
export function vmRecordOf(point: { vm?: unknown } | null | undefined): VmPointRecord | undefined {
  const v = point?.vm as Partial<VmPointRecord> | undefined;
  if (v?.kind !== 'qemu' || typeof v.tracking !== 'object' || v.tracking === null) return undefined;
  return v as VmPointRecord;
}
