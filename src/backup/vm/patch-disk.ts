/**
 * The bitmap incremental of one disk as a patch of its parent restore point: only the dirty
 * chunks are read, hashed and stored, and the new tree is the parent's tree with those chunks
 * replaced. The generic pipeline (`backupDisk`) streams the disk in order, one segment and one
 * worker round trip after the other, and walks every unchanged chunk of a leaf page that holds a
 * dirty one; an incremental of scattered small writes is all of that. Here:
 *
 *  - dirty chunks are packed into batches (shared memory, up to `batchBytes`), read with every
 *    request of a batch in flight and `depth` batches in flight at once;
 *  - each batch is hashed, then its new chunks encoded, in one message per worker;
 *  - the tree keeps each untouched leaf page of the parent as it is (its digest), and rebuilds
 *    only the leaf pages that hold a changed chunk from the parent's decoded page;
 *  - which chunks change is known from the extents before anything is read, so the parent's
 *    leaves are read and checked (every chunk the new point shares must still be stored) while
 *    the dirty chunks are read, and only the new pages are left to make afterwards;
 *  - the last data pack is sealed before the tree is built, so its write and fsync overlap
 *    with it.
 *
 * Blobs are appended in batch order; the caller flushes the repository and writes the manifest
 * (the write order packs → index → manifest is the caller's, as for `backupDisk`).
 */
import { VmvaultError } from '../../core/index.js';
import {
  BlobType,
  type CodecPool,
  type DiskRecord,
  fromHex,
  hex,
  PAGE_FANOUT,
  type Repository,
  TreeBuilder,
  type TreeReader,
  ZERO_DIGEST,
} from '../../repository/index.js';
import type { SourceExtent } from '../../sources/index.js';
import type { BackupProgress } from '../backup-disk.js';
import { trace } from './trace.js';

const DIGEST_SIZE = 32;
/**
 * Parent leaf pages planned ahead of the tree build (read, decoded and checked while the dirty
 * chunks are read): all of them for disks up to 32 GiB at 64 KiB chunks, a sliding window over
 * larger ones (a touched leaf holds PAGE_FANOUT digests, ~40 KiB).
 */
const LEAF_PLAN_AHEAD = 1024;
/** Size at which packs are sealed once less than a pack's worth of dirty data is left. */
const TAIL_PACK_BYTES = 4 << 20;
/** Parent leaf pages read at once by the planner. */
const LEAF_READS = 16;

/** What {@link patchDisk} reads. */
export interface PatchSource {
  readonly size: number;
  /**
   * Chunk-aligned extents covering the disk: `unchanged` (copied from the parent), data (read)
   * or `data: false` (recorded as zero).
   */
  readonly extents: readonly SourceExtent[];
  /** Fills `target` from disk offset `offset`; called with many reads in flight. */
  read(offset: number, target: Buffer): Promise<void>;
  /** For the record. */
  readonly record: DiskRecord['source'];
}

/** Options of {@link patchDisk}. */
export interface PatchDiskOptions {
  /** Name of the disk inside the point. */
  name: string;
  reason: string;
  /** The same disk in the parent point: same size and chunk size. */
  parent: DiskRecord;
  onProgress?: (p: BackupProgress) => void;
  /**
   * Bytes of dirty chunks per batch (default 2 MiB: small enough that the last batch, whose
   * hashing and encoding nothing overlaps, is short).
   */
  batchBytes?: number;
  /** Batches being read, hashed or encoded at once (default 12). */
  depth?: number;
}

/** A run of dirty chunks `[first, end)` placed at `at` in its batch's buffer. */
interface Piece {
  first: number;
  end: number;
  at: number;
}

interface Batch {
  pieces: Piece[];
  bytes: number;
}

/** Cuts the runs of chunks to read into batches of at most `maxChunks` chunks. */
function cutBatches(runs: readonly [number, number][], maxChunks: number, cs: number, size: number): Batch[] {
  const out: Batch[] = [];
  let cur: Batch = { pieces: [], bytes: 0 };
  let room = maxChunks;
  for (let [a, b] of runs) {
    while (a < b) {
      const n = Math.min(b - a, room);
      const end = a + n;
      cur.pieces.push({ first: a, end, at: cur.bytes });
      cur.bytes += Math.min(end * cs, size) - a * cs;
      room -= n;
      a = end;
      if (room === 0) {
        out.push(cur);
        cur = { pieces: [], bytes: 0 };
        room = maxChunks;
      }
    }
  }
  if (cur.pieces.length > 0) out.push(cur);
  return out;
}

