/**
 * The restore-point index (the logical map): chunk number → chunk digest, stored as a tree of
 * content-addressed pages. A page holds up to PAGE_FANOUT digests: leaves name chunks, inner
 * pages name pages. Zero chunks and all-zero pages are the all-zero digest and are not stored,
 * so holes cost nothing; unchanged pages have unchanged digests, so a backup of an unchanged
 * disk adds no page at all and metadata grows with what changed.
 *
 *   page = "VVPG" u8 version u8 level u16 0 u32 count | presence bitmap (count bits, LSB first)
 *          | 32-byte digest per present entry
 */
import { VmvaultError } from '../core/index.js';
import { hex } from './crypto.js';
import {
  DIGEST_SIZE,
  PAGE_FANOUT,
  PAGE_HEADER_SIZE,
  PAGE_MAGIC,
  PAGE_VERSION,
  ZERO_DIGEST,
} from './format.js';

/** Shape of a tree: how many chunks and levels. */
export interface TreeShape {
  chunkCount: number;
  levels: number;
}

/** Number of levels needed for `chunkCount` chunks (at least 1). */
export function levelsFor(chunkCount: number): number {
  let levels = 1;
  let span = PAGE_FANOUT;
  while (span < chunkCount) {
    span *= PAGE_FANOUT;
    levels++;
  }
  return levels;
}

/** Number of entries that page `pageNo` at `level` holds in a tree of `chunkCount` chunks. */
function entriesOfPage(chunkCount: number, level: number, pageNo: number): number {
  const below = Math.ceil(chunkCount / PAGE_FANOUT ** level); // entries at this level overall
  return Math.min(PAGE_FANOUT, below - pageNo * PAGE_FANOUT);
}

/** Encodes a page; `null` entries are zero. Returns null when every entry is zero. */
export function encodePage(level: number, entries: readonly (Buffer | null)[]): Buffer | null {
  const count = entries.length;
  const bitmapLen = Math.ceil(count / 8);
  let present = 0;
  for (const e of entries) if (e) present++;
  if (present === 0) return null;
  const page = Buffer.alloc(PAGE_HEADER_SIZE + bitmapLen + present * DIGEST_SIZE);
  PAGE_MAGIC.copy(page, 0);
  page[4] = PAGE_VERSION;
  page[5] = level;
  page.writeUInt32LE(count, 8);
  let p = PAGE_HEADER_SIZE + bitmapLen;
  for (let i = 0; i < count; i++) {
    const e = entries[i];
    if (!e) continue;
    page[PAGE_HEADER_SIZE + (i >> 3)]! |= 1 << (i & 7);
    e.copy(page, p);
    p += DIGEST_SIZE;
  }
  return page;
}

/** Decodes a page, checking it has the expected level and entry count. */
export function decodePage(page: Buffer, level: number, count: number, digest: Buffer): (Buffer | null)[] {
  const bad = (why: string): never => {
    throw new VmvaultError('E_CORRUPT', `index page ${hex(digest)} is malformed: ${why}`);
  };
  if (page.length < PAGE_HEADER_SIZE || !page.subarray(0, 4).equals(PAGE_MAGIC)) bad('bad magic');
  if (page[4] !== PAGE_VERSION) bad(`version ${page[4]}`);
  if (page[5] !== level) bad(`level ${page[5]}, expected ${level}`);
  if (page.readUInt32LE(8) !== count) bad(`${page.readUInt32LE(8)} entries, expected ${count}`);
  const bitmapLen = Math.ceil(count / 8);
  const out: (Buffer | null)[] = new Array(count).fill(null);
  let p = PAGE_HEADER_SIZE + bitmapLen;
  for (let i = 0; i < count; i++) {
    if ((page[PAGE_HEADER_SIZE + (i >> 3)]! & (1 << (i & 7))) === 0) continue;
    if (p + DIGEST_SIZE > page.length) bad('truncated');
    out[i] = page.subarray(p, p + DIGEST_SIZE);
    p += DIGEST_SIZE;
  }
  if (p !== page.length) bad('trailing bytes');
  return out;
}

