/**
 * Bounds-checked little-endian field access. Every accessor throws `E_FS_CORRUPT` instead of the
 * `RangeError` that `Buffer` would raise when hostile metadata sends an offset outside a buffer.
 */
import { fsCorrupt } from './errors.js';

function check(buf: Buffer, off: number, len: number): void {
  if (!Number.isInteger(off) || off < 0 || off + len > buf.length) {
    throw fsCorrupt(`field at offset ${off} (+${len}) lies outside a ${buf.length}-byte structure`);
  }
}

/** Unsigned 8-bit value. */
export function u8(buf: Buffer, off: number): number {
  check(buf, off, 1);
  return buf[off]!;
}

/** Unsigned 16-bit little-endian value. */
export function u16(buf: Buffer, off: number): number {
  check(buf, off, 2);
  return buf.readUInt16LE(off);
}

/** Unsigned 32-bit little-endian value. */
export function u32(buf: Buffer, off: number): number {
  check(buf, off, 4);
  return buf.readUInt32LE(off);
}

/** Signed 32-bit little-endian value. */
export function i32(buf: Buffer, off: number): number {
  check(buf, off, 4);
  return buf.readInt32LE(off);
}

/**
 * Unsigned 64-bit little-endian value as a number. Values above 2^53 cannot address anything on a
 * real disk, so they are reported as corrupt.
 */
export function u64(buf: Buffer, off: number): number {
  check(buf, off, 8);
  const v = buf.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw fsCorrupt(`64-bit field at offset ${off} is absurdly large`);
  return Number(v);
}

/** A sub-range of `buf`, bounds-checked (shares memory). */
export function slice(buf: Buffer, off: number, len: number): Buffer {
  check(buf, off, len);
  return buf.subarray(off, off + len);
}

/** Combines a low 32-bit and a high word into a number. */
export function hiLo(hi: number, lo: number): number {
  return hi * 0x1_0000_0000 + lo;
}

/** Text up to the first NUL, decoded as UTF-8 (invalid sequences become U+FFFD). */
export function cString(buf: Buffer): string {
  const end = buf.indexOf(0);
  return buf.subarray(0, end < 0 ? buf.length : end).toString('utf8');
}

/** UTF-16LE text up to the first NUL code unit. */
export function utf16z(buf: Buffer): string {
  let end = buf.length - (buf.length % 2);
  for (let i = 0; i + 1 < buf.length; i += 2) {
    if (buf[i] === 0 && buf[i + 1] === 0) {
      end = i;
      break;
    }
  }
  return buf.subarray(0, end).toString('utf16le');
}

/** Formats 16 bytes as a canonical UUID (bytes in order, as ext4 and Linux print them). */
export function uuidString(b: Buffer): string {
  const h = b.subarray(0, 16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** Formats a 16-byte mixed-endian GUID (GPT/Microsoft layout) in its usual upper-case text form. */
export function guidString(b: Buffer): string {
  const hex = (x: Buffer) => x.toString('hex');
  const rev = (s: number, e: number) => hex(Buffer.from(b.subarray(s, e)).reverse());
  return `${rev(0, 4)}-${rev(4, 6)}-${rev(6, 8)}-${hex(b.subarray(8, 10))}-${hex(b.subarray(10, 16))}`.toUpperCase();
}

/** True when every byte of `buf` is zero. */
export function isZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}
