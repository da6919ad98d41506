/**
 * Pack files: many encoded blobs back to back, then a trailer table that lists them, so that a
 * pack describes itself and the location index can always be rebuilt from the packs.
 *
 *   magic "VVPACK\0\1" | blob… | trailer (sealed when encrypted) | u32 trailer length | "VVPKEND\1"
 *
 * The plain trailer is the entry table followed by its SHA-256; see docs/format.md.
 */
import { VmvaultError } from '../core/index.js';
import { hex, protect, sha256, unprotect } from './crypto.js';
import {
  type BlobType,
  DIGEST_SIZE,
  PACK_END_MAGIC,
  PACK_ENTRY_SIZE,
  PACK_FOOTER_SIZE,
  PACK_MAGIC,
} from './format.js';

/** One blob listed in a pack trailer. */
export interface PackEntry {
  type: BlobType;
  digest: Buffer;
  /** Offset of the stored bytes in the pack. */
  offset: number;
  /** Stored (encoded) length. */
  length: number;
  /** Length of the decoded content. */
  rawLength: number;
}

/** Accumulates encoded blobs in memory until the pack is large enough to write. */
export class PackBuilder {
  private readonly parts: Buffer[] = [PACK_MAGIC];
  readonly entries: PackEntry[] = [];
  private size = PACK_MAGIC.length;

  /** Bytes of blob data so far (with the header). */
  get byteLength(): number {
    return this.size;
  }

  get count(): number {
    return this.entries.length;
  }

  add(type: BlobType, digest: Buffer, stored: Buffer, rawLength: number): PackEntry {
    const e: PackEntry = { type, digest, offset: this.size, length: stored.length, rawLength };
    this.parts.push(stored);
    this.entries.push(e);
    this.size += stored.length;
    return e;
  }

  /**
   * Finishes the pack: the buffers to write and the pack's id, the SHA-256 of its header,
   * trailer and footer. The trailer lists every blob's digest, offset and lengths (and is
   * sealed under a fresh nonce when encrypted), so the id names the pack's content without
   * hashing the blob bytes a second time: each blob already carries its own check.
   */
  finish(key: Buffer | null): { id: string; parts: Buffer[]; size: number } {
    const table = encodeEntries(this.entries);
    const trailer = protect(table, key);
    const footer = Buffer.alloc(PACK_FOOTER_SIZE);
    footer.writeUInt32LE(trailer.length, 0);
    PACK_END_MAGIC.copy(footer, 4);
    const parts = [...this.parts, trailer, footer];
    const id = sha256([PACK_MAGIC, trailer, footer]).toString('hex');
    return { id, parts, size: this.size + trailer.length + footer.length };
  }
}

/** Serialises trailer entries (also used by index segments). */
export function encodeEntries(entries: readonly PackEntry[]): Buffer {
  const buf = Buffer.alloc(4 + entries.length * PACK_ENTRY_SIZE);
  buf.writeUInt32LE(entries.length, 0);
  let p = 4;
  for (const e of entries) {
    buf[p] = e.type;
    e.digest.copy(buf, p + 1);
    buf.writeUInt32LE(e.offset, p + 33);
    buf.writeUInt32LE(e.length, p + 37);
    buf.writeUInt32LE(e.rawLength, p + 41);
    p += PACK_ENTRY_SIZE;
  }
  return buf;
}

/**
 * Parses entries written by {@link encodeEntries} starting at `start`; returns the end offset.
 * The digests are views of `buf`, not copies (a command opening a repository parses every
 * index entry at start-up, so this loop is kept allocation-light).
 */
export function decodeEntries(buf: Buffer, start: number, out: PackEntry[], what: string): number {
  if (start + 4 > buf.length) throw new VmvaultError('E_CORRUPT', `${what}: truncated entry table`);
  const n = buf.readUInt32LE(start);
  const end = start + 4 + n * PACK_ENTRY_SIZE;
  if (end > buf.length) throw new VmvaultError('E_CORRUPT', `${what}: entry table overruns (${n} entries)`);
  const u32 = (at: number): number =>
    (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16)) + buf[at + 3]! * 0x1000000;
  for (let p = start + 4; p < end; p += PACK_ENTRY_SIZE) {
    out.push({
      type: buf[p] as BlobType,
      digest: buf.subarray(p + 1, p + 1 + DIGEST_SIZE),
      offset: u32(p + 33),
      length: u32(p + 37),
      rawLength: u32(p + 41),
    });
  }
  return end;
}

/**
 * Reads a pack's trailer given the pack's total size and a function that reads its tail.
 * Throws E_PACK_CORRUPT when the trailer is damaged or the pack truncated.
 */
export async function readPackTrailer(
  packId: string,
  packSize: number,
  readRange: (offset: number, length: number) => Promise<Buffer>,
  key: Buffer | null,
): Promise<PackEntry[]> {
  const bad = (why: string): never => {
    throw new VmvaultError('E_PACK_CORRUPT', `pack ${packId} is damaged: ${why}`, {
      hint: "run 'vmvault verify' to see which restore points are affected",
      details: { pack: packId },
    });
  };
  if (packSize < PACK_MAGIC.length + PACK_FOOTER_SIZE) bad(`only ${packSize} bytes (truncated)`);
  const footer = await readRange(packSize - PACK_FOOTER_SIZE, PACK_FOOTER_SIZE);
  if (!footer.subarray(4).equals(PACK_END_MAGIC)) bad('no end marker (truncated or overwritten)');
  const tlen = footer.readUInt32LE(0);
  if (tlen > packSize - PACK_FOOTER_SIZE - PACK_MAGIC.length) bad('trailer length out of range');
  const trailer = await readRange(packSize - PACK_FOOTER_SIZE - tlen, tlen);
  const table = unprotect(trailer, key);
  if (!table) return bad(key ? 'trailer fails authentication' : 'trailer checksum mismatch');
  const entries: PackEntry[] = [];
  const end = decodeEntries(table, 0, entries, `pack ${packId}`);
  if (end !== table.length) bad('trailer has trailing bytes');
  const dataEnd = packSize - PACK_FOOTER_SIZE - tlen;
  for (const e of entries) {
    if (e.offset < PACK_MAGIC.length || e.offset + e.length > dataEnd) {
      bad(`blob ${hex(e.digest)} lies outside the pack`);
    }
  }
  return entries;
}

/** Object name of a pack in the backend. */
export function packObjectName(id: string): string {
  return `packs/${id.slice(0, 2)}/${id}`;
}

/** Pack id from an object name, or null when the name is not a pack's. */
export function packIdFromName(name: string): string | null {
  const m = /^packs\/[0-9a-f]{2}\/([0-9a-f]{64})$/.exec(name);
  return m ? (m[1] ?? null) : null;
}
