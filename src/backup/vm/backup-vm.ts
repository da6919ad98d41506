/**
 * Backs up every disk of a running QEMU VM (qemu-system or qemu-storage-daemon) as one restore
 * point taken at one instant:
 *
 *  1. describe the VM and find its disks; plan each disk (bitmap incremental, read-compare or
 *     full, with the reason) and remove stale bitmaps of this chain;
 *  2. add a scratch qcow2 per disk; freeze the guest (agent), run ONE transaction (new bitmaps,
 *     old bitmaps disabled, `blockdev-backup sync=none` per disk), thaw;
 *  3. export the scratch nodes over NBD on a private unix socket and read them with our client:
 *     only dirty chunks in bitmap mode, all allocated data otherwise;
 *  4. write the point (packs, index, manifest) with the VM's configuration, change tracking,
 *     consistency and block priorities;
 *  5. always clean up; then rotate the bitmaps (success) or merge them back (failure).
 */
import { VmvaultError } from '../../core/index.js';
import { describeVm, type QmpClient } from '../../protocols/qmp/index.js';
import type { CodecPool, DiskRecord, Repository, RestorePoint } from '../../repository/index.js';
import { type BackupProgress, backupDisk } from '../backup-disk.js';
import { commitPoint } from '../backup.js';
import { chainPrefix } from './bitmap-names.js';
import { discoverDisks } from './discover-disks.js';
import { FleeceSession } from './fleece-session.js';
import { FleeceSource } from './fleece-source.js';
import { findAgentSocket, withFrozenGuest } from './guest-freeze.js';
import { patchDisk } from './patch-disk.js';
import { trace } from './trace.js';
import { planDisk } from './tracking-plan.js';
import type { Consistency, DiskPlan, DiskTracking, VmPointRecord } from './types.js';

/** Options of {@link backupVm}. */
export interface BackupVmOptions {
  /** Backup name (the chain). */
  name: string;
  tags?: string[];
  /** Shown in the point: the QMP socket path. */
  qmpSocket: string;
  /**
   * The guest agent's socket; `false` to not use one; `undefined` to discover a chardev named
   * like `qga0` / `org.qemu.guest_agent.0`.
   */
  guestAgent?: string | false;
  /** Longest the guest stays frozen (default 10 s). */
  freezeTimeoutMs?: number;
  /** How long to wait for the agent to answer (default 3 s). */
  agentSyncTimeoutMs?: number;
  /** Only these disks (disk or node names). */
  disks?: string[];
  /** Parent directory of the scratch images (default: the OS temp dir). */
  scratchDir?: string;
  /** An NBD server QEMU already runs (unix socket), when it has one. */
  nbdSocket?: string;
  /** Compute block priorities (default true). */
  priorities?: boolean;
  onProgress?: (p: BackupProgress & { disk: string }) => void;
  /** Notes for the user (stderr): why a chain restarts, crash-consistency, cleanup problems. */
  onNotice?: (message: string) => void;
  /** Test hook: runs after the transaction, before reading (e.g. to write to the disk). */
  afterPointInTime?: () => Promise<void>;
  /** Test hook: runs while each disk is being read, before the export is closed. */
  whileReading?: (disk: string) => Promise<void>;
}

/** What {@link backupVm} did. */
export interface BackupVmResult {
  point: RestorePoint;
  record: VmPointRecord;
  plans: DiskPlan[];
  /** Bytes of packs, index and manifest this backup added. */
  bytesStored: number;
  /** Bytes read from the VM. */
  bytesRead: number;
  /** Dirty bytes the bitmaps reported (bitmap-mode disks only). */
  dirtyBytes: number;
  notices: string[];
}

