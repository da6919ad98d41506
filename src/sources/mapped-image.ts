/**
 * Direct reads of qcow2 images. A plain qcow2 (not encrypted, no external data file) stores each
 * allocated, uncompressed cluster as the guest's bytes at some offset of the image file, and
 * `qemu-img map --output=json` says which: entries of depth 0 with an `offset`. Those ranges are
 * read straight from the file with positioned reads (like a raw image: one copy, no server, no
 * socket); ranges that read as zeros are not read at all; everything else — compressed clusters,
 * clusters of a backing file, ranges the map gives no offset for — still goes through the
 * qemu-nbd that vmvault started. That server stays up for the whole backup, and its read-only
 * open keeps QEMU's image lock, so no QEMU process can start writing the image meanwhile.
 *
 * Measured on the 4 GiB benchmark image (`bench/mount-bench.ts`): the NBD path cost about one
 * extra core-second per 700 MB of data (qemu-nbd's copies plus the socket copies and request
 * handling in vmvault's main thread), which the hashing workers of a backup had to share the
 * CPU with; direct reads remove it.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { VmvaultError } from '../core/index.js';
import type { DiskSource, SourceExtent } from './disk-source.js';
import type { NbdSource } from './nbd-source.js';
import type { ImageInfo } from './qemu-image-source.js';
import { runTool } from './qemu-tools.js';
import { readFully } from './raw-file.js';

/** How a range of a {@link MappedImageSource} is read. */
export type SpanKind = 'file' | 'zero' | 'nbd';

/** A guest range `[start, end)` and how it is read; `fileOffset` is set for `file` spans. */
export interface ImageSpan {
  start: number;
  end: number;
  kind: SpanKind;
  fileOffset: number;
}

/** The fields of a `qemu-img map --output=json` entry that matter here. */
interface MapEntry {
  start: number;
  length: number;
  depth: number;
  zero: boolean;
  data: boolean;
  offset?: number;
}

function isMapEntry(x: unknown): x is MapEntry {
  const e = x as Partial<MapEntry> | null;
  return (
    typeof e === 'object' &&
    e !== null &&
    Number.isSafeInteger(e.start) &&
    Number.isSafeInteger(e.length) &&
    (e.length ?? 0) > 0 &&
    Number.isSafeInteger(e.depth) &&
    typeof e.zero === 'boolean' &&
    typeof e.data === 'boolean' &&
    (e.offset === undefined || Number.isSafeInteger(e.offset))
  );
}

/**
 * Turns a parsed `qemu-img map` into spans covering exactly `[0, size)`, merging neighbours.
 * Returns null when the map is not usable (not an array of entries, gaps, overlaps, wrong end):
 * the caller then reads everything over NBD. Ranges whose host bytes would lie past
 * `fileSize` are read over NBD.
 */
export function spansFromMap(map: unknown, size: number, fileSize: number): ImageSpan[] | null {
  if (!Array.isArray(map)) return null;
  const spans: ImageSpan[] = [];
  let pos = 0;
  for (const e of map) {
    if (!isMapEntry(e) || e.start !== pos) return null;
    const end = e.start + e.length;
    let kind: SpanKind = 'nbd';
    let fileOffset = 0;
    if (e.zero && !e.data) kind = 'zero';
    else if (e.data && e.depth === 0 && e.offset !== undefined && e.offset + e.length <= fileSize) {
      kind = 'file';
      fileOffset = e.offset;
    }
    const last = spans[spans.length - 1];
    if (
      last &&
      last.kind === kind &&
      (kind !== 'file' || last.fileOffset + (last.end - last.start) === fileOffset)
    ) {
      last.end = end;
    } else {
      spans.push({ start: pos, end, kind, fileOffset });
    }
    pos = end;
  }
  return pos === size ? spans : null;
}

/** Why an image cannot be read directly, or undefined when it can. */
export function directReadObstacle(info: ImageInfo): string | undefined {
  if (info.format !== 'qcow2') return `format ${info.format}`;
  if (info.encrypted) return 'encrypted';
  if (info.dataFile !== undefined) return 'external data file';
  return undefined;
}

/**
 * Runs `qemu-img map` on the qcow2 image at `path` (`info` from `qemu-img info`) and returns the
 * parsed map with the file's size (for {@link spansFromMap}), or null when direct reads are not
 * possible or not safe for this image (then use NBD alone).
 */
