/** Glue between the file index (src/files) and the catalog, used by backup and find. */
import type { Catalog } from '../catalog/index.js';
import { type BlockReader, CachedBlockReader } from '../core/index.js';
import { type FileRecord, indexFiles } from '../files/index.js';
import type { DiskRecord, Repository } from '../repository/index.js';
import { PointReader } from '../restore/index.js';
import type { DiskSource } from '../sources/index.js';

/** A {@link BlockReader} over a backup source (reads go to the source, e.g. the image file). */
export function sourceReader(source: DiskSource): BlockReader {
  // Filesystem walks make many small reads: serve them from 64 KiB blocks.
  return new CachedBlockReader({
    size: source.size,
    async read(offset: number, length: number): Promise<Buffer> {
      const buf = Buffer.alloc(length);
      await source.readInto(buf, offset);
      return buf;
    },
  });
}

/** Collects the file records of `disks` (never throws: unreadable volumes go to `onSkip`). */
export async function collectFiles(
  disks: readonly { disk: Pick<DiskRecord, 'name' | 'chunkSize'>; reader: BlockReader }[],
  onSkip?: (volume: string, err: unknown) => void,
): Promise<FileRecord[]> {
  const records: FileRecord[] = [];
  try {
    for await (const r of indexFiles(disks as { disk: DiskRecord; reader: BlockReader }[], onSkip))
      records.push(r);
  } catch (err) {
    onSkip?.('(disk)', err);
  }
  return records;
}

/** Indexes the files of a point into the catalog; returns the number of entries. */
export async function indexPointFiles(
  catalog: Catalog,
  pointId: string,
  disks: readonly { disk: DiskRecord; reader: BlockReader }[],
  onSkip?: (volume: string, err: unknown) => void,
): Promise<number> {
  const records = [];
  for await (const r of indexFiles(disks, onSkip)) records.push(r);
  return catalog.setFiles(pointId, records);
}

/** Indexes, from the repository, every point the catalog has no file index for yet. */
export async function indexMissingPoints(repo: Repository, catalog: Catalog): Promise<number> {
  let n = 0;
  const ids = catalog.unindexedPoints();
  if (ids.length > 0) await repo.loadIndex();
  for (const id of ids) {
    const point = await repo.readPoint(id).catch(() => null);
    if (!point) continue;
    await indexPointFiles(
      catalog,
      id,
      point.disks.map((disk) => ({ disk, reader: new PointReader(repo, disk, { readAheadChunks: 0 }) })),
    );
    n++;
  }
  return n;
}
