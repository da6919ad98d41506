/**
 * Serving one disk of a restore point over NBD: the one place `mount`, `clone` and `recover`
 * start a live mount. Reads go through a {@link PointReader}; a writable mount puts an
 * {@link OverlayExport} in front of it. On start the reader's prefetch queue gets, in order, the
 * block priorities a VM backup recorded (priority 0) and the chunks earlier mounts of the same VM
 * read first (priority 1); sequential read-ahead comes after both, and a guest read always goes
 * ahead of all prefetch. Guest reads of this mount are recorded as a new trace, saved every
 * {@link TRACE_SAVE_MS} and on close (so a killed mount still leaves one).
 */
// File-level imports (not the index files) keep a mount's start-up to the serving path: see
// the note in src/cli/commands/mount.ts.
import type { NbdExport } from '../protocols/nbd/index.js';
import { NbdServer } from '../protocols/nbd/server.js';
import { formatNbdUri } from '../protocols/nbd/uri.js';
import type { Overlay } from '../overlay/index.js';
import { OverlayExport } from '../overlay/overlay-export.js';
import type { CodecPool, DiskRecord, Repository, RestorePoint } from '../repository/index.js';
import { PointExport } from '../restore/point-export.js';
import { PointReader } from '../restore/point-reader.js';
import { TraceRecorder, type TraceStore } from './traces.js';

/** How often a mount's read trace is saved while it runs. */
export const TRACE_SAVE_MS = 10_000;

/** Options of {@link startLiveServer}. */
export interface LiveServerOptions {
  repo: Repository;
  pool: CodecPool;
  point: RestorePoint;
  disk: DiskRecord;
  listen: { socketPath: string } | { host: string; port: number };
  /** Export name (default: the point id). */
  exportName?: string;
  /** Writable: guest writes go to this overlay. */
  overlay?: Overlay;
  /** Record this mount's read trace and prefetch earlier ones. */
  traces?: TraceStore;
  /** Decoded-chunk cache size (default PointReader's). */
  cacheBytes?: number;
  onError?: (err: unknown, where: string) => void;
}

/** A running live mount. */
export interface LiveServer {
  readonly uri: string;
  readonly exportName: string;
  readonly reader: PointReader;
  /** Chunks queued for prefetch at start: block priorities and trace. */
  readonly queued: { priorities: number; trace: number };
  /** Chunks this mount's trace holds so far. */
  traced(): number;
  /** Stops serving, drains a writable export, saves the trace. */
  close(): Promise<void>;
}

const READ_METHODS = new Set(['read', 'readSparse', 'readSparseHeld', 'cache']);

/** Wraps `exp` so every guest read is noted by `rec` first. */
function traced(exp: NbdExport, rec: TraceRecorder): NbdExport {
  return new Proxy(exp, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function') return v;
      if (typeof prop === 'string' && READ_METHODS.has(prop)) {
        return (offset: number, length: number, ...rest: unknown[]) => {
          rec.note(offset, length);
          return (v as (...a: unknown[]) => unknown).call(target, offset, length, ...rest);
        };
      }
      return (v as (...a: unknown[]) => unknown).bind(target);
    },
  });
}

function count(ranges: readonly [number, number][]): number {
  return ranges.reduce((s, [a, b]) => s + Math.max(0, b - a), 0);
}

/** Starts serving `disk` of `point`; resolves once the server listens. */
export async function startLiveServer(opts: LiveServerOptions): Promise<LiveServer> {
  const { repo, pool, point, disk } = opts;
  const reader = new PointReader(repo, disk, {
    pool,
    ...(opts.cacheBytes !== undefined ? { cacheBytes: opts.cacheBytes } : {}),
  });
  const description = `${point.name} ${point.time} ${disk.name}`;
  const base: NbdExport = opts.overlay
    ? new OverlayExport(reader, opts.overlay, description)
    : new PointExport(reader, description);
  const recorder = opts.traces ? new TraceRecorder(disk.chunkSize) : undefined;
  const exp = recorder ? traced(base, recorder) : base;
  const exportName = opts.exportName ?? point.id;
  const server = new NbdServer(opts.onError ? { onError: opts.onError } : {});
  server.addExport(exportName, exp);
  const addr = await server.listen(opts.listen);
  const uri = formatNbdUri({
    exportName,
    ...(addr.socketPath !== undefined
      ? { socketPath: addr.socketPath }
      : { host: addr.host!, port: addr.port! }),
  });

  // Prefetch: block priorities first, then what earlier boots of this VM read.
  const priorities = disk.priorities ?? [];
  if (priorities.length) reader.prefetch(priorities, 0);
  const trace = opts.traces ? await opts.traces.ranges(point.name, disk.chunkSize).catch(() => []) : [];
  if (trace.length) reader.prefetch(trace, 1);

  const store = opts.traces;
  const save = (): Promise<void> =>
    recorder && store ? recorder.saveTo(store, point.name).catch(() => undefined) : Promise.resolve();
  const timer = recorder ? setInterval(() => void save(), TRACE_SAVE_MS) : undefined;
  timer?.unref();
  let closing: Promise<void> | undefined;
  return {
    uri,
    exportName,
    reader,
    queued: { priorities: count(priorities), trace: count(trace) },
    traced: () => recorder?.size ?? 0,
    close: () => {
      closing ??= (async () => {
        if (timer) clearInterval(timer);
        reader.clearPrefetch();
        await server.close();
        if (base instanceof OverlayExport) await base.drain();
        await save();
      })();
      return closing;
    },
  };
}
