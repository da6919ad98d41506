/**
 * The catalog: an embedded SQLite database indexing restore points for fast listing and search.
 * It is a cache over the repository: {@link Catalog.sync} brings it in line with the manifests
 * (adding new points, dropping pruned ones), so it can be deleted and rebuilt at any time.
 */
import { mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import type { Repository, RestorePoint } from '../repository/index.js';

const SCHEMA_VERSION = 1;

/** A restore point row as the catalog returns it. */
export interface CatalogPoint {
  id: string;
  name: string;
  time: string;
  hostname: string;
  /** Sum of the disk sizes. */
  size: number;
  bytesRead: number;
  bytesStored: number;
  durationMs: number;
  disks: RestorePoint['disks'];
}

/** Default catalog path for a repository id: $XDG_CACHE_HOME/vmvault/<id>/catalog.db. */
export function defaultCatalogPath(repoId: string): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'vmvault', repoId, 'catalog.db');
}

/** An open catalog database. */
export class Catalog {
  private readonly db: Database.Database;

  private constructor(db: Database.Database) {
    this.db = db;
  }

  /** Opens (creating when needed) the catalog at `path`. */
  static open(path: string): Catalog {
    mkdirSync(dirname(path), { recursive: true });
    const db = new Database(path);
    db.pragma('journal_mode = WAL');
    db.pragma('busy_timeout = 10000');
    const v = db.pragma('user_version', { simple: true }) as number;
    if (v !== SCHEMA_VERSION) {
      db.exec(`
        DROP TABLE IF EXISTS points;
        CREATE TABLE points (
          id TEXT PRIMARY KEY,
          name TEXT NOT NULL,
          time TEXT NOT NULL,
          hostname TEXT NOT NULL,
          size INTEGER NOT NULL,
          bytes_read INTEGER NOT NULL,
          bytes_stored INTEGER NOT NULL,
          duration_ms INTEGER NOT NULL,
          disks TEXT NOT NULL
        );
        CREATE INDEX points_name_time ON points(name, time);
      `);
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
    }
    return new Catalog(db);
  }

  /** Adds or replaces one point. */
  upsert(p: RestorePoint): void {
    this.db
      .prepare(
        `INSERT OR REPLACE INTO points (id, name, time, hostname, size, bytes_read, bytes_stored, duration_ms, disks)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        p.id,
        p.name,
        p.time,
        p.hostname,
        p.disks.reduce((s, d) => s + d.size, 0),
        p.disks.reduce((s, d) => s + d.stats.bytesRead, 0),
        p.disks.reduce((s, d) => s + d.stats.bytesStored, 0),
        p.durationMs,
        JSON.stringify(p.disks),
      );
  }

  /** Removes points by id. */
  remove(ids: readonly string[]): void {
    const st = this.db.prepare('DELETE FROM points WHERE id = ?');
    this.db.transaction(() => {
      for (const id of ids) st.run(id);
    })();
  }

  /** Brings the catalog in line with the repository's manifests; returns what changed. */
  async sync(repo: Repository): Promise<{ added: number; removed: number }> {
    const ids = new Set(await repo.pointIds());
    const have = new Set(
      (this.db.prepare('SELECT id FROM points').all() as { id: string }[]).map((r) => r.id),
    );
    const gone = [...have].filter((id) => !ids.has(id));
    const fresh = [...ids].filter((id) => !have.has(id));
    const points = await Promise.all(fresh.map((id) => repo.readPoint(id).catch(() => null)));
    this.db.transaction(() => {
      for (const p of points) if (p) this.upsert(p);
    })();
    this.remove(gone);
    return { added: points.filter(Boolean).length, removed: gone.length };
  }

  /** Drops every row (before a rebuild). */
  clear(): void {
    this.db.exec('DELETE FROM points');
  }

  /** Points ordered by name then time, optionally of one name. */
  list(name?: string): CatalogPoint[] {
    const rows = (
      name === undefined
        ? this.db.prepare('SELECT * FROM points ORDER BY name, time').all()
        : this.db.prepare('SELECT * FROM points WHERE name = ? ORDER BY time').all(name)
    ) as Record<string, unknown>[];
    return rows.map((r) => ({
      id: r.id as string,
      name: r.name as string,
      time: r.time as string,
      hostname: r.hostname as string,
      size: r.size as number,
      bytesRead: r.bytes_read as number,
      bytesStored: r.bytes_stored as number,
      durationMs: r.duration_ms as number,
      disks: JSON.parse(r.disks as string) as RestorePoint['disks'],
    }));
  }

  close(): void {
    this.db.close();
  }
}
