/**
 * VM-level QMP wrappers: run state, quit, human monitor commands, and a description of the VM's
 * configuration assembled from what QEMU 7.2 reports (it has no "give me the command line"
 * command; `query-command-line-options` lists option *schemas*, not the options used).
 */
import type { BlockInfo } from './block-types.js';
import type { QmpVersion } from './messages.js';
import type { QmpClient } from './qmp-client.js';

/** `query-status` result. */
export interface VmStatus {
  /** `RunState`: running, paused, prelaunch, shutdown, inmigrate, postmigrate, ... */
  status: string;
  running: boolean;
  [key: string]: unknown;
}

/** `query-status`. */
export function queryStatus(qmp: QmpClient): Promise<VmStatus> {
  return qmp.execute<VmStatus>('query-status');
}

/**
 * `quit`: asks QEMU to exit. QEMU may close the socket before or after replying, so a closed
 * connection counts as success.
 */
export async function quit(qmp: QmpClient, timeoutMs = 5000): Promise<void> {
  try {
    await qmp.execute('quit', undefined, { timeoutMs });
  } catch (err) {
    if ((err as { code?: string }).code === 'E_CLOSED') return;
    throw err;
  }
}

/** `human-monitor-command`: runs an HMP command line (e.g. `info block`) and returns its text. */
export function humanMonitorCommand(qmp: QmpClient, commandLine: string, cpuIndex?: number): Promise<string> {
  const args: Record<string, unknown> = { 'command-line': commandLine };
  if (cpuIndex !== undefined) args['cpu-index'] = cpuIndex;
  return qmp.execute<string>('human-monitor-command', args);
}

/** A guest-visible device from `qom-list /machine/peripheral` (devices given an `id`). */
export interface VmDevice {
  id: string;
  /** QOM type, e.g. `virtio-blk-pci`. */
  type: string;
}

/** A block device and its root node, summarised from `query-block`. */
export interface VmDisk {
  /** qdev id or QOM path of the device model (empty for qemu-storage-daemon). */
  qdev: string;
  /** Legacy drive name (`""` with -blockdev). */
  device: string;
  /** Root node name of the inserted medium (what backups address). */
  nodeName: string | undefined;
  /** Driver of the root node (`qcow2`, `raw`, ...). */
  format: string | undefined;
  /** Image file name. */
  filename: string | undefined;
  virtualSize: number | undefined;
  readOnly: boolean | undefined;
  /** Dirty bitmaps on the root node. */
  bitmaps: {
    name: string;
    recording: boolean;
    persistent: boolean;
    inconsistent: boolean;
    granularity: number;
  }[];
}

/** What QEMU 7.2 tells about a running VM, for the catalog and for recreating it. */
export interface VmDescription {
  version: QmpVersion;
  /** `-name`, when set. */
  name: string | undefined;
  uuid: string;
  /** Machine type as instantiated, e.g. `pc-i440fx-7.2-machine` (`qom-get /machine type`). */
  machineType: string | undefined;
  /** `query-target`: guest architecture, e.g. `x86_64`. */
  arch: string | undefined;
  /** KVM present/enabled (`query-kvm`). */
  kvm: { enabled: boolean; present: boolean } | undefined;
  status: VmStatus;
  /** Number of vCPUs (`query-cpus-fast`) and the CPU model (`query-hotpluggable-cpus`). */
  cpus: number;
  cpuModel: string | undefined;
  /** Base RAM in bytes (`query-memory-size-summary`). */
  memoryBytes: number | undefined;
  disks: VmDisk[];
  devices: VmDevice[];
}

/**
 * Describes the VM behind `qmp`: version, name, uuid, machine type, accelerator, vCPUs, RAM,
 * disks (with node names, formats, files and bitmaps) and named devices. Commands a QEMU binary
 * lacks (qemu-storage-daemon has no machine) leave their fields `undefined`/empty.
 */
export async function describeVm(qmp: QmpClient): Promise<VmDescription> {
  const opt = async <T>(cmd: string, args?: object): Promise<T | undefined> => {
    try {
      return await qmp.execute<T>(cmd, args);
    } catch {
      return undefined;
    }
  };
  const [version, name, uuid, machineType, target, kvm, status, cpus, hotCpus, mem, blocks, peripherals] =
    await Promise.all([
      qmp.execute<QmpVersion>('query-version'),
      opt<{ name?: string }>('query-name'),
      opt<{ UUID: string }>('query-uuid'),
      opt<string>('qom-get', { path: '/machine', property: 'type' }),
      opt<{ arch: string }>('query-target'),
      opt<{ enabled: boolean; present: boolean }>('query-kvm'),
      opt<VmStatus>('query-status'),
      opt<unknown[]>('query-cpus-fast'),
      opt<{ type: string }[]>('query-hotpluggable-cpus'),
      opt<{ 'base-memory': number }>('query-memory-size-summary'),
      opt<BlockInfo[]>('query-block'),
      opt<{ name: string; type: string }[]>('qom-list', { path: '/machine/peripheral' }),
    ]);
  const devices: VmDevice[] = [];
  for (const p of peripherals ?? []) {
    const m = /^child<(.+)>$/.exec(p.type);
    if (m?.[1]) devices.push({ id: p.name, type: m[1] });
  }
  return {
    version,
    name: name?.name,
    uuid: uuid?.UUID ?? '',
    machineType,
    arch: target?.arch,
    kvm,
    status: status ?? { status: 'unknown', running: false },
    cpus: cpus?.length ?? 0,
    cpuModel: hotCpus?.[0]?.type,
    memoryBytes: mem?.['base-memory'],
    disks: (blocks ?? []).map(summariseDisk),
    devices,
  };
}

function summariseDisk(b: BlockInfo): VmDisk {
  const node = b.inserted;
  return {
    qdev: b.qdev ?? '',
    device: b.device,
    nodeName: node?.['node-name'],
    format: node?.drv,
    filename: node?.image?.filename ?? node?.file,
    virtualSize: node?.image?.['virtual-size'],
    readOnly: node?.ro,
    bitmaps: (node?.['dirty-bitmaps'] ?? []).map((d) => ({
      name: d.name,
      recording: d.recording,
      persistent: d.persistent,
      inconsistent: d.inconsistent ?? false,
      granularity: d.granularity,
    })),
  };
}
