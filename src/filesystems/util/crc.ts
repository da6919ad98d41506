/**
 * Table-driven CRCs used by on-disk formats: CRC-32 (IEEE, GPT), CRC-32C (Castagnoli, ext4
 * metadata_csum) and CRC-16 (ANSI, ext4 gdt_csum).
 */

function makeTable(poly: number): Uint32Array {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ poly : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
}

const CRC32_TABLE = makeTable(0xedb88320);
const CRC32C_TABLE = makeTable(0x82f63b78);
const CRC16_TABLE = makeTable(0xa001);

function update(table: Uint32Array, seed: number, data: Uint8Array): number {
  let c = seed >>> 0;
  for (let i = 0; i < data.length; i++) c = table[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

/** Standard CRC-32 (as zlib and GPT compute it). */
export function crc32(data: Uint8Array): number {
  return ~update(CRC32_TABLE, 0xffffffff, data) >>> 0;
}

/**
 * Raw CRC-32C update without final inversion, the form ext4 stores: start with `0xffffffff` (or a
 * previous result) and chain calls.
 */
export function crc32cRaw(seed: number, data: Uint8Array): number {
  return update(CRC32C_TABLE, seed, data);
}

/** Raw CRC-16 (reflected polynomial 0x8005) update, as ext4's `gdt_csum` uses it. */
export function crc16Raw(seed: number, data: Uint8Array): number {
  return update(CRC16_TABLE, seed & 0xffff, data) & 0xffff;
}

/** Little-endian bytes of a 32-bit value, for feeding numbers into a CRC. */
export function le32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}
