/**
 * Writes an empty qcow2 (version 3) image without spawning `qemu-img`: the fleecing scratch
 * only needs a header, a refcount table, one refcount block and an all-zero L1 table, which is
 * what `qemu-img create -f qcow2 FILE SIZE` writes too (same layout, same cluster size). The
 * backing node is given at `blockdev-add` time, so the header names no backing file.
 *
 * Layout (64 KiB clusters): cluster 0 header · cluster 1 refcount table · cluster 2 refcount
 * block (16-bit refcounts) · clusters 3… L1 table. Every one of those clusters has refcount 1.
 * Field offsets follow QEMU's docs/interop/qcow2.txt.
 */
import { writeFile } from 'node:fs/promises';
import { VmvaultError } from '../../core/index.js';

const CLUSTER_BITS = 16;
const CLUSTER = 1 << CLUSTER_BITS;
/** Bytes one L2 table maps: (cluster / 8-byte entry) clusters. */
const L2_SPAN = (CLUSTER / 8) * CLUSTER;
/** `refcount_order` 4: 16-bit refcounts, as qemu-img writes by default. */
const REFCOUNT_ORDER = 4;
const REFCOUNTS_PER_BLOCK = CLUSTER / 2;
/** Version 3 header with the compression-type byte, padded to a multiple of 8. */
const HEADER_LENGTH = 112;
const REFTABLE_CLUSTER = 1;
const REFBLOCK_CLUSTER = 2;
const L1_CLUSTER = 3;

/** The bytes of an empty qcow2 image of `size` bytes (virtual size rounded up to 512). */
export function emptyQcow2(size: number): Buffer {
  if (!Number.isSafeInteger(size) || size <= 0) {
    throw new VmvaultError('E_INTERNAL', `scratch image: bad virtual size ${size}`);
  }
  const virtualSize = Math.ceil(size / 512) * 512;
  const l1Entries = Math.ceil(virtualSize / L2_SPAN);
  const l1Clusters = Math.ceil((l1Entries * 8) / CLUSTER);
  const metaClusters = L1_CLUSTER + l1Clusters;
  if (metaClusters > REFCOUNTS_PER_BLOCK) {
    throw new VmvaultError('E_UNSUPPORTED', `scratch image: a ${virtualSize}-byte disk is too large`);
  }
  // The file ends with the (all-zero) L1 table; QEMU reads only l1Entries of it.
  const img = Buffer.alloc(L1_CLUSTER * CLUSTER + l1Entries * 8);
  img.write('QFI\xfb', 0, 'latin1');
  img.writeUInt32BE(3, 4); // version
  // 8: backing_file_offset, 16: backing_file_size: none
  img.writeUInt32BE(CLUSTER_BITS, 20);
  img.writeBigUInt64BE(BigInt(virtualSize), 24);
  // 32: crypt_method 0
  img.writeUInt32BE(l1Entries, 36);
  img.writeBigUInt64BE(BigInt(L1_CLUSTER * CLUSTER), 40);
  img.writeBigUInt64BE(BigInt(REFTABLE_CLUSTER * CLUSTER), 48);
  img.writeUInt32BE(1, 56); // refcount_table_clusters
  // 60: nb_snapshots, 64: snapshots_offset, 72/80/88: feature bits: all 0
  img.writeUInt32BE(REFCOUNT_ORDER, 96);
  img.writeUInt32BE(HEADER_LENGTH, 100);
  // 104: compression_type 0 (zlib); 112: end-of-extensions marker (type 0, length 0)
  img.writeBigUInt64BE(BigInt(REFBLOCK_CLUSTER * CLUSTER), REFTABLE_CLUSTER * CLUSTER);
  for (let c = 0; c < metaClusters; c++) img.writeUInt16BE(1, REFBLOCK_CLUSTER * CLUSTER + 2 * c);
  return img;
}

/**
 * Creates `path` (which must not exist; mode 0600) as an empty qcow2 image of `size` bytes.
 * Fails with `E_IO` when the file cannot be written.
 */
export async function createEmptyQcow2(path: string, size: number): Promise<void> {
  try {
    // One write of ~200 KiB: cheaper than several positioned writes into a sparse file.
    await writeFile(path, emptyQcow2(size), { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if (err instanceof VmvaultError) throw err;
    throw new VmvaultError('E_IO', `cannot create the scratch image ${path}: ${(err as Error).message}`, {
      hint: 'is --scratch-dir writable?',
      cause: err,
    });
  }
}
