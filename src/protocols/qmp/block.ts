/**
 * Typed wrappers for the block-layer QMP commands a pull-mode backup needs: node inspection,
 * blockdev-add/-del, dirty bitmaps, transactions and block jobs.
 */
import type {
  BitmapRef,
  BlockInfo,
  BlockJobInfo,
  BlockNodeInfo,
  DirtyBitmapAddArgs,
  DirtyBitmapInfo,
  TransactionAction,
} from './block-types.js';
import type { QmpEvent } from './messages.js';
import type { QmpClient } from './qmp-client.js';

/** `query-block`: guest-visible block devices (empty in qemu-storage-daemon). */
export function queryBlock(qmp: QmpClient): Promise<BlockInfo[]> {
  return qmp.execute<BlockInfo[]>('query-block');
}

/**
 * `query-named-block-nodes`: every named node. With `flat: true` (the default here) backing and
 * child images are not repeated inside each node's `image`.
 */
export function queryNamedBlockNodes(
  qmp: QmpClient,
  options: { flat?: boolean } = {},
): Promise<BlockNodeInfo[]> {
  return qmp.execute<BlockNodeInfo[]>('query-named-block-nodes', { flat: options.flat ?? true });
}

/** Finds a node by name; `undefined` when absent. */
export async function findBlockNode(qmp: QmpClient, nodeName: string): Promise<BlockNodeInfo | undefined> {
  return (await queryNamedBlockNodes(qmp)).find((n) => n['node-name'] === nodeName);
}

/**
 * `blockdev-add`: adds a node graph described by `options` (`BlockdevOptions`, which must have
 * `driver` and should have `node-name`).
 */
export async function blockdevAdd(
  qmp: QmpClient,
  options: { driver: string; 'node-name'?: string; [key: string]: unknown },
): Promise<void> {
  await qmp.execute('blockdev-add', options);
}

/** `blockdev-del`: removes a node added with blockdev-add (it must be unused). */
export async function blockdevDel(qmp: QmpClient, nodeName: string): Promise<void> {
  await qmp.execute('blockdev-del', { 'node-name': nodeName });
}

/**
 * `transaction`: runs the actions atomically (all or none). With `completionMode: 'grouped'`
 * jobs started by the transaction fail together.
 */
export async function transaction(
  qmp: QmpClient,
  actions: TransactionAction[],
  options: { completionMode?: 'individual' | 'grouped' } = {},
): Promise<void> {
  const args: Record<string, unknown> = { actions };
  if (options.completionMode) args.properties = { 'completion-mode': options.completionMode };
  await qmp.execute('transaction', args);
}

/** `block-dirty-bitmap-add`. */
export async function blockDirtyBitmapAdd(qmp: QmpClient, args: DirtyBitmapAddArgs): Promise<void> {
  await qmp.execute('block-dirty-bitmap-add', args);
}

/** `block-dirty-bitmap-remove`. */
export async function blockDirtyBitmapRemove(qmp: QmpClient, node: string, name: string): Promise<void> {
  await qmp.execute('block-dirty-bitmap-remove', { node, name });
}

/** `block-dirty-bitmap-merge`: ORs `bitmaps` into `target` (all on `node` unless given as refs). */
export async function blockDirtyBitmapMerge(
  qmp: QmpClient,
  node: string,
  target: string,
  bitmaps: BitmapRef[],
): Promise<void> {
  await qmp.execute('block-dirty-bitmap-merge', { node, target, bitmaps });
}

/** `block-dirty-bitmap-disable`: stops recording writes. */
export async function blockDirtyBitmapDisable(qmp: QmpClient, node: string, name: string): Promise<void> {
  await qmp.execute('block-dirty-bitmap-disable', { node, name });
}

/** `block-dirty-bitmap-enable`: resumes recording writes. */
export async function blockDirtyBitmapEnable(qmp: QmpClient, node: string, name: string): Promise<void> {
  await qmp.execute('block-dirty-bitmap-enable', { node, name });
}

/** `block-dirty-bitmap-clear`: resets every bit. */
export async function blockDirtyBitmapClear(qmp: QmpClient, node: string, name: string): Promise<void> {
  await qmp.execute('block-dirty-bitmap-clear', { node, name });
}

/** The dirty bitmaps of `node` (from query-named-block-nodes); `[]` when none or no node. */
export async function listDirtyBitmaps(qmp: QmpClient, node: string): Promise<DirtyBitmapInfo[]> {
  return (await findBlockNode(qmp, node))?.['dirty-bitmaps'] ?? [];
}

/** `query-block-jobs`. */
export function queryBlockJobs(qmp: QmpClient): Promise<BlockJobInfo[]> {
  return qmp.execute<BlockJobInfo[]>('query-block-jobs');
}

/**
 * `block-job-cancel` and, unless `wait` is false, waits for the job's end event:
 * `BLOCK_JOB_CANCELLED` (or `BLOCK_JOB_COMPLETED`, which QEMU sends when cancelling a job in the
 * ready state). Returns the event, or `undefined` when not waiting.
 */
export async function blockJobCancel(
  qmp: QmpClient,
  jobId: string,
  options: { force?: boolean; wait?: boolean; timeoutMs?: number } = {},
): Promise<QmpEvent | undefined> {
  const since = qmp.eventMark();
  const args: Record<string, unknown> = { device: jobId };
  if (options.force !== undefined) args.force = options.force;
  await qmp.execute('block-job-cancel', args);
  if (options.wait === false) return undefined;
  const ends = new Set(['BLOCK_JOB_CANCELLED', 'BLOCK_JOB_COMPLETED']);
  return qmp.waitForEvent(
    undefined,
    (e) => ends.has(e.event) && e.data.device === jobId,
    options.timeoutMs ?? 30_000,
    {
      since,
    },
  );
}