/** Stores an encoded page and returns its digest. */
export type PageStore = (level: number, page: Buffer) => Promise<Buffer>;
/** Loads a stored page by digest. */
export type PageLoader = (digest: Buffer) => Promise<Buffer>;

/**
 * Builds a tree from chunk digests given in increasing chunk order (gaps are zero chunks).
 * Memory is one page per level.
 */
export class TreeBuilder {
  readonly levels: number;
  private readonly cur: { pageNo: number; entries: (Buffer | null)[] }[] = [];
  private last = -1;

  constructor(
    readonly chunkCount: number,
    private readonly store: PageStore,
  ) {
    this.levels = levelsFor(chunkCount);
    for (let l = 0; l < this.levels; l++) this.cur.push({ pageNo: 0, entries: [] });
  }

  /** Sets chunk `index` (strictly increasing across calls) to `digest` (null = zero). */
  async set(index: number, digest: Buffer | null): Promise<void> {
    if (index <= this.last || index >= this.chunkCount) {
      throw new VmvaultError('E_INTERNAL', `tree: chunk ${index} out of order or range`);
    }
    this.last = index;
    if (digest && !digest.equals(ZERO_DIGEST)) await this.put(0, index, digest);
  }

  /**
   * Sets a whole leaf page (chunks `[pageNo·512, …)`) to an existing page's digest, e.g. one
   * taken unchanged from a parent tree of the same shape; null makes it all zero.
   */
  async setLeaf(pageNo: number, digest: Buffer | null): Promise<void> {
    const first = pageNo * PAGE_FANOUT;
    if (first <= this.last || first >= this.chunkCount) {
      throw new VmvaultError('E_INTERNAL', `tree: leaf ${pageNo} out of order or range`);
    }
    this.last = Math.min(this.chunkCount, first + PAGE_FANOUT) - 1;
    await this.flushPage(0);
    this.cur[0]!.pageNo = pageNo;
    if (!digest || digest.equals(ZERO_DIGEST)) return;
    if (this.levels === 1) this.root = digest;
    else await this.put(1, pageNo, digest);
  }

  /**
   * Sets every chunk of leaf page `pageNo` at once: `entries[i]` is chunk `pageNo·512 + i`
   * (null or the zero digest = zero chunk; missing trailing entries are zero). One call instead
   * of one {@link set} per chunk, for trees patched leaf by leaf.
   */
  async setLeafEntries(pageNo: number, entries: readonly (Buffer | null)[]): Promise<void> {
    const first = pageNo * PAGE_FANOUT;
    const end = Math.min(this.chunkCount, first + PAGE_FANOUT);
    if (first <= this.last || first >= this.chunkCount || entries.length > end - first) {
      throw new VmvaultError('E_INTERNAL', `tree: leaf ${pageNo} out of order or range`);
    }
    this.last = end - 1;
    await this.flushPage(0);
    const c = this.cur[0]!;
    c.pageNo = pageNo;
    const kept: (Buffer | null)[] = [];
    let any = false;
    for (let i = 0; i < entries.length; i++) {
      const d = entries[i] ?? null;
      const real = d !== null && !d.equals(ZERO_DIGEST);
      kept.push(real ? d : null);
      any ||= real;
    }
    c.entries = any ? kept : [];
  }

  private async put(level: number, index: number, digest: Buffer): Promise<void> {
    const pageNo = Math.floor(index / PAGE_FANOUT);
    const c = this.cur[level]!;
    if (pageNo !== c.pageNo) {
      await this.flushPage(level);
      c.pageNo = pageNo;
    }
    c.entries[index % PAGE_FANOUT] = digest;
  }

  private async flushPage(level: number): Promise<void> {
    const c = this.cur[level]!;
    if (c.entries.length === 0) return;
    const count = entriesOfPage(this.chunkCount, level, c.pageNo);
    const entries: (Buffer | null)[] = new Array(count).fill(null);
    for (let i = 0; i < c.entries.length; i++) entries[i] = c.entries[i] ?? null;
    c.entries = [];
    const page = encodePage(level, entries);
    if (!page) return;
    const d = await this.store(level, page);
    if (level + 1 < this.levels) await this.put(level + 1, c.pageNo, d);
    else this.root = d;
  }

