/**
 * The QEMU command line a recovery starts: the user's own command (everything after `--`), or
 * one built from the VM configuration a VM backup saved (`RestorePoint.vm.config`). Either way
 * vmvault adds the disk as two nodes — the live mount over NBD (`vmvault-backup`, read-only)
 * under a local qcow2 overlay (`vmvault-disk`) that takes the guest's writes — plus its own QMP
 * monitor and pidfile, and `-daemonize`, so the VM outlives a killed or finished vmvault.
 */
import { VmvaultError } from '../core/index.js';
import type { DiskRecord } from '../repository/index.js';

/** Node of the live mount (NBD client, read-only). */
export const NODE_BACKUP = 'vmvault-backup';
/** Node the guest's device uses until the switch: the qcow2 overlay over {@link NODE_BACKUP}. */
export const NODE_DISK = 'vmvault-disk';
/** Node of the recovery target, added for the switch. */
export const NODE_TARGET = 'vmvault-target';
/** Job id of the switch (a QEMU mirror job). */
export const SWITCH_JOB = 'vmvault-recover';

/** What {@link buildQemuArgs} needs. */
export interface QemuArgsInput {
  /** The user's command: binary first, e.g. `qemu-system-x86_64 -m 1024 ...`. */
  userArgs?: string[];
  /** The VM configuration a VM backup saved (`VmPointRecord.config`), used without userArgs. */
  config?: unknown;
  disk: DiskRecord;
  /** Accelerator for a command built from the configuration (default `tcg`). */
  accel?: 'tcg' | 'kvm';
  nbdSocket: string;
  exportName: string;
  overlay: string;
  qmpSocket: string;
  pidFile: string;
  /** Seconds QEMU keeps guest I/O waiting while the live mount is unreachable. */
  reconnectDelay: number;
}

/** Options vmvault sets itself; a user command that has them is refused. */
const RESERVED = new Set(['-daemonize', '-pidfile', '-snapshot']);

/** The full command line (binary first). */
export function buildQemuArgs(input: QemuArgsInput): string[] {
  const base = input.userArgs?.length ? userCommand(input.userArgs) : configCommand(input);
  const blockdevs = [
    {
      driver: 'nbd',
      'node-name': NODE_BACKUP,
      server: { type: 'unix', path: input.nbdSocket },
      export: input.exportName,
      'read-only': true,
      'reconnect-delay': input.reconnectDelay,
    },
    {
      driver: 'qcow2',
      'node-name': NODE_DISK,
      file: { driver: 'file', filename: input.overlay },
      backing: NODE_BACKUP,
    },
  ];
  const args = [...base];
  for (const b of blockdevs) args.push('-blockdev', JSON.stringify(b));
  if (!args.some((a) => new RegExp(`(^|,)drive=${NODE_DISK}(,|$)`).test(a))) {
    args.push('-device', `virtio-blk-pci,drive=${NODE_DISK},id=vmvault-vda,bootindex=1`);
  }
  args.push(
    '-qmp',
    `unix:${input.qmpSocket.replaceAll(',', ',,')},server=on,wait=off`,
    '-pidfile',
    input.pidFile,
    '-daemonize',
  );
  return args;
}

function userCommand(argv: string[]): string[] {
  const bin = argv[0]!;
  if (!/qemu-system-|qemu-kvm/.test(bin)) {
    throw new VmvaultError('E_USAGE', `the command after -- must start a qemu-system binary, not ${bin}`, {
      hint: 'e.g. vmvault recover ID --to disk.raw -- qemu-system-x86_64 -m 1024 -display none',
    });
  }
  const out = [bin];
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (RESERVED.has(a)) {
      throw new VmvaultError('E_USAGE', `leave ${a} out of the QEMU command: vmvault sets it`, {
        hint: 'the VM is daemonized so that it keeps running after vmvault is done',
      });
    }
    // -nographic puts the console on stdio, which a daemonized QEMU does not have.
    if (a === '-nographic') out.push('-display', 'none');
    else out.push(a);
  }
  return out;
}

interface SavedConfig {
  arch?: string;
  machineType?: string;
  cpus?: number;
  cpuModel?: string;
  memoryBytes?: number;
  name?: string;
  uuid?: string;
  devices?: { id: string; type: string }[];
}

function configCommand(input: QemuArgsInput): string[] {
  const c = input.config as SavedConfig | undefined;
  if (!c || typeof c !== 'object') {
    throw new VmvaultError('E_USAGE', 'this restore point has no saved VM configuration', {
      hint: 'give the QEMU command to start after --, e.g. -- qemu-system-x86_64 -m 1024 -display none',
    });
  }
  const accel = input.accel ?? 'tcg';
  const args = [`qemu-system-${c.arch ?? 'x86_64'}`, '-display', 'none'];
  const machine = c.machineType?.replace(/-machine$/, '');
  args.push('-machine', machine ? `${machine},accel=${accel}` : `accel=${accel}`);
  args.push('-m', `${Math.max(16, Math.round((c.memoryBytes ?? 512 << 20) / (1 << 20)))}M`);
  args.push('-smp', String(Math.max(1, c.cpus ?? 1)));
  // A host CPU model needs KVM.
  if (c.cpuModel && !(c.cpuModel === 'host' && accel !== 'kvm')) args.push('-cpu', c.cpuModel);
  if (c.name) args.push('-name', c.name.replaceAll(',', ',,'));
  if (c.uuid && /^[0-9a-f-]{36}$/i.test(c.uuid)) args.push('-uuid', c.uuid);
  const dev = c.devices?.find((d) => d.id === input.disk.name);
  const type = dev?.type ?? 'virtio-blk-pci';
  args.push('-device', `${type},drive=${NODE_DISK},id=${input.disk.name},bootindex=1`);
  return args;
}