export async function mapQcow2(
  path: string,
  info: ImageInfo,
): Promise<{ entries: unknown; fileSize: number } | null> {
  if (directReadObstacle(info) !== undefined) return null;
  const r = await runTool('qemu-img', ['map', '--output=json', '-f', 'qcow2', path], 600_000);
  if (r.code !== 0) return null;
  try {
    const fh = await open(path, 'r');
    try {
      return { entries: JSON.parse(r.stdout), fileSize: (await fh.stat()).size };
    } finally {
      await fh.close();
    }
  } catch {
    return null;
  }
}

/** Index of the span holding `offset` (spans sorted, covering the disk). */
function spanAt(spans: readonly ImageSpan[], offset: number): number {
  let lo = 0;
  let hi = spans.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (spans[mid]!.start <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * A qcow2 image read directly from its file where the map allows, through an {@link NbdSource}
 * (its qemu-nbd) elsewhere. Closing it closes the NBD source, which stops qemu-nbd.
 */
export class MappedImageSource implements DiskSource {
  readonly kind: string;
  readonly path: string;
  readonly format: string;
  readonly size: number;
  /** Bytes read from the image file directly, and over NBD (for tests and benchmarks). */
  readonly stats = { directBytes: 0, nbdBytes: 0 };
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly nbd: NbdSource,
    private readonly fh: FileHandle,
    private readonly spans: readonly ImageSpan[],
  ) {
    this.kind = nbd.kind;
    this.path = nbd.path;
    this.format = nbd.format;
    this.size = nbd.size;
  }

  /**
   * Wraps `nbd` (serving the image at `path`) with direct reads following `spans`, which must
   * cover `[0, nbd.size)`. Failures to open the file are `E_SOURCE` errors.
   */
  static async open(path: string, nbd: NbdSource, spans: readonly ImageSpan[]): Promise<MappedImageSource> {
    if (spans.length === 0 || spans[0]!.start !== 0 || spans[spans.length - 1]!.end !== nbd.size) {
      throw new VmvaultError('E_INTERNAL', `map of ${path} does not cover the disk`);
    }
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      throw new VmvaultError('E_SOURCE', `cannot open ${path}: ${(err as Error).message}`, { cause: err });
    }
    return new MappedImageSource(nbd, fh, spans);
  }

  /** How many spans of each kind the map has. */
  spanCounts(): Record<SpanKind, number> {
    const n: Record<SpanKind, number> = { file: 0, zero: 0, nbd: 0 };
    for (const s of this.spans) n[s.kind]++;
    return n;
  }

  async *extents(): AsyncIterable<SourceExtent> {
    let cur: SourceExtent | undefined;
    for (const s of this.spans) {
      const data = s.kind !== 'zero';
      if (cur && cur.data === data) {
        cur.length = s.end - cur.offset;
        continue;
      }
      if (cur) yield cur;
      cur = { offset: s.start, length: s.end - s.start, data };
    }
    if (cur) yield cur;
  }

  async readInto(buf: Buffer, offset: number): Promise<void> {
    const end = offset + buf.length;
    const parts: Promise<void>[] = [];
    for (let i = spanAt(this.spans, offset); i < this.spans.length; i++) {
      const s = this.spans[i]!;
      if (s.start >= end) break;
      const a = Math.max(s.start, offset);
      const b = Math.min(s.end, end);
      const piece = buf.subarray(a - offset, b - offset);
      if (s.kind === 'zero') piece.fill(0);
      else if (s.kind === 'file') parts.push(this.readFile(piece, s.fileOffset + (a - s.start)));
      else {
        parts.push(this.nbd.readInto(piece, a));
        this.stats.nbdBytes += piece.length;
      }
    }
    try {
      await Promise.all(parts);
    } catch (err) {
      await Promise.allSettled(parts);
      throw err;
    }
  }

  private async readFile(target: Buffer, at: number): Promise<void> {
    await readFully(this.fh, target, at, (o) => `${this.path} ended at ${o} while reading its clusters`);
    this.stats.directBytes += target.length;
  }

  /** Closes the file and the NBD source (stopping qemu-nbd). Safe to call more than once. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.allSettled([this.fh.close()]);
      await this.nbd.close();
    })();
    return this.closing;
  }
}