/** Backs up the VM behind `qmp` into `repo` as one restore point. */
export async function backupVm(
  repo: Repository,
  pool: CodecPool,
  qmp: QmpClient,
  opts: BackupVmOptions,
): Promise<BackupVmResult> {
  const started = Date.now();
  const notices: string[] = [];
  const notice = (m: string): void => {
    notices.push(m);
    opts.onNotice?.(m);
  };
  const written0 = repo.stats.bytesWritten;
  const cs = repo.config.chunkSize;

  const T = trace;
  // The priority scan brings the filesystem readers: loaded while QEMU answers.
  const prioritiesModule = opts.priorities === false ? undefined : import('./priorities.js');
  prioritiesModule?.catch(() => undefined);
  // QMP runs commands in order: the agent lookup goes out with the description.
  const agentLookup =
    opts.guestAgent === undefined ? findAgentSocket(qmp) : Promise.resolve(opts.guestAgent || undefined);
  const [config, disks, points] = await Promise.all([
    describeVm(qmp),
    discoverDisks(qmp, opts.disks),
    repo.listPoints(),
  ]);
  T('described');
  const earlier = points.filter((p) => p.name === opts.name);
  const parent = earlier[earlier.length - 1] ?? null;
  const chain = chainPrefix(repo.config.id, opts.name);
  const plans = disks.map((disk) => planDisk({ disk, chain, parent, name: opts.name }));
  const session = await FleeceSession.open(qmp, plans, {
    granularity: cs,
    onNotice: notice,
    ...(opts.scratchDir ? { scratchDir: opts.scratchDir } : {}),
    ...(opts.nbdSocket ? { nbdSocket: opts.nbdSocket } : {}),
  });
  // Scratch images are made while stale bitmaps are removed and the agent is looked for.
  const scratchFiles = session.createScratchFiles();
  scratchFiles.catch(() => undefined);
  /** NBD disconnects under way: done before the export they use is removed. */
  const closing: Promise<void>[] = [];
  let success = false;
  let agentSocket: string | undefined;
  let noAgentReason = 'no guest agent channel is configured';
  try {
    for (const plan of plans) {
      if (plan.method === 'read-compare') notice(`disk ${plan.disk.name}: ${plan.reason}`);
      for (const b of plan.removeBitmaps) {
        try {
          await qmp.execute('block-dirty-bitmap-remove', { node: plan.disk.node, name: b });
        } catch (err) {
          throw new VmvaultError(
            'E_SOURCE',
            `cannot remove the stale bitmap ${b} from node ${plan.disk.node}: ${(err as Error).message}`,
            { hint: 'remove it with block-dirty-bitmap-remove and retry', cause: err },
          );
        }
      }
    }
    T('planned');
    if (opts.guestAgent === false) noAgentReason = 'the guest agent was not used (--no-guest-agent)';
    else agentSocket = await agentLookup;
    await scratchFiles;
    await session.prepare();
    T('prepared');
    const { consistency } = await withFrozenGuest(
      {
        agentSocket,
        noAgentReason,
        freezeTimeoutMs: opts.freezeTimeoutMs ?? 10_000,
        ...(opts.agentSyncTimeoutMs ? { syncTimeoutMs: opts.agentSyncTimeoutMs } : {}),
        onNotice: notice,
      },
      (left) => session.pointInTime(left),
    );
    const time = new Date().toISOString();
    if (consistency.level === 'crash' && !notices.some((n) => n.includes('crash-consistent'))) {
      notice(`${consistency.detail}: the backup is only crash-consistent`);
    }
    await opts.afterPointInTime?.();
    T('point in time');
    const exports = await session.exportAll();
    T('exported');

    const records: DiskRecord[] = [];
    const tracking: Record<string, DiskTracking> = {};
    let dirtyBytes = 0;
    for (const ex of exports) {
      const { plan } = ex;
      const source = await FleeceSource.connect({
        socketPath: ex.socketPath,
        exportName: ex.exportName,
        bitmap: plan.oldBitmap,
        chunkSize: cs,
        path: `qmp:${opts.qmpSocket}#${plan.disk.node}`,
        format: plan.disk.format,
      });
      try {
        const parentDisk = parent?.disks.find((d) => d.name === plan.disk.name);
        const onProgress = opts.onProgress
          ? (p: BackupProgress) => opts.onProgress!({ ...p, disk: plan.disk.name })
          : undefined;
        // Block priorities are a few dozen small reads, one after the other: made while the
        // data is read, on a connection of their own so that they do not wait behind it.
        const priorities = !prioritiesModule
          ? Promise.resolve(undefined)
          : prioritiesModule
              .then(async (m) => {
                const scanner = await source.connectAnother();
                try {
                  return await m.blockPriorities(scanner, cs);
                } finally {
                  await scanner.close();
                }
              })
              .catch((err: unknown) => {
                notice(`disk ${plan.disk.name}: no block priorities (${(err as Error).message})`);
                return undefined;
              });
        // Its connection is closed before the export goes, even when the read fails.
        closing.push(priorities.then(() => undefined));
        const reading =
          plan.method === 'bitmap' && parentDisk && sameShape(parentDisk, source.size, cs)
            ? source.patchSource().then((patch) =>
                patchDisk(repo, pool, patch, {
                  name: plan.disk.name,
                  reason: plan.reason,
                  parent: parentDisk,
                  ...(onProgress ? { onProgress } : {}),
                }),
              )
            : backupDisk(repo, pool, source, {
                name: plan.disk.name,
                method: plan.method,
                reason: plan.reason,
                ...(plan.method === 'bitmap' && parentDisk ? { parent: parentDisk } : {}),
                ...(onProgress ? { onProgress } : {}),
              });
        reading.catch(() => undefined); // awaited below, after the test hook
        const [record] = await Promise.all([reading, opts.whileReading?.(plan.disk.name)]);
        T(`read ${plan.disk.name}`);
        const ranges = await priorities;
        if (ranges) record.priorities = ranges;
        T('priorities');
        dirtyBytes += source.dirtyBytes;
        records.push(record);
        tracking[plan.disk.name] = {
          node: plan.disk.node,
          bitmap: plan.newBitmap,
          persistent: plan.persistent,
          format: plan.disk.format,
          filename: plan.disk.filename,
        };
      } finally {
        // Disconnecting needs no wait: it goes on while the point is made durable.
        closing.push(source.close().catch(() => undefined));
      }
    }
    await repo.flush();
    T('flushed');
    const record: VmPointRecord = { kind: 'qemu', chain, qmp: opts.qmpSocket, consistency, tracking, config };
    const point = await commitPoint(repo, {
      name: opts.name,
      time,
      started,
      parent,
      disks: records,
      tags: [...(opts.tags ?? []), consistencyTag(consistency)],
      vm: record,
    });
    T('saved');
    success = true;
    return {
      point,
      record,
      plans,
      bytesStored: repo.stats.bytesWritten - written0,
      bytesRead: records.reduce((s, r) => s + r.stats.bytesRead, 0),
      dirtyBytes,
      notices,
    };
  } finally {
    await scratchFiles.catch(() => undefined);
    await Promise.all(closing);
    await session.cleanup();
    T('cleaned up');
    await session.finishBitmaps(success);
    T('bitmaps');
  }
}

/** A bitmap incremental can patch the parent's tree when it has the same shape. */
function sameShape(parent: DiskRecord, size: number, chunkSize: number): boolean {
  return parent.size === size && parent.chunkSize === chunkSize;
}

/** The tag that says how consistent a point is. */
export function consistencyTag(c: Consistency): string {
  return c.level === 'application' ? 'fs-frozen' : 'crash-consistent';
}
