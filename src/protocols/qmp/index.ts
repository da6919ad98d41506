/**
 * Public surface of `protocols/qmp`: the QMP client, typed block/export/machine wrappers, the
 * QEMU guest-agent client and helpers to run qemu-storage-daemon / qemu-system-x86_64.
 */
export { QmpError, isQmpError } from './errors.js';
export type { SocketAddress } from './transport.js';
export type { QmpEvent, QmpGreeting, QmpVersion } from './messages.js';
export type { EventPredicate, WaitForEventOptions } from './events.js';
export { QmpClient, type QmpClientOptions, type ExecuteOptions } from './qmp-client.js';
export type {
  BitmapRef,
  BlockInfo,
  BlockJobInfo,
  BlockNodeInfo,
  BlockdevBackupArgs,
  DirtyBitmapAddArgs,
  DirtyBitmapInfo,
  ImageInfo,
  NbdExportArgs,
  TransactionAction,
} from './block-types.js';
export {
  blockDirtyBitmapAdd,
  blockDirtyBitmapClear,
  blockDirtyBitmapDisable,
  blockDirtyBitmapEnable,
  blockDirtyBitmapMerge,
  blockDirtyBitmapRemove,
  blockJobCancel,
  blockdevAdd,
  blockdevDel,
  findBlockNode,
  listDirtyBitmaps,
  queryBlock,
  queryBlockJobs,
  queryNamedBlockNodes,
  transaction,
} from './block.js';
export {
  blockExportAdd,
  blockExportDel,
  nbdServerStart,
  nbdServerStop,
  queryBlockExports,
  type BlockExportInfo,
} from './nbd-export.js';
export {
  describeVm,
  humanMonitorCommand,
  queryStatus,
  quit,
  type VmDescription,
  type VmDevice,
  type VmDisk,
  type VmStatus,
} from './machine.js';
export {
  GuestAgentClient,
  type FsfreezeStatus,
  type GuestAgentInfo,
  type GuestAgentOptions,
} from './guest-agent.js';
export {
  liveProcesses,
  spawnManaged,
  waitForPath,
  type ExitStatus,
  type ManagedProcess,
} from './process.js';
export {
  qemuOptValue,
  qemuSystemArgs,
  startQemuSystem,
  startStorageDaemon,
  type QemuHandle,
  type QemuSystemOptions,
  type StorageDaemonOptions,
} from './qemu-process.js';
export {
  chooseAccel,
  probeKvm,
  probeKvmDetailed,
  type KvmProbeOptions,
  type KvmProbeResult,
} from './kvm-probe.js';
