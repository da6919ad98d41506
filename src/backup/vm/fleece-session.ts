/**
 * The QEMU side of a pull-mode backup: a scratch qcow2 per disk backed by the live disk, one
 * transaction that starts the new bitmaps, freezes the old ones and starts a
 * `blockdev-backup sync=none` into each scratch (copy-before-write: the guest's writes push the
 * old data into the scratch, so the scratch node shows the disk at the point in time), an NBD
 * server on a private unix socket and a read-only export per scratch node.
 *
 * {@link FleeceSession.cleanup} undoes everything it did, in reverse, whatever failed, and
 * {@link FleeceSession.finishBitmaps} rotates the bitmaps (success) or merges them back (failure).
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmvaultError } from '../../core/index.js';
import {
  blockDirtyBitmapRemove,
  blockExportAdd,
  blockExportDel,
  blockJobCancel,
  blockdevAdd,
  blockdevDel,
  isQmpError,
  nbdServerStart,
  nbdServerStop,
  type QmpClient,
  type TransactionAction,
  transaction,
} from '../../protocols/qmp/index.js';
import { OWN_NODE_PREFIX } from './discover-disks.js';
import { createEmptyQcow2 } from './scratch-image.js';
import type { DiskPlan } from './types.js';

/** Where one disk's fleecing export is. */
export interface FleeceExport {
  plan: DiskPlan;
  socketPath: string;
  exportName: string;
}

/** Options of {@link FleeceSession.open}. */
export interface FleeceSessionOptions {
  /** Parent of the private temporary directory (default: the OS temp dir). */
  scratchDir?: string;
  /** Use an NBD server QEMU already runs on this unix socket instead of starting one. */
  nbdSocket?: string;
  /** Granularity of new bitmaps in bytes (the repository's chunk size). */
  granularity: number;
  onNotice?: (message: string) => void;
}

/** Waits for every promise, then throws the first rejection (so none is left unhandled). */
async function settleAll(all: Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(all)).find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/** One backup's QEMU-side state. */
export class FleeceSession {
  private readonly tag = randomBytes(4).toString('hex');
  private scratchNodes: string[] = [];
  private jobs: string[] = [];
  private exports: string[] = [];
  private startedServer = false;
  private transactionDone = false;

  private constructor(
    private readonly qmp: QmpClient,
    readonly dir: string,
    private readonly plans: DiskPlan[],
    private readonly opts: FleeceSessionOptions,
  ) {}

  /** Makes the private directory (mode 0700) that holds the scratch images and the NBD socket. */
  static async open(qmp: QmpClient, plans: DiskPlan[], opts: FleeceSessionOptions): Promise<FleeceSession> {
    const dir = await mkdtemp(join(opts.scratchDir ?? tmpdir(), 'vmvault-vm-'));
    await chmod(dir, 0o700);
    return new FleeceSession(qmp, dir, plans, opts);
  }

  private id(kind: string, i: number): string {
    return `${OWN_NODE_PREFIX}${kind}-${this.tag}-${i}`;
  }

  private files(): string[] {
    return this.plans.map((_, i) => join(this.dir, `scratch-${i}.qcow2`));
  }

  /** Creates the empty scratch images (written directly, no `qemu-img`; in parallel). */
  async createScratchFiles(): Promise<void> {
    const files = this.files();
    await Promise.all(this.plans.map((plan, i) => createEmptyQcow2(files[i]!, plan.disk.size)));
  }

  /**
   * Adds the scratch images (from {@link createScratchFiles}) as nodes backed by the live disks
   * and, unless QEMU already runs one, starts the NBD server. The commands are sent together (QMP
   * runs them in order); every node that was added is removed again by {@link cleanup}.
   */
  async prepare(): Promise<void> {
    const files = this.files();
    const adds = this.plans.map(async (plan, i) => {
      const node = this.id('scratch', i);
      await blockdevAdd(this.qmp, {
        driver: 'qcow2',
        'node-name': node,
        file: { driver: 'file', filename: files[i]! },
        backing: plan.disk.node,
      });
      this.scratchNodes.push(node);
    });
    await settleAll([...adds, this.startServer()]);
  }

  /** Starts the NBD server on the private socket, unless one was given. */
  private async startServer(): Promise<void> {
    if (this.opts.nbdSocket) return;
    try {
      await nbdServerStart(this.qmp, { path: this.socketPath });
      this.startedServer = true;
    } catch (err) {
      if (isQmpError(err) && /already running/i.test(err.desc)) {
        throw new VmvaultError('E_SOURCE', 'QEMU already runs an NBD server and only one can run', {
          hint: 'pass --nbd-socket PATH with the unix socket it listens on',
          cause: err,
        });
      }
      throw err;
    }
  }

