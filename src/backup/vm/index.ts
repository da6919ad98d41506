/**
 * Public surface of `backup/vm`: backups of running QEMU VMs (qemu-system or
 * qemu-storage-daemon) at one point in time, incremental through persistent dirty bitmaps that
 * heal themselves, optionally frozen through the guest agent. See docs/vm-backup.md.
 */
export {
  backupVm,
  consistencyTag,
  type BackupVmOptions,
  type BackupVmResult,
} from './backup-vm.js';
export { trace } from './trace.js';
export { patchDisk, type PatchDiskOptions, type PatchSource } from './patch-disk.js';
export { createEmptyQcow2, emptyQcow2 } from './scratch-image.js';
export { chainPrefix, bitmapName, bitmapSeq, isVmvaultBitmap, BITMAP_PREFIX } from './bitmap-names.js';
export { discoverDisks, deviceName } from './discover-disks.js';
export { findAgentSocket, withFrozenGuest, type FreezeOptions } from './guest-freeze.js';
export { blockPriorities, toChunkRanges } from './priorities.js';
export { planDisk, type PlanInput } from './tracking-plan.js';
export { composeExtents, dirtyChunkRanges } from './extents.js';
export {
  vmRecordOf,
  type Consistency,
  type DiskPlan,
  type DiskTracking,
  type VmDiskInfo,
  type VmPointRecord,
} from './types.js';
