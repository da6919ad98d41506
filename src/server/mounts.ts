/**
 * Live mounts run by `vmvault serve` (`/api/v1/mounts`): a restore point served over NBD from
 * the server process, as `vmvault mount` serves it (read-only, or writable with a copy-on-write
 * overlay that can be saved as a new restore point), until it is stopped.
 *
 * A mount is not a job of the resident queue: it would hold the queue for as long as it serves.
 * Each mount opens its own instance of the repository beside the resident one (same keys, no key
 * derivation), with its own shared lock, codec workers and chunk cache, so backups and restores
 * go on while it serves and a failed job cannot close it. gc, which takes the repository
 * exclusively, waits for the mounts to stop, as it waits for a `vmvault mount` process.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { resolvePointDisk } from '../cli/point-disk.js';
import { VmvaultError } from '../core/index.js';
import { prepareCloneFile } from '../live/clone-file.js';
import { type LiveServer, startLiveServer } from '../live/serve.js';
import type { TraceStore } from '../live/traces.js';
import { MountOverlay, type OverlayFinish } from '../live/mount-overlay.js';
import { CodecPool, type Lock, Repository } from '../repository/index.js';
import type { ResidentRepository } from './resident.js';

/** Where a mount listens: a unix socket, or a TCP port (host default 127.0.0.1). */
export type MountListen = { socketPath: string } | { host: string; port: number };

/** What `POST /api/v1/mounts` asks for. */
export interface MountRequest {
  /** Restore point: id, unique prefix, `latest` or `NAME:latest`. */
  point: string;
  /** Disk of the point (default its first). */
  disk?: string;
  listen: MountListen;
  /** Export name (default the point id). */
  exportName?: string;
  /** Record this mount's read trace and prefetch earlier ones (default true). */
  trace?: boolean;
  /** Guest writes go to a copy-on-write overlay (the restore point never changes). */
  writable?: boolean;
  /** The overlay file (absolute; default a temporary one, removed when the mount stops). */
  overlay?: string;
  /**
   * Make (or serve again) this thin qcow2 clone, backed by the mount (`vmvault clone`): the
   * mount must listen on a unix socket, read-only. The clone file stays when the mount stops.
   */
  clone?: string;
}

/** How a mount is stopped: a writable one's overlay saved as a new restore point, or not. */
export type MountStop = OverlayFinish;

/** A mount as the API shows it. */
export interface MountView {
  id: string;
  /** The restore point served, its name and the disk. */
  point: string;
  name: string;
  disk: string;
  size: number;
  uri: string;
  exportName: string;
  writable: boolean;
  /** The overlay file of a writable mount (null: read-only). */
  overlay: string | null;
  /** The clone file this mount serves the backing data of, and whether this mount created it. */
  clone: string | null;
  created: boolean;
  startedAt: string;
  /** Chunks fetched (by reads and by prefetch) and reads served from the cache so far. */
  stats: { chunkFetches: number; prefetched: number; cacheHits: number; traced: number };
}

interface Running {
  view: MountView;
  live: LiveServer;
  stop: (how: MountStop) => Promise<{ saved: string | null }>;
}

/** The live mounts of one server. */
export class MountTable {
  private readonly mounts = new Map<string, Running>();
  private closed = false;

  /**
   * @param resident the server's repository (its keys and options are reused).
   * @param traceStore the read traces of `repo` (next to its catalog).
   */
  constructor(
    private readonly resident: ResidentRepository,
    private readonly traceStore: (repo: Repository) => TraceStore,
  ) {}

