/**
 * Encoders of the replies a server sends in the transmission phase: simple replies and structured
 * reply chunks (OFFSET_DATA header, OFFSET_HOLE, NONE, BLOCK_STATUS, ERROR). `cookie` is the
 * request's 8 raw cookie bytes.
 */
import {
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from './constants.js';

/** One BLOCK_STATUS descriptor. */
export interface StatusExtent {
  length: number;
  flags: number;
}

/** Simple reply (16 bytes); the READ data, if any, follows it on the wire. */
export function simpleReply(cookie: Buffer, errno: number): Buffer {
  const h = Buffer.allocUnsafe(16);
  h.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  h.writeUInt32BE(errno, 4);
  cookie.copy(h, 8);
  return h;
}

/** Chunk header announcing `length` payload bytes, followed by `bodyBytes` bytes for the caller to fill. */
function chunk(cookie: Buffer, flags: number, type: number, length: number, bodyBytes = length): Buffer {
  const b = Buffer.allocUnsafe(20 + bodyBytes);
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  cookie.copy(b, 8);
  b.writeUInt32BE(length, 16);
  return b;
}

function writeOffset(b: Buffer, at: number, offset: number): void {
  b.writeUInt32BE(Math.floor(offset / 0x100000000), at);
  b.writeUInt32BE(offset >>> 0, at + 4);
}

/** OFFSET_DATA chunk header and offset (28 bytes); the `dataLength` data bytes follow it. */
export function dataChunkHeader(cookie: Buffer, flags: number, offset: number, dataLength: number): Buffer {
  const h = chunk(cookie, flags, NBD_REPLY_TYPE_OFFSET_DATA, dataLength + 8, 8);
  writeOffset(h, 20, offset);
  return h;
}

/** OFFSET_HOLE chunk (32 bytes). */
export function holeChunk(cookie: Buffer, flags: number, offset: number, length: number): Buffer {
  const b = chunk(cookie, flags, NBD_REPLY_TYPE_OFFSET_HOLE, 12);
  writeOffset(b, 20, offset);
  b.writeUInt32BE(length, 28);
  return b;
}

/** NONE chunk with DONE: the empty successful answer. */
export function noneChunk(cookie: Buffer): Buffer {
  return chunk(cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0);
}

/** Final BLOCK_STATUS chunk for one metadata context. */
export function blockStatusChunk(cookie: Buffer, contextId: number, extents: StatusExtent[]): Buffer {
  const b = chunk(cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, 4 + 8 * extents.length);
  b.writeUInt32BE(contextId, 20);
  extents.forEach((e, i) => {
    b.writeUInt32BE(e.length, 24 + 8 * i);
    b.writeUInt32BE(e.flags, 28 + 8 * i);
  });
  return b;
}

/** Final ERROR chunk carrying `errno` and (the first 200 characters of) a message. */
export function errorChunk(cookie: Buffer, errno: number, message: string): Buffer {
  const msg = Buffer.from(message.slice(0, 200), 'utf8');
  const b = chunk(cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 6 + msg.length);
  b.writeUInt32BE(errno, 20);
  b.writeUInt16BE(msg.length, 24);
  msg.copy(b, 26);
  return b;
}
