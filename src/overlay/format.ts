/**
 * Byte layout of an overlay file (docs/format.md, "Overlay file"): a 4 KiB header block, two
 * chunk bitmaps ("in the overlay", "reads as zeros"), then the data area where chunk `i` lives
 * at `dataOffset + i · chunkSize`. Every constant of the layout is defined here, and only here.
 *
 *   header (first 512 bytes of a 4096-byte block, little-endian):
 *     0   "VVOVL\0\0\1"        8   u32 version       12  u32 chunk size
 *     16  u64 disk size         24  u64 bitmap offset 32  u64 bytes per bitmap
 *     40  u64 data offset       48  16 bytes point id (ASCII hex)
 *     64  u8 disk-name length   65  disk name (UTF-8, ≤ 255 bytes, zero padded)
 *     320 u64 creation time (ms since the epoch)
 *     448 SHA-256 of bytes [0, 448)
 *     480 u32 state (0 closed, 1 open)   484 u32 pid   488 u8 host length   489 host (≤ 64 bytes)
 */
import { createHash } from 'node:crypto';
import { VmvaultError } from '../core/index.js';

/** First 8 bytes of every overlay file. */
export const OVERLAY_MAGIC = Buffer.from('VVOVL\x00\x00\x01', 'latin1');
/** Layout version written into the header. */
export const OVERLAY_VERSION = 1;
/** Size of the header block; the bitmaps start right after it. */
export const HEADER_BLOCK = 4096;
/** Unit in which bitmaps are sized and written back. */
export const BITMAP_PAGE = 4096;
/** Bytes of the header covered by its checksum (the fields that never change). */
const SUMMED = 448;
const SUM_AT = 448;
const STATE_AT = 480;
const PID_AT = 484;
const HOST_LEN_AT = 488;
const HOST_AT = 489;
/** Longest host name recorded (longer ones are cut). */
const HOST_MAX = 64;
/** Longest disk name (bytes of UTF-8). */
export const DISK_NAME_MAX = 255;
/** Bytes of the header that must exist for it to be read at all. */
export const HEADER_MIN = 512;

/** Offset and length of the part of the header rewritten on open and close. */
export const STATE_RANGE = { offset: STATE_AT, length: HOST_AT + HOST_MAX - STATE_AT } as const;

/** The state word: whether a process has the overlay open. */
export const OverlayState = { closed: 0, open: 1 } as const;

/** The fixed fields of an overlay header. */
export interface OverlayHeader {
  chunkSize: number;
  size: number;
  bitmapOffset: number;
  /** Bytes of each of the two bitmaps (a multiple of {@link BITMAP_PAGE}). */
  bitmapBytes: number;
  dataOffset: number;
  pointId: string;
  disk: string;
  createdAt: number;
}

/** Who holds an overlay open, from the state part of the header. */
export interface OverlayHolder {
  state: number;
  pid: number;
  host: string;
}

/** The layout of a new overlay of `size` bytes cut in `chunkSize` chunks. */
export function layoutFor(
  size: number,
  chunkSize: number,
): Omit<OverlayHeader, 'pointId' | 'disk' | 'createdAt'> {
  const chunkCount = Math.ceil(size / chunkSize);
  const bitmapBytes = roundUp(Math.max(1, Math.ceil(chunkCount / 8)), BITMAP_PAGE);
  const bitmapOffset = HEADER_BLOCK;
  // Data slots are aligned to the chunk size, so each one is aligned on the filesystem too.
  const dataOffset = roundUp(bitmapOffset + 2 * bitmapBytes, Math.max(chunkSize, BITMAP_PAGE));
  return { chunkSize, size, bitmapOffset, bitmapBytes, dataOffset };
}

/** `n` rounded up to a multiple of `m`. */
export function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

/** Encodes a whole header block (state "open", held by `holder`). */
export function encodeHeader(h: OverlayHeader, holder: OverlayHolder): Buffer {
  const b = Buffer.alloc(HEADER_BLOCK);
  OVERLAY_MAGIC.copy(b, 0);
  b.writeUInt32LE(OVERLAY_VERSION, 8);
  b.writeUInt32LE(h.chunkSize, 12);
  b.writeBigUInt64LE(BigInt(h.size), 16);
  b.writeBigUInt64LE(BigInt(h.bitmapOffset), 24);
  b.writeBigUInt64LE(BigInt(h.bitmapBytes), 32);
  b.writeBigUInt64LE(BigInt(h.dataOffset), 40);
  b.write(h.pointId, 48, 16, 'latin1');
  const name = Buffer.from(h.disk, 'utf8');
  b[64] = name.length;
  name.copy(b, 65);
  b.writeBigUInt64LE(BigInt(h.createdAt), 320);
  createHash('sha256').update(b.subarray(0, SUMMED)).digest().copy(b, SUM_AT);
  encodeHolder(holder).copy(b, STATE_RANGE.offset);
  return b;
}