  /** Starts a mount; resolves once it listens. */
  async start(req: MountRequest): Promise<MountView> {
    if (this.closed) throw new VmvaultError('E_CLOSED', 'the server is shutting down');
    const base = await this.resident.repository();
    const repo = await Repository.openBeside(base, this.resident.opts.path);
    const undo: (() => Promise<unknown>)[] = [() => repo.close()];
    const unwind = async (): Promise<void> => {
      for (const u of undo.splice(0).reverse()) await u().catch(() => undefined);
    };
    try {
      const lock: Lock = await repo.lock('shared', `mount ${req.point}`, this.resident.opts.lockWaitMs);
      undo.push(() => lock.release());
      const { point, disk } = await resolvePointDisk(repo, req.point, req.disk);
      const pool = new CodecPool(repo);
      undo.push(() => pool.close());
      let created = false;
      // A clone file this request created goes again if the mount does not start.
      let removeClone = false;
      if (req.clone !== undefined) {
        if (!('socketPath' in req.listen) || req.writable || req.overlay !== undefined) {
          throw new VmvaultError('E_USAGE', 'a clone is served read-only on a unix socket');
        }
        created = (await prepareCloneFile(req.clone, point, disk, req.listen.socketPath)).created;
        const clone = req.clone;
        removeClone = created;
        undo.push(() => (removeClone ? rm(clone, { force: true }) : Promise.resolve()));
      }
      let mo: MountOverlay | undefined;
      if (req.writable || req.overlay !== undefined) {
        const opened = await MountOverlay.open(point, disk, req.overlay);
        mo = opened;
        undo.push(() => opened.release());
      }
      const live = await startLiveServer({
        repo,
        pool,
        point,
        disk,
        listen: req.listen,
        exportName: req.exportName ?? point.id,
        overlay: mo?.overlay,
        traces: req.trace === false ? undefined : this.traceStore(repo),
      });
      undo.push(() => live.close());
      removeClone = false; // from here on the clone file is the user's: stopping the mount leaves it
      const id = randomBytes(8).toString('hex');
      const view: MountView = {
        id,
        point: point.id,
        name: point.name,
        disk: disk.name,
        size: disk.size,
        uri: live.uri,
        exportName: live.exportName,
        writable: mo !== undefined,
        overlay: mo?.overlay.path ?? null,
        clone: req.clone ?? null,
        created,
        startedAt: new Date().toISOString(),
        stats: { chunkFetches: 0, prefetched: 0, cacheHits: 0, traced: 0 },
      };
      let stopping: Promise<{ saved: string | null }> | undefined;
      const stop = async (how: MountStop): Promise<{ saved: string | null }> => {
        let saved: string | null = null;
        try {
          await live.close(); // no client writes any more, every write is in the overlay
          if (mo) saved = (await mo.finish(repo, pool, point, how))?.id ?? null;
        } finally {
          await unwind();
        }
        return { saved };
      };
      this.mounts.set(id, {
        view,
        live,
        stop: (how) => {
          stopping ??= stop(how);
          return stopping;
        },
      });
      return this.withStats(this.mounts.get(id)!);
    } catch (err) {
      await unwind();
      throw err;
    }
  }

  /** Every running mount, oldest first. */
  list(): MountView[] {
    return [...this.mounts.values()].map((m) => this.withStats(m));
  }

  /** One mount, or null. */
  get(id: string): MountView | null {
    const m = this.mounts.get(id);
    return m ? this.withStats(m) : null;
  }

  /**
   * Stops a mount (its clients are disconnected, its trace saved, a writable one's overlay saved
   * as a new restore point when asked); its last view and the saved point's id, or null.
   */
  async stop(id: string, how: MountStop = {}): Promise<(MountView & { saved: string | null }) | null> {
    const m = this.mounts.get(id);
    if (!m) return null;
    if (how.save && !m.view.writable) {
      throw new VmvaultError('E_USAGE', `mount ${id} is read-only: it has no writes to save`);
    }
    this.mounts.delete(id);
    const view = this.withStats(m);
    const { saved } = await m.stop(how);
    return { ...view, saved };
  }

  /** Stops every mount, saving nothing, and refuses new ones (server shutdown). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.mounts.keys()].map((id) => this.stop(id)));
  }

  private withStats(m: Running): MountView {
    const s = m.live.reader.stats;
    m.view.stats = {
      chunkFetches: s.chunkFetches,
      prefetched: s.prefetched ?? 0,
      cacheHits: s.cacheHits,
      traced: m.live.traced(),
    };
    return { ...m.view, stats: { ...m.view.stats } };
  }
}
