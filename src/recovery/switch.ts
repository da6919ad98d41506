/**
 * Moving a running VM from its live mount onto the recovered target without stopping it.
 *
 * When the switch starts, the target already holds every chunk of the restore point (vmvault
 * copied them), and everything the guest wrote since it started is in the overlay node
 * ({@link NODE_DISK}), the only node it ever wrote to. One QEMU mirror job with `sync: top`
 * copies exactly the overlay's clusters onto the target — the guest's writes win over the
 * backup's data — and, in `write-blocking` mode, sends every new guest write to both sides, so
 * the two converge. `job-complete` then replaces the overlay by the target under the guest's
 * device (QEMU's pivot). Afterwards the overlay and the live-mount nodes are deleted; the VM
 * then runs on the target alone. Every step checks where QEMU is first, so a resumed recovery
 * picks up after the last step that happened.
 */
import { VmvaultError } from '../core/index.js';
import type { QmpClient } from '../protocols/qmp/index.js';
import { NODE_BACKUP, NODE_DISK, NODE_TARGET, SWITCH_JOB } from './qemu-args.js';

/** The target as QEMU opens it. */
export interface SwitchTarget {
  path: string;
  format: 'raw' | 'qcow2';
  kind: 'file' | 'device';
}

interface JobInfo {
  id: string;
  type: string;
  status: string;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

interface NamedNode {
  'node-name': string;
}

interface BlockInfo {
  device: string;
  qdev?: string;
  inserted?: { 'node-name'?: string };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** True when some guest device already runs on the target node. */
async function onTarget(qmp: QmpClient): Promise<boolean> {
  const blocks = await qmp.execute<BlockInfo[]>('query-block');
  return blocks.some((b) => b.inserted?.['node-name'] === NODE_TARGET);
}

async function nodeExists(qmp: QmpClient, name: string): Promise<boolean> {
  const nodes = await qmp.execute<NamedNode[]>('query-named-block-nodes', { flat: true });
  return nodes.some((n) => n['node-name'] === name);
}

async function job(qmp: QmpClient): Promise<JobInfo | undefined> {
  const jobs = await qmp.execute<JobInfo[]>('query-jobs');
  return jobs.find((j) => j.id === SWITCH_JOB);
}

/**
 * Switches the guest's disk from the overlay to `target`. `onProgress(done, total)` reports the
 * mirror's bytes. Safe to call again after an interruption at any point.
 */
export async function switchToTarget(
  qmp: QmpClient,
  target: SwitchTarget,
  onProgress?: (done: number, total: number) => void,
): Promise<void> {
  if (await onTarget(qmp)) return;
  if (!(await nodeExists(qmp, NODE_TARGET))) {
    await qmp.execute('blockdev-add', {
      driver: target.format,
      'node-name': NODE_TARGET,
      file: { driver: target.kind === 'device' ? 'host_device' : 'file', filename: target.path },
    });
  }
  let j = await job(qmp);
  if (j && (j.status === 'concluded' || j.status === 'aborting' || j.status === 'null')) {
    // A job that ended without switching (it failed or was cancelled): start it again.
    await qmp.execute('job-dismiss', { id: SWITCH_JOB }).catch(() => undefined);
    j = undefined;
  }
  if (!j) {
    await qmp.execute('blockdev-mirror', {
      'job-id': SWITCH_JOB,
      device: NODE_DISK,
      target: NODE_TARGET,
      sync: 'top',
      'copy-mode': 'write-blocking',
      'auto-dismiss': false,
    });
  }
  // Wait until the target has every overlay cluster, then pivot.
  for (let completed = false; ; ) {
    j = await job(qmp);
    if (!j) break;
    onProgress?.(j['current-progress'], j['total-progress']);
    if (j.status === 'paused' || j.status === 'standby') await qmp.execute('job-resume', { id: SWITCH_JOB });
    if (j.status === 'ready' && !completed) {
      await qmp.execute('job-complete', { id: SWITCH_JOB });
      completed = true;
    }
    if (j.status === 'concluded') {
      await qmp.execute('job-dismiss', { id: SWITCH_JOB });
      if (j.error) {
        throw new VmvaultError('E_VM', `QEMU could not move the disk onto ${target.path}: ${j.error}`, {
          hint: 'the VM keeps running on the live mount; fix the cause and run the same recover again',
        });
      }
      break;
    }
    await sleep(50);
  }
  if (!(await onTarget(qmp))) {
    throw new VmvaultError('E_VM', `QEMU's switch job ended but the disk is not on ${target.path}`, {
      hint: 'run the same recover again to retry the switch',
    });
  }
}

/** Deletes the overlay and live-mount nodes once nothing uses them. Idempotent. */
export async function removeRecoveryNodes(qmp: QmpClient): Promise<void> {
  for (const name of [NODE_DISK, NODE_BACKUP]) {
    if (await nodeExists(qmp, name)) await qmp.execute('blockdev-del', { 'node-name': name });
  }
}
