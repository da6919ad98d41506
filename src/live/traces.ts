/**
 * Boot read traces: which chunks a VM's guest read first, in order, on earlier live mounts.
 * A later mount of any restore point of the same VM prefetches them (after the block priorities
 * a VM backup recorded), so a boot finds most of what it needs already fetched.
 *
 * Stored beside the catalog, one small JSON file per VM (`traces/<sha256(name)[0:16]>.json`,
 * layout in docs/format.md), holding the last {@link KEEP} traces, newest first; written to a
 * temporary name and renamed, so concurrent mounts never leave a torn file.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Traces kept per VM. */
const KEEP = 3;
/** Chunks one trace records at most. */
export const TRACE_LIMIT = 65536;

/** One recorded trace. */
export interface ReadTrace {
  time: string;
  chunkSize: number;
  /** `[first, end)` chunk ranges in the order the guest first read them. */
  ranges: [number, number][];
}

interface TraceFile {
  version: 1;
  name: string;
  traces: ReadTrace[];
}

/** The read traces of every VM of one repository. */
export class TraceStore {
  constructor(readonly dir: string) {}

  private file(name: string): string {
    return join(this.dir, `${createHash('sha256').update(name).digest('hex').slice(0, 16)}.json`);
  }

  private async read(name: string): Promise<TraceFile | null> {
    try {
      const f = JSON.parse(await readFile(this.file(name), 'utf8')) as TraceFile;
      return f.version === 1 && f.name === name && Array.isArray(f.traces) ? f : null;
    } catch {
      return null; // none yet, or unreadable: a trace is only a hint
    }
  }

  /**
   * The chunk ranges to prefetch for `name`: its traces of this chunk size merged, newest first,
   * each chunk once, in first-read order.
   */
  async ranges(name: string, chunkSize: number): Promise<[number, number][]> {
    const f = await this.read(name);
    if (!f) return [];
    const seen = new Set<number>();
    const out: [number, number][] = [];
    for (const t of f.traces) {
      if (t.chunkSize !== chunkSize) continue;
      for (const [a, b] of t.ranges) {
        for (let i = a; i < b; i++) {
          if (seen.has(i)) continue;
          seen.add(i);
          const last = out[out.length - 1];
          if (last && last[1] === i) last[1] = i + 1;
          else out.push([i, i + 1]);
        }
      }
    }
    return out;
  }

  /** Saves `trace` as the newest of `name`, replacing `replaces` (the same mount's earlier save). */
  async save(name: string, trace: ReadTrace, replaces?: string): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const f = (await this.read(name)) ?? { version: 1 as const, name, traces: [] };
    f.traces = [trace, ...f.traces.filter((t) => t.time !== replaces && t.time !== trace.time)].slice(
      0,
      KEEP,
    );
    const path = this.file(name);
    const tmp = `${path}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify(f)}\n`);
    await rename(tmp, path);
  }
}

/** Records the chunks guest reads touch, in first-access order, up to {@link TRACE_LIMIT}. */
export class TraceRecorder {
  private readonly seen = new Set<number>();
  private readonly ranges: [number, number][] = [];
  private readonly time = new Date().toISOString();
  private dirty = false;

  constructor(readonly chunkSize: number) {}

  /** Notes a guest read of `length` bytes at `offset`. */
  note(offset: number, length: number): void {
    if (this.seen.size >= TRACE_LIMIT || length <= 0) return;
    const first = Math.floor(offset / this.chunkSize);
    const last = Math.floor((offset + length - 1) / this.chunkSize);
    for (let i = first; i <= last && this.seen.size < TRACE_LIMIT; i++) {
      if (this.seen.has(i)) continue;
      this.seen.add(i);
      const r = this.ranges[this.ranges.length - 1];
      if (r && r[1] === i) r[1] = i + 1;
      else this.ranges.push([i, i + 1]);
      this.dirty = true;
    }
  }

  /** Chunks recorded. */
  get size(): number {
    return this.seen.size;
  }

  /** Saves the trace to `store` if it changed since the last save. */
  async saveTo(store: TraceStore, name: string): Promise<void> {
    if (!this.dirty || this.seen.size === 0) return;
    this.dirty = false;
    const ranges = this.ranges.map((r) => [r[0], r[1]] as [number, number]);
    await store.save(name, { time: this.time, chunkSize: this.chunkSize, ranges }, this.time);
  }
}
