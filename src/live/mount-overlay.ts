/**
 * The overlay of a writable live mount, as `vmvault mount --writable` and the server's mounts
 * use it: opened (in a temporary directory when no path is given), and finished once serving
 * has stopped, saved as a new restore point when asked, then kept or removed.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Overlay } from '../overlay/index.js';
import type { CodecPool, DiskRecord, Repository, RestorePoint } from '../repository/index.js';

/** How a writable mount ends. */
export interface OverlayFinish {
  /** Save the writes as a new restore point (named `name`, default the point's name). */
  save?: boolean;
  name?: string;
  /** Keep a given overlay file even though it was saved. */
  keepOverlay?: boolean;
}

/** A writable mount's overlay and its temporary directory, if it has one. */
export class MountOverlay {
  private constructor(
    readonly overlay: Overlay,
    private readonly tempDir: string | null,
  ) {}

  /** Opens (or creates) the overlay at `path` for `disk` of `point`; a temporary one without. */
  static async open(point: RestorePoint, disk: DiskRecord, path?: string): Promise<MountOverlay> {
    // Loaded on use: a read-only mount never needs it.
    const { Overlay } = await import('../overlay/index.js');
    const tempDir = path === undefined ? await mkdtemp(join(tmpdir(), 'vmvault-overlay-')) : null;
    try {
      const overlay = await Overlay.openOrCreate(path ?? join(tempDir!, 'overlay'), {
        pointId: point.id,
        disk: disk.name,
        size: disk.size,
        chunkSize: disk.chunkSize,
      });
      return new MountOverlay(overlay, tempDir);
    } catch (err) {
      if (tempDir) await rm(tempDir, { recursive: true, force: true });
      throw err;
    }
  }

  /** True for an overlay made for this mount alone. */
  get temporary(): boolean {
    return this.tempDir !== null;
  }

  /**
   * After serving stopped (every write is in the overlay): saves the writes as a new restore
   * point when asked, then keeps a given overlay file (unless it was saved and not asked to stay)
   * or removes it; a temporary overlay is always removed. The saved point, or null.
   */
  async finish(
    repo: Repository,
    pool: CodecPool,
    point: RestorePoint,
    how: OverlayFinish,
  ): Promise<{ id: string; bytesStored: number } | null> {
    let saved: { id: string; bytesStored: number } | null = null;
    if (how.save) {
      const { saveOverlay } = await import('../overlay/index.js');
      const r = await saveOverlay(repo, pool, point, this.overlay, how.name ? { name: how.name } : {});
      saved = { id: r.point.id, bytesStored: r.bytesStored };
    }
    const keep = !this.temporary && (!saved || how.keepOverlay === true);
    if (keep) await this.overlay.close();
    else await this.overlay.discard();
    await this.release();
    return saved;
  }

  /** Closes without saving (also after {@link finish}); a temporary overlay is removed. */
  async release(): Promise<void> {
    await this.overlay.close().catch(() => undefined);
    if (this.tempDir) await rm(this.tempDir, { recursive: true, force: true });
  }
}
