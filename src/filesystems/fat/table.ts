/**
 * The File Allocation Table: 12-, 16- or 28-bit (FAT32) entries, each naming the next cluster of
 * a chain. Chains are followed with loop protection: no chain may be longer than the volume has
 * clusters.
 */
import { fsCorrupt } from '../util/errors.js';
import type { BlockCache } from '../util/volume.js';
import type { FatBootSector } from './boot-sector.js';

/** A run of consecutive clusters. */
export interface ClusterRun {
  /** Index of the run's first cluster within the chain. */
  index: number;
  cluster: number;
  count: number;
}

/** Reads FAT entries through a page cache. */
export class FatTable {
  private readonly eoc: number;
  private readonly bad: number;
  constructor(
    private readonly bs: FatBootSector,
    private readonly cache: BlockCache,
  ) {
    this.eoc = bs.fatType === 12 ? 0xff8 : bs.fatType === 16 ? 0xfff8 : 0x0ffffff8;
    this.bad = this.eoc - 1;
  }

  /** True when `c` is a valid data cluster number. */
  isCluster(c: number): boolean {
    return c >= 2 && c <= this.bs.clusterCount + 1;
  }

  /** The FAT entry of cluster `c`. */
  async entry(c: number): Promise<number> {
    const { fatType, fatOffset } = this.bs;
    if (fatType === 12) {
      const off = c + (c >> 1);
      const b = await this.cache.bytes(fatOffset + off, 2, 'FAT');
      const v = b.readUInt16LE(0);
      return c & 1 ? v >> 4 : v & 0xfff;
    }
    if (fatType === 16) return (await this.cache.bytes(fatOffset + c * 2, 2, 'FAT')).readUInt16LE(0);
    return (await this.cache.bytes(fatOffset + c * 4, 4, 'FAT')).readUInt32LE(0) & 0x0fffffff;
  }

  /**
   * The chain starting at `first` as runs of consecutive clusters. `maxClusters` caps the length
   * (callers pass what the file size allows); longer chains and loops are corrupt.
   */
  async runs(first: number, maxClusters: number): Promise<ClusterRun[]> {
    const out: ClusterRun[] = [];
    if (first === 0) return out;
    const limit = Math.min(maxClusters, this.bs.clusterCount);
    let c = first;
    let index = 0;
    for (;;) {
      if (!this.isCluster(c)) throw fsCorrupt(`cluster chain reaches invalid cluster ${c}`, { first });
      if (index >= limit)
        throw fsCorrupt(`cluster chain from ${first} is longer than allowed (loop?)`, { first });
      const last = out[out.length - 1];
      if (last && last.cluster + last.count === c) last.count++;
      else out.push({ index, cluster: c, count: 1 });
      index++;
      const next = await this.entry(c);
      if (next >= this.eoc) return out;
      if (next === this.bad) throw fsCorrupt(`cluster chain from ${first} reaches a bad cluster`, { first });
      if (next === 0) throw fsCorrupt(`cluster chain from ${first} reaches a free cluster`, { first });
      c = next;
    }
  }
}