/** Encodes the state part of the header ({@link STATE_RANGE}). */
export function encodeHolder(holder: OverlayHolder): Buffer {
  const b = Buffer.alloc(STATE_RANGE.length);
  b.writeUInt32LE(holder.state, STATE_AT - STATE_AT);
  b.writeUInt32LE(holder.pid >>> 0, PID_AT - STATE_AT);
  const host = Buffer.from(holder.host, 'utf8').subarray(0, HOST_MAX);
  b[HOST_LEN_AT - STATE_AT] = host.length;
  host.copy(b, HOST_AT - STATE_AT);
  return b;
}

/** Checks that a point id and disk name fit the header. */
export function checkIdentity(pointId: string, disk: string): void {
  if (!/^[0-9a-f]{16}$/.test(pointId)) {
    throw new VmvaultError('E_USAGE', `'${pointId}' is not a restore point id (16 hex digits)`);
  }
  const n = Buffer.byteLength(disk, 'utf8');
  if (n === 0 || n > DISK_NAME_MAX) {
    throw new VmvaultError('E_USAGE', `disk name must be 1 to ${DISK_NAME_MAX} bytes, not ${n}`);
  }
}

/**
 * Decodes and checks a header block read from `path` (`fileSize` bytes long). Every problem is
 * an `E_CORRUPT` (or `E_UNSUPPORTED` for a newer version) error naming the file.
 */
export function decodeHeader(
  block: Buffer,
  path: string,
  fileSize: number,
): { header: OverlayHeader; holder: OverlayHolder } {
  const bad = (why: string): never => {
    throw new VmvaultError('E_CORRUPT', `overlay ${path} is damaged: ${why}`, {
      hint: 'discard it (its writes are lost) or restore it from a copy',
      details: { path },
    });
  };
  if (block.length < HEADER_MIN) {
    if (block.length >= OVERLAY_MAGIC.length && !block.subarray(0, 8).equals(OVERLAY_MAGIC)) {
      throw notOverlay(path);
    }
    bad(`truncated header (${block.length} bytes)`);
  }
  if (!block.subarray(0, 8).equals(OVERLAY_MAGIC)) throw notOverlay(path);
  const version = block.readUInt32LE(8);
  const sum = createHash('sha256').update(block.subarray(0, SUMMED)).digest();
  if (!sum.equals(block.subarray(SUM_AT, SUM_AT + 32))) bad('header checksum mismatch');
  if (version !== OVERLAY_VERSION) {
    throw new VmvaultError('E_UNSUPPORTED', `overlay ${path} has layout version ${version}`, {
      hint: `this vmvault reads version ${OVERLAY_VERSION}; use the vmvault that wrote it`,
    });
  }
  const num = (at: number): number => {
    const v = block.readBigUInt64LE(at);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) bad(`field at ${at} is out of range`);
    return Number(v);
  };
  const chunkSize = block.readUInt32LE(12);
  const nameLen = block[64]!;
  const header: OverlayHeader = {
    chunkSize,
    size: num(16),
    bitmapOffset: num(24),
    bitmapBytes: num(32),
    dataOffset: num(40),
    pointId: block.toString('latin1', 48, 64),
    disk: block.toString('utf8', 65, 65 + nameLen),
    createdAt: num(320),
  };
  // The checksum passed, so these only fail for files written by something else.
  const want = layoutFor(header.size, chunkSize);
  if (
    chunkSize < 512 ||
    (chunkSize & (chunkSize - 1)) !== 0 ||
    header.bitmapOffset !== want.bitmapOffset ||
    header.bitmapBytes !== want.bitmapBytes ||
    header.dataOffset !== want.dataOffset ||
    nameLen === 0
  ) {
    bad('inconsistent layout');
  }
  if (fileSize < header.dataOffset + header.size) {
    bad(`truncated: ${fileSize} bytes, the layout needs ${header.dataOffset + header.size}`);
  }
  const s = STATE_AT;
  const hostLen = Math.min(HOST_MAX, block[HOST_LEN_AT]!);
  const holder: OverlayHolder = {
    state: block.readUInt32LE(s),
    pid: block.readUInt32LE(PID_AT),
    host: block.toString('utf8', HOST_AT, HOST_AT + hostLen),
  };
  return { header, holder };
}

function notOverlay(path: string): VmvaultError {
  return new VmvaultError('E_CORRUPT', `${path} is not a vmvault overlay file`, {
    hint: 'check the path given as the overlay',
    details: { path },
  });
}