/** Splits `count` items into at most `parts` contiguous `[start, end)` ranges of similar size. */
function split(count: number, parts: number): [number, number][] {
  const n = Math.max(1, Math.min(parts, count));
  const per = Math.ceil(count / n);
  const out: [number, number][] = [];
  for (let s = 0; s < count; s += per) out.push([s, Math.min(count, s + per)]);
  return out;
}

/**
 * Backs up the dirty chunks of `source` as a new tree over the parent's. Throws
 * `E_CHUNK_MISSING` when a page or chunk the new point would share with the parent is gone, and
 * `E_IO` when reading fails.
 */
export async function patchDisk(
  repo: Repository,
  pool: CodecPool,
  source: PatchSource,
  opts: PatchDiskOptions,
): Promise<DiskRecord> {
  const { parent } = opts;
  const { size } = source;
  const { chunkSize: cs } = repo.config;
  if (parent.chunkSize !== cs || parent.size !== size) {
    throw new VmvaultError(
      'E_INTERNAL',
      'a bitmap incremental needs a parent of the same size and chunk size',
    );
  }
  const chunkCount = Math.ceil(size / cs);
  const progress: BackupProgress = { total: size, done: 0, bytesStored: 0, bytesRead: 0 };
  const stats = { chunksNew: 0, chunksReused: 0, chunksZero: 0, bytesRead: 0, bytesStored: 0 };

  // Changed chunks: chunk → new digest (null: zero). Runs of chunks to read.
  const changes = new Map<number, Buffer | null>();
  const runs: [number, number][] = [];
  for (const e of source.extents) {
    if (e.unchanged || e.length <= 0) continue;
    const a = Math.floor(e.offset / cs);
    const b = Math.min(chunkCount, Math.ceil((e.offset + e.length) / cs));
    if (!e.data) {
      for (let i = a; i < b; i++) changes.set(i, null);
      continue;
    }
    const last = runs[runs.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else runs.push([a, b]);
  }
  // Every chunk that gets a new entry, known before reading: the parent's leaves are planned
  // (read and checked) while the dirty chunks are read.
  const changing = new Uint8Array(chunkCount);
  for (const i of changes.keys()) changing[i] = 1;
  for (const [a, b] of runs) changing.fill(1, a, b);
  const parentLeaves = new ParentLeaves(repo, parent, chunkCount, changing);
  const batchChunks = Math.max(1, Math.floor((opts.batchBytes ?? 2 << 20) / cs));
  const batches = cutBatches(runs, batchChunks, cs, size);
  const seen = new Set<string>();

  const depth = Math.max(1, opts.depth ?? 12);
  // One slab per batch in flight, and one being read: reused from batch to batch.
  const slabs = pool.slabs(batchChunks * cs, depth + 1);
  const readBatch = async (batch: Batch, shared: SharedArrayBuffer): Promise<void> => {
    await Promise.all(
      batch.pieces.map((p) => {
        const len = Math.min(p.end * cs, size) - p.first * cs;
        return source.read(p.first * cs, Buffer.from(shared, p.at, len));
      }),
    );
  };

  // Hashes a read batch, records its chunks and starts encoding the new ones.
  const encodeBatch = async (
    batch: Batch,
    shared: SharedArrayBuffer,
  ): Promise<{ digest: Buffer; rawLength: number; stored: Promise<Buffer> }[]> => {
    const chunks = Math.ceil(batch.bytes / cs);
    const hashed = await Promise.all(
      split(chunks, pool.size).map(([s, e]) =>
        pool.hashShared(shared, s * cs, Math.min(e * cs, batch.bytes) - s * cs, cs),
      ),
    );
    const digests = Buffer.concat(hashed);
    stats.bytesRead += batch.bytes;
    const fresh: { digest: Buffer; at: number; length: number }[] = [];
    for (const p of batch.pieces) {
      for (let i = p.first; i < p.end; i++) {
        const at = p.at + (i - p.first) * cs;
        const k = at / cs;
        const d = digests.subarray(k * DIGEST_SIZE, (k + 1) * DIGEST_SIZE);
        if (d.equals(ZERO_DIGEST)) {
          changes.set(i, null);
          continue;
        }
        const digest = Buffer.from(d);
        changes.set(i, digest);
        const key = digest.toString('latin1');
        if (repo.hasBlob(digest) || seen.has(key)) {
          stats.chunksReused++;
          continue;
        }
        seen.add(key);
        stats.chunksNew++;
        fresh.push({ digest, at, length: Math.min(cs, batch.bytes - at) });
      }
    }
    const out: { digest: Buffer; rawLength: number; stored: Promise<Buffer> }[] = [];
    for (const [s, e] of split(fresh.length, pool.size)) {
      const part = fresh.slice(s, e);
      const encoded = pool.encodeSharedMany(
        shared,
        part.map((f) => [f.at, f.length] as [number, number]),
        part.map((f) => f.digest),
      );
      encoded.catch(() => undefined); // awaited below
      part.forEach((f, n) => {
        out.push({ digest: f.digest, rawLength: f.length, stored: encoded.then((all) => all[n]!) });
      });
    }
    return out;
  };

  // Batches in flight, appended to the packs in order.
  const inFlight: Promise<{ digest: Buffer; rawLength: number; stored: Promise<Buffer> }[]>[] = [];
  const inFlightBytes: number[] = [];
  let appendedBytes = 0;
  const appendOldest = async (): Promise<void> => {
    const blobs = await inFlight.shift()!;
    appendedBytes += inFlightBytes.shift()!;
    for (const blob of blobs) {
      const stored = await blob.stored;
      await repo.addBlob(BlobType.data, blob.digest, stored, blob.rawLength);
      stats.bytesStored += stored.length;
    }
    // Near the end, packs are sealed smaller, so that the last one (whose fsync the point
    // waits for) is small and the others are written while reading goes on.
    if (batchesBytes - appendedBytes < repo.config.packSize && repo.openPackBytes >= TAIL_PACK_BYTES) {
      await repo.sealPack();
    }
    progress.bytesRead = stats.bytesRead;
    progress.bytesStored = stats.bytesStored;
    progress.done = Math.round((size * stats.bytesRead) / Math.max(1, batchesBytes));
    opts.onProgress?.(progress);
  };
  const batchesBytes = batches.reduce((s, b) => s + b.bytes, 0);
  try {
    for (const batch of batches) {
      // The slab goes back once the workers are done with it (every blob encoded or failed).
      const started = slabs.acquire().then(async (slab) => {
        try {
          await readBatch(batch, slab.shared);
          const blobs = await encodeBatch(batch, slab.shared);
          await Promise.allSettled(blobs.map((b) => b.stored));
          return blobs;
        } finally {
          slabs.release(slab);
        }
      });
      started.catch(() => undefined); // awaited in order
      inFlight.push(started);
      inFlightBytes.push(batch.bytes);
      if (inFlight.length >= depth) await appendOldest();
    }
    while (inFlight.length > 0) await appendOldest();
    trace(`${opts.name}: ${batches.length} batches read, hashed and stored`);
    await repo.sealPack();
  } catch (err) {
    parentLeaves.cancel();
    await Promise.allSettled(inFlight);
    if (err instanceof VmvaultError) throw err;
    const why = (err as Error).message;
    throw new VmvaultError('E_IO', `incremental of ${source.record.path} failed: ${why}`, { cause: err });
  }

  const root = await patchTree(repo, chunkCount, changes, parentLeaves, stats);
  trace(`${opts.name}: tree`);
  progress.done = size;
  opts.onProgress?.(progress);
  return {
    name: opts.name,
    size,
    chunkSize: cs,
    root: hex(root),
    source: source.record,
    method: 'bitmap',
    reason: opts.reason,
    stats,
  };
}

function missing(what: string, digest: Buffer): VmvaultError {
  return new VmvaultError(
    'E_CHUNK_MISSING',
    `${what} ${hex(digest)} of the parent restore point is missing`,
    {
      details: { digest: hex(digest) },
    },
  );
}

/** What the new tree takes from one parent leaf. */
type LeafPlan =
  /** Untouched: the parent's page as it is (null: all zero). */
  | { page: Buffer | null; entries?: undefined; reused: number; zero: number }
  /** Touched: the parent's entries, the unchanged ones checked present. */
  | { page?: undefined; entries: readonly (Buffer | null)[]; reused: number; zero: number };

/**
 * Reads and checks the parent's leaves, in order, ahead of the tree build: an untouched leaf's
 * page must be stored, and so must every chunk of a touched leaf that does not change. At most
 * {@link LEAF_PLAN_AHEAD} leaves are held; {@link LEAF_READS} are read at once.
 */
class ParentLeaves {
  private readonly reader: TreeReader;
  private readonly plans = new Map<number, Promise<LeafPlan>>();
  private readonly leafCount: number;
  private next = 0;
  private taken = 0;
  private reading = 0;
  private cancelled = false;

  constructor(
    private readonly repo: Repository,
    parent: DiskRecord,
    private readonly chunkCount: number,
    private readonly changing: Uint8Array,
  ) {
    this.reader = repo.treeReader(fromHex(parent.root), parent.size, parent.chunkSize);
    this.leafCount = Math.ceil(chunkCount / PAGE_FANOUT);
    this.pump();
  }

  /** The plan of leaf `leaf`; leaves must be taken in order. */
  take(leaf: number): Promise<LeafPlan> {
    // Leaves start in order and a taken one has finished, so an unstarted leaf has a free slot.
    const p = this.plans.get(leaf) ?? this.start(leaf);
    this.plans.delete(leaf);
    this.taken = leaf + 1;
    this.pump();
    return p;
  }

  /** Stops planning (the backup failed). */
  cancel(): void {
    this.cancelled = true;
  }

  /** Starts plans in leaf order while fewer than LEAF_READS run and the window allows. */
  private pump(): void {
    while (
      !this.cancelled &&
      this.reading < LEAF_READS &&
      this.next < this.leafCount &&
      this.next - this.taken < LEAF_PLAN_AHEAD
    ) {
      this.plans.set(this.next, this.start(this.next));
    }
  }

  private start(leaf: number): Promise<LeafPlan> {
    this.next = Math.max(this.next, leaf + 1);
    this.reading++;
    const p = this.plan(leaf).finally(() => {
      this.reading--;
      this.pump();
    });
    p.catch(() => undefined); // surfaced by take()
    return p;
  }

  private async plan(leaf: number): Promise<LeafPlan> {
    const first = leaf * PAGE_FANOUT;
    const end = Math.min(this.chunkCount, first + PAGE_FANOUT);
    const touched = this.changing.subarray(first, end).includes(1);
    if (!touched) {
      const page = await this.reader.entry(1, leaf);
      if (page && !this.repo.hasBlob(page)) throw missing('index page', page);
      return { page, reused: end - first, zero: 0 };
    }
    const entries = await this.reader.leaf(leaf);
    let reused = 0;
    let zero = 0;
    for (let i = first; i < end; i++) {
      if (this.changing[i]) continue;
      const d = entries[i - first];
      if (!d) zero++;
      else if (!this.repo.hasBlob(d)) throw missing('chunk', d);
      else reused++;
    }
    return { entries, reused, zero };
  }
}

/** The parent's tree with `changes` applied; returns the new root digest. */
async function patchTree(
  repo: Repository,
  chunkCount: number,
  changes: ReadonlyMap<number, Buffer | null>,
  parentLeaves: ParentLeaves,
  stats: { chunksReused: number; chunksZero: number },
): Promise<Buffer> {
  const tree = new TreeBuilder(chunkCount, (_level, page) => repo.storePage(page));
  const leaves = Math.ceil(chunkCount / PAGE_FANOUT);
  for (let leaf = 0; leaf < leaves; leaf++) {
    const plan = await parentLeaves.take(leaf);
    stats.chunksReused += plan.reused;
    stats.chunksZero += plan.zero;
    if (!plan.entries) {
      await tree.setLeaf(leaf, plan.page);
      continue;
    }
    const first = leaf * PAGE_FANOUT;
    const end = Math.min(chunkCount, first + PAGE_FANOUT);
    const entries: (Buffer | null)[] = new Array(end - first);
    for (let i = first; i < end; i++) {
      const d = changes.get(i);
      if (d === undefined) entries[i - first] = plan.entries[i - first] ?? null;
      else {
        if (d === null) stats.chunksZero++;
        entries[i - first] = d;
      }
    }
    await tree.setLeafEntries(leaf, entries);
  }
  return tree.finish();
}
