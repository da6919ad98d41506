/**
 * FAT directory entries: 32-byte short (8.3) entries and the VFAT long-name entries that precede
 * them (attribute 0x0F, sequence numbers counting down, checksum of the short name).
 */
import { u8, u16, u32 } from '../util/bytes.js';
import { decodeCp850 } from './codepage.js';

/** Directory entry attribute bits. */
export const ATTR = {
  READ_ONLY: 0x01,
  HIDDEN: 0x02,
  SYSTEM: 0x04,
  VOLUME_ID: 0x08,
  DIRECTORY: 0x10,
  LONG_NAME: 0x0f,
} as const;

/** A decoded directory entry. */
export interface FatDirent {
  name: string;
  attr: number;
  firstCluster: number;
  size: number;
  mtime: Date;
  atime: Date;
  /** Index of the short entry within the directory (unique per directory). */
  slot: number;
}

/** Checksum of an 11-byte short name, stored in every long-name entry. */
export function shortNameChecksum(name: Buffer): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = (((sum & 1) << 7) + (sum >> 1) + name[i]!) & 0xff;
  return sum;
}

/** Decodes a FAT date and time (local time by convention; read as UTC). */
export function fatDate(date: number, time = 0, tenths = 0): Date {
  if (date === 0) return new Date(Date.UTC(1980, 0, 1));
  const y = 1980 + (date >> 9);
  const mo = Math.max(1, Math.min(12, (date >> 5) & 15));
  const d = Math.max(1, date & 31);
  const ms = Math.floor(tenths / 100) * 1000 + (tenths % 100) * 10;
  return new Date(Date.UTC(y, mo - 1, d, time >> 11, (time >> 5) & 63, (time & 31) * 2) + ms);
}

function shortName(raw: Buffer, ntres: number): string {
  const n = Buffer.from(raw.subarray(0, 11));
  if (n[0] === 0x05) n[0] = 0xe5;
  let base = decodeCp850(n.subarray(0, 8)).replace(/ +$/, '');
  let ext = decodeCp850(n.subarray(8, 11)).replace(/ +$/, '');
  if (ntres & 0x08) base = base.toLowerCase();
  if (ntres & 0x10) ext = ext.toLowerCase();
  return ext ? `${base}.${ext}` : base;
}

const LFN_OFFSETS = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/**
 * Parses a directory's bytes. Stops at the first never-used entry; skips deleted entries, `.`,
 * `..` and volume labels; keeps a long name only when its sequence is complete and its checksum
 * matches the short entry. `volumeLabel` receives the label entry, if any.
 */
export function parseFatDirectory(
  buf: Buffer,
  fat32: boolean,
  out: FatDirent[],
  slotBase = 0,
): { volumeLabel: string | undefined; ended: boolean } {
  let volumeLabel: string | undefined;
  let lfnParts: string[] = [];
  let lfnExpect = 0;
  let lfnSum = -1;
  for (let off = 0; off + 32 <= buf.length; off += 32) {
    const first = u8(buf, off);
    if (first === 0x00) return { volumeLabel, ended: true };
    const attr = u8(buf, off + 11);
    if (first === 0xe5) {
      lfnExpect = 0;
      continue;
    }
    if ((attr & 0x3f) === ATTR.LONG_NAME) {
      const ord = first & 0x1f;
      const sum = u8(buf, off + 13);
      if (first & 0x40) {
        lfnParts = [];
        lfnExpect = ord;
        lfnSum = sum;
      } else if (ord !== lfnExpect || sum !== lfnSum) {
        lfnExpect = 0;
        continue;
      }
      if (ord === 0 || lfnExpect === 0) {
        lfnExpect = 0;
        continue;
      }
      let chars = '';
      for (const o of LFN_OFFSETS) chars += String.fromCharCode(u16(buf, off + o));
      lfnParts[ord - 1] = chars;
      lfnExpect = ord - 1;
      continue;
    }
    const raw = buf.subarray(off, off + 11);
    const complete = lfnExpect === 0 && lfnParts.length > 0 && lfnSum === shortNameChecksum(raw);
    const longName = complete ? lfnParts.join('').split('\u0000')[0] : undefined;
    lfnParts = [];
    lfnExpect = 0;
    if (attr & ATTR.VOLUME_ID) {
      if (!(attr & ATTR.DIRECTORY)) volumeLabel = raw.toString('latin1').replace(/ +$/, '');
      continue;
    }
    const name = longName || shortName(raw, u8(buf, off + 12));
    if (name === '.' || name === '..') continue;
    const hi = fat32 ? u16(buf, off + 20) : 0;
    out.push({
      name,
      attr,
      firstCluster: hi * 0x10000 + u16(buf, off + 26),
      size: u32(buf, off + 28),
      mtime: fatDate(u16(buf, off + 24), u16(buf, off + 22)),
      atime: fatDate(u16(buf, off + 18)),
      slot: slotBase + off / 32,
    });
  }
  return { volumeLabel, ended: false };
}