  /** The NBD server's socket: the one given, else `<private dir>/nbd.sock`. */
  private get socketPath(): string {
    return this.opts.nbdSocket ?? join(this.dir, 'nbd.sock');
  }

  /** The transaction's actions: new bitmaps, old ones frozen, fleecing jobs started. */
  actions(): TransactionAction[] {
    const actions: TransactionAction[] = [];
    for (const [i, plan] of this.plans.entries()) {
      const node = plan.disk.node;
      actions.push({
        type: 'block-dirty-bitmap-add',
        data: { node, name: plan.newBitmap, persistent: plan.persistent, granularity: this.opts.granularity },
      });
      if (plan.oldBitmap)
        actions.push({ type: 'block-dirty-bitmap-disable', data: { node, name: plan.oldBitmap } });
      actions.push({
        type: 'blockdev-backup',
        data: { 'job-id': this.id('fleece', i), device: node, target: this.id('scratch', i), sync: 'none' },
      });
    }
    return actions;
  }

  /** Runs the point-in-time transaction. */
  async pointInTime(timeoutMs: number): Promise<void> {
    await this.qmp.execute('transaction', { actions: this.actions() }, { timeoutMs });
    this.transactionDone = true;
    this.jobs = this.plans.map((_, i) => this.id('fleece', i));
  }

  /** Exports each scratch node read-only (after {@link pointInTime}; commands sent together). */
  async exportAll(): Promise<FleeceExport[]> {
    const socketPath = this.socketPath;
    const out = this.plans.map((plan, i) => ({ plan, socketPath, exportName: this.id('export', i) }));
    await settleAll(
      out.map(async ({ plan, exportName }, i) => {
        await blockExportAdd(this.qmp, {
          id: exportName,
          'node-name': this.id('scratch', i),
          name: exportName,
          writable: false,
          ...(plan.oldBitmap ? { bitmaps: [plan.oldBitmap] } : {}),
        });
        this.exports.push(exportName);
      }),
    );
    return out;
  }

  /** Removes exports, jobs, scratch nodes and files, and the NBD server if we started it. */
  async cleanup(): Promise<void> {
    const notice = this.opts.onNotice ?? (() => undefined);
    const step = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        if (this.qmp.connected) notice(`cleanup: ${what} failed: ${(err as Error).message}`);
      }
    };
    // Each kind of step for all disks at once; the kinds in order (an export uses its scratch
    // node, the job writes into it).
    await Promise.all(
      this.exports
        .splice(0)
        .map((id) =>
          step(`removing export ${id}`, () =>
            blockExportDel(this.qmp, id, { mode: 'hard', timeoutMs: 15_000 }),
          ),
        ),
    );
    await Promise.all(
      this.jobs
        .splice(0)
        .map((job) =>
          step(`cancelling job ${job}`, () =>
            blockJobCancel(this.qmp, job, { force: true, timeoutMs: 15_000 }),
          ),
        ),
    );
    const last = this.scratchNodes
      .splice(0)
      .map((node) => step(`removing scratch node ${node}`, () => blockdevDel(this.qmp, node)));
    if (this.startedServer) {
      this.startedServer = false;
      last.push(step('stopping the NBD server', () => nbdServerStop(this.qmp)));
    }
    await Promise.all(last);
    await rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }

  /**
   * After {@link cleanup}: on success removes each old bitmap (the new one tracks from the point
   * in time). On failure, folds each new bitmap back into the old one and re-enables it, in one
   * transaction per disk, so the old chain keeps tracking every write; a new bitmap without an
   * old one is removed (no point names it).
   */
  async finishBitmaps(success: boolean): Promise<void> {
    if (!this.transactionDone) return;
    const notice = this.opts.onNotice ?? (() => undefined);
    await Promise.all(
      this.plans.map(async (plan) => {
        const node = plan.disk.node;
        try {
          if (success) {
            if (plan.oldBitmap) await blockDirtyBitmapRemove(this.qmp, node, plan.oldBitmap);
          } else if (plan.oldBitmap) {
            await transaction(this.qmp, [
              {
                type: 'block-dirty-bitmap-merge',
                data: { node, target: plan.oldBitmap, bitmaps: [plan.newBitmap] },
              },
              { type: 'block-dirty-bitmap-enable', data: { node, name: plan.oldBitmap } },
              { type: 'block-dirty-bitmap-remove', data: { node, name: plan.newBitmap } },
            ]);
          } else {
            await blockDirtyBitmapRemove(this.qmp, node, plan.newBitmap);
          }
        } catch (err) {
          if (this.qmp.connected)
            notice(
              `could not ${success ? 'remove the old' : 'merge back the'} bitmap on node ${node}: ${(err as Error).message}; the next backup will detect it and read the whole disk`,
            );
        }
      }),
    );
  }
}
