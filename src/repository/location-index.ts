/**
 * The chunk location index (the "middle map"): digest → pack, offset, length. Kept in memory,
 * persisted as immutable segment files under index/. Restore points never name packs, so gc and
 * compaction move blobs by writing new segments only.
 *
 *   segment = "VVINDEX\1" | body (sealed when encrypted, else body ‖ SHA-256(body))
 *   body    = u32 packCount, then per pack: 32-byte pack id, pack trailer entry table
 */
import type { Backend } from '../backends/index.js';
import { VmvaultError } from '../core/index.js';
import { protect, sha256, unprotect } from './crypto.js';
import { DigestTable } from './digest-table.js';
import { INDEX_MAGIC } from './format.js';
import { decodeEntries, encodeEntries, type PackEntry } from './pack.js';

/** Where one blob lives. */
export interface BlobLocation {
  pack: string;
  entry: PackEntry;
}

/** The blobs of one pack, as recorded in an index segment. */
export interface PackRecord {
  pack: string;
  entries: PackEntry[];
}

/** In-memory location index with its persisted segments. */
export class LocationIndex {
  /** Where each indexed blob lives, in the order first seen; {@link table} finds them by digest. */
  private readonly locations: BlobLocation[] = [];
  private readonly table = new DigestTable((n) => this.locations[n]!.entry.digest, 1 << 14);
  private readonly packs = new Map<string, PackEntry[]>();
  /** Packs added since the last segment was written. */
  private pending: PackRecord[] = [];
  /** Segment object names this index was loaded from or wrote. */
  readonly segments = new Set<string>();

  /** Number of blobs indexed. */
  get size(): number {
    return this.locations.length;
  }

  /** Pack ids that the index knows. */
  packIds(): IterableIterator<string> {
    return this.packs.keys();
  }

  /** Entries of one pack, if indexed. */
  packEntries(pack: string): readonly PackEntry[] | undefined {
    return this.packs.get(pack);
  }

  has(digest: Buffer): boolean {
    return this.table.has(digest);
  }

  get(digest: Buffer): BlobLocation | undefined {
    const n = this.table.get(digest);
    return n < 0 ? undefined : this.locations[n];
  }

  /** Records a pack's blobs. `persisted` is false for packs not yet in any segment. */
  addPack(pack: string, entries: PackEntry[], persisted: boolean): void {
    if (this.packs.has(pack)) return;
    this.packs.set(pack, entries);
    // The first pack seen with a blob keeps it (a later copy, e.g. from an interrupted
    // compaction, is not looked up).
    for (const entry of entries) if (this.table.add(entry.digest) >= 0) this.locations.push({ pack, entry });
    if (!persisted) this.pending.push({ pack, entries });
  }

  /** True when packs were added that no segment records yet. */
  get hasPending(): boolean {
    return this.pending.length > 0;
  }

  /** Loads every segment from the backend. */
  async load(backend: Backend, key: Buffer | null): Promise<void> {
    await this.loadSegments(backend, key, await backend.listNames('index'));
  }

  /** Loads the segments named `names` (object names under index/) into the index. */
  async loadSegments(backend: Backend, key: Buffer | null, names: readonly string[]): Promise<void> {
    await Promise.all(
      names.map(async (name) => {
        const data = await backend.read(name);
        for (const rec of decodeSegment(data, key, name)) this.addPack(rec.pack, rec.entries, true);
        this.segments.add(name);
      }),
    );
  }

  /** Forgets everything (before a reload from scratch). */
  clear(): void {
    this.table.clear();
    this.locations.length = 0;
    this.packs.clear();
    this.pending = [];
    this.segments.clear();
  }

  /** Writes the pending packs as a new segment (after their pack files are durable). */
  async flush(backend: Backend, key: Buffer | null): Promise<string | null> {
    if (this.pending.length === 0) return null;
    const recs = this.pending;
    const name = await writeSegment(backend, key, recs);
    this.pending = [];
    this.segments.add(name);
    return name;
  }
}

/** Encodes and writes one segment; returns its object name. */
export async function writeSegment(
  backend: Backend,
  key: Buffer | null,
  recs: readonly PackRecord[],
): Promise<string> {
  const parts: Buffer[] = [];
  const count = Buffer.alloc(4);
  count.writeUInt32LE(recs.length, 0);
  parts.push(count);
  for (const r of recs) {
    parts.push(Buffer.from(r.pack, 'hex'), encodeEntries(r.entries));
  }
  const body = Buffer.concat(parts);
  const file = Buffer.concat([INDEX_MAGIC, protect(body, key)]);
  const name = `index/${sha256(file).toString('hex')}`;
  await backend.write(name, file);
  return name;
}

/** Parses one segment file. */
export function decodeSegment(data: Buffer, key: Buffer | null, name: string): PackRecord[] {
  const bad = (why: string): never => {
    throw new VmvaultError('E_INDEX_CORRUPT', `index segment ${name} is damaged: ${why}`, {
      hint: `move ${name} out of the repository, then run 'vmvault gc': it indexes the packs again from their trailers`,
    });
  };
  if (!data.subarray(0, INDEX_MAGIC.length).equals(INDEX_MAGIC)) bad('bad magic');
  const body = unprotect(data.subarray(INDEX_MAGIC.length), key);
  if (!body || body.length < 4) return bad(key ? 'authentication failed' : 'checksum mismatch');
  const n = body.readUInt32LE(0);
  let p = 4;
  const out: PackRecord[] = [];
  for (let i = 0; i < n; i++) {
    if (p + 32 > body.length) bad('truncated');
    const pack = body.subarray(p, p + 32).toString('hex');
    const entries: PackEntry[] = [];
    p = decodeEntries(body, p + 32, entries, name);
    out.push({ pack, entries });
  }
  if (p !== body.length) bad('trailing bytes');
  return out;
}