  private root: Buffer = ZERO_DIGEST;

  /** Flushes every level and returns the root digest (all zero for an all-zero disk). */
  async finish(): Promise<Buffer> {
    for (let l = 0; l < this.levels; l++) await this.flushPage(l);
    return this.root;
  }
}

/** Reads a tree: walks leaves in order, or looks up single chunks with a small page cache. */
export class TreeReader {
  readonly levels: number;
  private readonly cache = new Map<string, (Buffer | null)[]>();

  constructor(
    readonly root: Buffer,
    readonly chunkCount: number,
    private readonly load: PageLoader,
    private readonly cacheLimit = 64,
  ) {
    this.levels = levelsFor(chunkCount);
  }

  private async page(level: number, pageNo: number, digest: Buffer): Promise<(Buffer | null)[]> {
    const k = digest.toString('latin1');
    const hit = this.cache.get(k);
    if (hit) return hit;
    const entries = decodePage(
      await this.load(digest),
      level,
      entriesOfPage(this.chunkCount, level, pageNo),
      digest,
    );
    this.cache.set(k, entries);
    if (this.cache.size > this.cacheLimit) this.cache.delete(this.cache.keys().next().value as string);
    return entries;
  }

  /** Digest of chunk `index`, or null when it is a zero chunk. */
  lookup(index: number): Promise<Buffer | null> {
    return this.entry(0, index);
  }

  /**
   * The chunk digests of leaf page `leafNo` (chunks from `leafNo · PAGE_FANOUT` on), null for
   * zero chunks; all null when the whole leaf is zero. The array is shared: do not modify it.
   */
  async leaf(leafNo: number): Promise<readonly (Buffer | null)[]> {
    const digest = await this.entry(1, leafNo);
    if (!digest) return new Array<Buffer | null>(entriesOfPage(this.chunkCount, 0, leafNo)).fill(null);
    return this.page(0, leafNo, digest);
  }

  /**
   * The digest at position `index` among all entries of the pages at `level`: level 0 entries
   * are chunks, level 1 entries are leaf pages, and so on (level `levels` is the root). Null for
   * zero.
   */
  async entry(level: number, index: number): Promise<Buffer | null> {
    let digest: Buffer | null = this.root.equals(ZERO_DIGEST) ? null : this.root;
    for (let l = this.levels - 1; l >= level && digest; l--) {
      const span = PAGE_FANOUT ** (l - level);
      const pageNo = Math.floor(index / (span * PAGE_FANOUT));
      const entries = await this.page(l, pageNo, digest);
      digest = entries[Math.floor(index / span) % PAGE_FANOUT] ?? null;
    }
    return digest;
  }

  /**
   * Yields every leaf page that holds data, in chunk order, as the chunk number of its first
   * entry and its entries. All-zero leaves are skipped. With `withPages`, also reports the
   * digest of every stored page (for gc and verify).
   */
  async *leaves(
    onPage?: (digest: Buffer, level: number) => void,
  ): AsyncGenerator<{ first: number; entries: (Buffer | null)[] }> {
    if (this.root.equals(ZERO_DIGEST)) return;
    const walk = async function* (
      self: TreeReader,
      level: number,
      pageNo: number,
      digest: Buffer,
    ): AsyncGenerator<{ first: number; entries: (Buffer | null)[] }> {
      onPage?.(digest, level);
      const entries = decodePage(
        await self.load(digest),
        level,
        entriesOfPage(self.chunkCount, level, pageNo),
        digest,
      );
      if (level === 0) {
        yield { first: pageNo * PAGE_FANOUT, entries };
        return;
      }
      for (let i = 0; i < entries.length; i++) {
        const child = entries[i];
        if (child) yield* walk(self, level - 1, pageNo * PAGE_FANOUT + i, child);
      }
    };
    yield* walk(this, this.levels - 1, 0, this.root);
  }
}
