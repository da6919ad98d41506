/**
 * Turning chunks into pack reads: locate each chunk's blob, then group blobs that lie back to
 * back in one pack into runs read with a single backend read. Shared by full restores and
 * restore-point readers.
 */
import type { Repository } from '../repository/index.js';

/** A chunk and where its blob is stored. */
export interface LocatedChunk {
  /** Chunk number on the disk. */
  index: number;
  digest: Buffer;
  pack: string;
  /** Offset and stored length of the blob in its pack. */
  offset: number;
  length: number;
  /** Decoded length. */
  rawLength: number;
}

/** Locates chunks in the repository (E_CHUNK_MISSING for unknown digests). */
export function locateChunks(
  repo: Repository,
  chunks: readonly { index: number; digest: Buffer }[],
): LocatedChunk[] {
  return chunks.map(({ index, digest }) => {
    const loc = repo.locate(digest);
    return {
      index,
      digest,
      pack: loc.pack,
      offset: loc.entry.offset,
      length: loc.entry.length,
      rawLength: loc.entry.rawLength,
    };
  });
}

/**
 * Sorts located chunks by pack and offset and groups blobs of one pack into runs spanning
 * ≤ `maxBytes`: adjacent blobs, or blobs up to `maxGap` bytes apart (a run is one read, and
 * reading over a few unused blobs costs less than another read and round trip).
 */
export function groupRuns(items: LocatedChunk[], maxBytes: number, maxGap = 0): LocatedChunk[][] {
  const sorted = [...items].sort((a, b) =>
    a.pack < b.pack ? -1 : a.pack > b.pack ? 1 : a.offset - b.offset,
  );
  const runs: LocatedChunk[][] = [];
  for (const it of sorted) {
    const run = runs[runs.length - 1];
    const head = run?.[0];
    const tail = run?.[run.length - 1];
    if (
      head &&
      tail &&
      tail.pack === it.pack &&
      it.offset >= tail.offset + tail.length &&
      it.offset - (tail.offset + tail.length) <= maxGap &&
      it.offset + it.length - head.offset <= maxBytes
    )
      run!.push(it);
    else runs.push([it]);
  }
  return runs;
}

/** The items of a run as `CodecPool.decodeRun` takes them, relative to the run's first byte. */
export function decodeItems(run: readonly LocatedChunk[], fileOffset: (c: LocatedChunk) => number) {
  const base = run[0]!.offset;
  return run.map((c) => ({
    offset: c.offset - base,
    length: c.length,
    digest: c.digest,
    rawLength: c.rawLength,
    fileOffset: fileOffset(c),
  }));
}

/** Bytes a run spans in its pack (gaps included). */
export function runBytes(run: readonly LocatedChunk[]): number {
  const last = run[run.length - 1]!;
  return last.offset + last.length - run[0]!.offset;
}
