/**
 * FAT boot sector / BIOS Parameter Block (Microsoft FAT specification), and the derived volume
 * geometry. The FAT type is decided by the cluster count, as the specification requires.
 */
import { u8, u16, u32 } from '../util/bytes.js';

/** FAT variant, decided by the number of data clusters. */
export type FatType = 12 | 16 | 32;

/** Geometry of a FAT volume, everything in bytes unless named otherwise. */
export interface FatBootSector {
  fatType: FatType;
  bytesPerSector: number;
  sectorsPerCluster: number;
  clusterSize: number;
  reservedSectors: number;
  numFats: number;
  rootEntries: number;
  totalSectors: number;
  /** Sectors per FAT. */
  fatSectors: number;
  /** FAT32: first cluster of the root directory. */
  rootCluster: number;
  /** Byte offset of the first FAT. */
  fatOffset: number;
  /** FAT12/16: byte offset and size of the fixed root directory region. */
  rootDirOffset: number;
  rootDirSize: number;
  /** Byte offset of cluster 2. */
  dataOffset: number;
  /** Number of data clusters (valid cluster numbers are 2 .. clusterCount+1). */
  clusterCount: number;
  /** Volume serial number as `XXXX-XXXX`, when the extended boot signature is present. */
  volumeId: string | undefined;
  /** Volume label from the boot sector (`NO NAME` becomes undefined). */
  label: string | undefined;
}

const POW2 = (n: number) => n > 0 && (n & (n - 1)) === 0;

/** Parses a boot sector; returns a reason string when it is not a plausible FAT volume. */
export function parseFatBootSector(b: Buffer): FatBootSector | string {
  if (b.length < 512) return 'boot sector too short';
  if (b[510] !== 0x55 || b[511] !== 0xaa) return 'no boot signature';
  const jump = u8(b, 0);
  if (jump !== 0xeb && jump !== 0xe9) return 'no jump instruction';
  const bytesPerSector = u16(b, 11);
  const sectorsPerCluster = u8(b, 13);
  const reservedSectors = u16(b, 14);
  const numFats = u8(b, 16);
  const rootEntries = u16(b, 17);
  const total16 = u16(b, 19);
  const media = u8(b, 21);
  const fat16Size = u16(b, 22);
  const total32 = u32(b, 32);
  if (![512, 1024, 2048, 4096].includes(bytesPerSector)) return `bad bytes per sector ${bytesPerSector}`;
  if (!POW2(sectorsPerCluster) || sectorsPerCluster > 128)
    return `bad sectors per cluster ${sectorsPerCluster}`;
  if (reservedSectors === 0) return 'no reserved sectors';
  if (numFats === 0 || numFats > 4) return `bad FAT count ${numFats}`;
  if (media !== 0xf0 && media < 0xf8) return `bad media byte ${media}`;
  const totalSectors = total16 !== 0 ? total16 : total32;
  if (totalSectors === 0) return 'zero sectors';
  const fatSectors = fat16Size !== 0 ? fat16Size : u32(b, 36);
  if (fatSectors === 0) return 'zero-length FAT';
  const rootDirSectors = Math.ceil((rootEntries * 32) / bytesPerSector);
  const firstDataSector = reservedSectors + numFats * fatSectors + rootDirSectors;
  if (firstDataSector >= totalSectors) return 'metadata larger than the volume';
  const clusterCount = Math.floor((totalSectors - firstDataSector) / sectorsPerCluster);
  const fatType: FatType = clusterCount < 4085 ? 12 : clusterCount < 65525 ? 16 : 32;
  if (fatType === 32 && (rootEntries !== 0 || fat16Size !== 0)) return 'FAT32 with a fixed root directory';
  if (fatType !== 32 && rootEntries === 0) return 'FAT12/16 without root directory entries';
  const sigOff = fatType === 32 ? 66 : 38;
  let volumeId: string | undefined;
  let label: string | undefined;
  if (u8(b, sigOff) === 0x29) {
    const id = u32(b, sigOff + 1);
    const hex = id.toString(16).toUpperCase().padStart(8, '0');
    volumeId = `${hex.slice(0, 4)}-${hex.slice(4)}`;
    const l = b
      .subarray(sigOff + 5, sigOff + 16)
      .toString('latin1')
      .replace(/[\s\0]+$/, '');
    label = l === '' || l === 'NO NAME' ? undefined : l;
  }
  return {
    fatType,
    bytesPerSector,
    sectorsPerCluster,
    clusterSize: bytesPerSector * sectorsPerCluster,
    reservedSectors,
    numFats,
    rootEntries,
    totalSectors,
    fatSectors,
    rootCluster: fatType === 32 ? u32(b, 44) : 0,
    fatOffset: reservedSectors * bytesPerSector,
    rootDirOffset: (reservedSectors + numFats * fatSectors) * bytesPerSector,
    rootDirSize: rootDirSectors * bytesPerSector,
    dataOffset: firstDataSector * bytesPerSector,
    clusterCount,
    volumeId,
    label,
  };
}
