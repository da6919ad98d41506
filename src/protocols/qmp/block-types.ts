/**
 * TypeScript shapes of the QAPI block types vmvault uses (qapi/block-core.json,
 * qapi/block-export.json, qapi/transaction.json, QEMU 7.2). Only the members we read are typed;
 * QEMU may add more, so every type allows extra keys.
 */

/** `BlockDirtyInfo`: one dirty bitmap of a node. */
export interface DirtyBitmapInfo {
  name: string;
  /** Dirty bytes. */
  count: number;
  granularity: number;
  /** False when the bitmap is disabled. */
  recording: boolean;
  /** True while a job or export uses it. */
  busy: boolean;
  persistent: boolean;
  /** Present and true after an unclean shutdown; only removal works then. */
  inconsistent?: boolean;
  [key: string]: unknown;
}

/** `ImageInfo` (abbreviated). */
export interface ImageInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'cluster-size'?: number;
  'backing-filename'?: string;
  'backing-image'?: ImageInfo;
  [key: string]: unknown;
}

/** `BlockDeviceInfo`: a block node as reported by query-block / query-named-block-nodes. */
export interface BlockNodeInfo {
  'node-name': string;
  /** Driver name: `qcow2`, `raw`, `file`, `nbd`, `copy-before-write`... */
  drv: string;
  /** The filename or JSON filename of the node. */
  file: string;
  ro: boolean;
  backing_file?: string;
  backing_file_depth: number;
  image: ImageInfo;
  'dirty-bitmaps'?: DirtyBitmapInfo[];
  [key: string]: unknown;
}

/** `BlockInfo`: one guest-visible block device from query-block. */
export interface BlockInfo {
  /** Legacy device name (`""` for devices created with -blockdev/-device). */
  device: string;
  /** qdev id or QOM path of the device model, e.g. `vda` or `/machine/peripheral/vda/virtio-backend`. */
  qdev?: string;
  type: string;
  removable: boolean;
  locked: boolean;
  /** The medium's root node, absent when empty. */
  inserted?: BlockNodeInfo;
  [key: string]: unknown;
}

/** `BlockJobInfo` from query-block-jobs. */
export interface BlockJobInfo {
  type: string;
  /** The job id (historically called device). */
  device: string;
  len: number;
  offset: number;
  busy: boolean;
  paused: boolean;
  speed: number;
  ready: boolean;
  /** `JobStatus`: created, running, paused, ready, standby, waiting, pending, aborting, concluded, null. */
  status: string;
  error?: string;
  [key: string]: unknown;
}

/** `BlockDirtyBitmapOrStr`: a bitmap by name on the same node, or by node and name. */
export type BitmapRef = string | { node: string; name: string };

/** Arguments of `block-dirty-bitmap-add`. */
export interface DirtyBitmapAddArgs {
  node: string;
  name: string;
  /** Bytes per bit, power of two (default: cluster size for qcow2, else 64 KiB). */
  granularity?: number;
  /** Stored in the qcow2 image at clean shutdown. */
  persistent?: boolean;
  /** Create disabled (not recording). */
  disabled?: boolean;
}

/** Arguments of `blockdev-backup`. */
export interface BlockdevBackupArgs {
  'job-id'?: string;
  device: string;
  target: string;
  /** `none` for fleecing (copy-before-write only), `full`, `top`, `incremental`, `bitmap`. */
  sync: 'none' | 'full' | 'top' | 'incremental' | 'bitmap';
  bitmap?: string;
  'bitmap-mode'?: 'on-success' | 'never' | 'always';
  speed?: number;
  'auto-finalize'?: boolean;
  'auto-dismiss'?: boolean;
  'filter-node-name'?: string;
  [key: string]: unknown;
}

/**
 * One action of the `transaction` command (`TransactionAction`): the subset of action types a
 * backup needs, plus a catch-all for others QEMU 7.2 offers (`abort`, `blockdev-snapshot`, ...).
 */
export type TransactionAction =
  | { type: 'block-dirty-bitmap-add'; data: DirtyBitmapAddArgs }
  | { type: 'block-dirty-bitmap-remove'; data: { node: string; name: string } }
  | { type: 'block-dirty-bitmap-clear'; data: { node: string; name: string } }
  | { type: 'block-dirty-bitmap-enable'; data: { node: string; name: string } }
  | { type: 'block-dirty-bitmap-disable'; data: { node: string; name: string } }
  | { type: 'block-dirty-bitmap-merge'; data: { node: string; target: string; bitmaps: BitmapRef[] } }
  | { type: 'blockdev-backup'; data: BlockdevBackupArgs }
  | { type: 'abort'; data: Record<string, never> }
  | { type: string; data: Record<string, unknown> };

/** `SocketAddressLegacy` as used by `nbd-server-start`. */
export type NbdServerAddress =
  | { type: 'unix'; data: { path: string } }
  | { type: 'inet'; data: { host: string; port: string } };

/** Arguments of `block-export-add` for an NBD export. */
export interface NbdExportArgs {
  id: string;
  'node-name': string;
  /** Export name seen by NBD clients (default: the node name). */
  name?: string;
  description?: string;
  writable?: boolean;
  /** Dirty bitmaps to expose as `qemu:dirty-bitmap:NAME` meta contexts. */
  bitmaps?: BitmapRef[];
  /** Expose `qemu:allocation-depth`. */
  'allocation-depth'?: boolean;
  iothread?: string;
}
