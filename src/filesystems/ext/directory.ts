/**
 * Linear directory entries (`ext4_dir_entry_2`): inode, record length, name length, file type,
 * name. Hashed (htree) directories are read the same way: their index blocks look like one empty
 * entry spanning the block, and the root's index hides inside the `..` record.
 */
import { u8, u16, u32 } from '../util/bytes.js';
import { fsCorrupt } from '../util/errors.js';

/** A raw directory entry. */
export interface RawDirent {
  name: string;
  ino: number;
}

/**
 * Appends the entries of one directory block (or inline-data region) to `out`, skipping unused
 * records, `.` and `..`. Records must be 4-byte aligned, at least 8 bytes and stay in the block.
 */
export function parseDirBlock(buf: Buffer, fileType: boolean, inodesCount: number, out: RawDirent[]): void {
  let off = 0;
  while (off + 8 <= buf.length) {
    const ino = u32(buf, off);
    let recLen = u16(buf, off + 4);
    if (recLen === 0 && buf.length === 65536) recLen = 65536;
    const nameLen = fileType ? u8(buf, off + 6) : u16(buf, off + 6);
    if (recLen < 8 || recLen % 4 !== 0 || off + recLen > buf.length) {
      throw fsCorrupt(`directory record at offset ${off} has invalid length ${recLen}`);
    }
    if (ino !== 0) {
      if (nameLen === 0 || 8 + nameLen > recLen)
        throw fsCorrupt(`directory record at offset ${off} has a bad name length`);
      if (ino > inodesCount) throw fsCorrupt(`directory entry points to inode ${ino} past the inode count`);
      const raw = buf.subarray(off + 8, off + 8 + nameLen);
      const isDot =
        (nameLen === 1 && raw[0] === 0x2e) || (nameLen === 2 && raw[0] === 0x2e && raw[1] === 0x2e);
      if (!isDot) out.push({ name: raw.toString('utf8'), ino });
    }
    off += recLen;
  }
}

/** True when the block ends in a metadata_csum leaf tail (a 12-byte fake entry, type 0xDE). */
export function hasDirTail(buf: Buffer): boolean {
  const t = buf.length - 12;
  return (
    t >= 0 && u32(buf, t) === 0 && u16(buf, t + 4) === 12 && u8(buf, t + 6) === 0 && u8(buf, t + 7) === 0xde
  );
}
