/**
 * The catalog: an embedded SQLite database indexing restore points for fast listing and search.
 * It is a cache over the repository: {@link Catalog.sync} brings it in line with the manifests
 * (adding new points, dropping pruned ones), so it can be deleted and rebuilt at any time.
 */
import { mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import type Database from 'better-sqlite3';
import type { FileRecord } from '../files/index.js';
import type { Repository, RestorePoint } from '../repository/index.js';

/** A file found by {@link Catalog.findFiles}. */
export interface FoundFile {
  /** View path ("/part1/etc/hosts"). */
  path: string;
  type: string;
  size: number;
  mode: number;
  mtimeMs: number;
  pointId: string;
  pointName: string;
  time: string;
}

const SCHEMA_VERSION = 2;

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
    // Loaded on first use: commands that never open a catalog (mount, recover…) start faster.
    const Sqlite = createRequire(import.meta.url)('better-sqlite3') as typeof Database;
    const db = new Sqlite(path);
    db.pragma('journal_mode = WAL');
    db.pragma('busy_timeout = 10000');
    db.pragma('foreign_keys = ON');
    const v = db.pragma('user_version', { simple: true }) as number;
    if (v !== SCHEMA_VERSION) {
      db.exec(`
        DROP TABLE IF EXISTS entries;
        DROP TABLE IF EXISTS paths;
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
          disks TEXT NOT NULL,
          files_indexed INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX points_name_time ON points(name, time);
        CREATE TABLE paths (
          id INTEGER PRIMARY KEY,
          volume TEXT NOT NULL,
          path TEXT NOT NULL,
          name TEXT NOT NULL,
          UNIQUE (volume, path)
        );
        CREATE INDEX paths_name ON paths(name);
        CREATE TABLE entries (
          point_id TEXT NOT NULL REFERENCES points(id) ON DELETE CASCADE,
          path_id INTEGER NOT NULL REFERENCES paths(id),
          type TEXT NOT NULL,
          size INTEGER NOT NULL,
          mode INTEGER NOT NULL,
          uid INTEGER NOT NULL,
          gid INTEGER NOT NULL,
          mtime_ms INTEGER NOT NULL,
          inode INTEGER NOT NULL,
          chunks TEXT NOT NULL
        );
        CREATE INDEX entries_path ON entries(path_id);
        CREATE INDEX entries_point ON entries(point_id);
      `);
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
    }
    return new Catalog(db);
  }

  /** Adds one point (points are immutable: an existing row is kept). */
  upsert(p: RestorePoint): void {
    this.db
      .prepare(
        `INSERT OR IGNORE INTO points (id, name, time, hostname, size, bytes_read, bytes_stored, duration_ms, disks)
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
    const files = this.db.prepare('DELETE FROM entries WHERE point_id = ?');
    this.db.transaction(() => {
      for (const id of ids) {
        files.run(id);
        st.run(id);
      }
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

  /** Replaces the file index of one point. */
  setFiles(pointId: string, files: Iterable<FileRecord>): number {
    const getPath = this.db.prepare('SELECT id FROM paths WHERE volume = ? AND path = ?').pluck();
    const addPath = this.db.prepare('INSERT INTO paths (volume, path, name) VALUES (?, ?, ?)');
    const add = this.db.prepare(
      'INSERT INTO entries (point_id, path_id, type, size, mode, uid, gid, mtime_ms, inode, chunks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    let n = 0;
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM entries WHERE point_id = ?').run(pointId);
      for (const f of files) {
        let pathId = getPath.get(f.volume, f.path) as number | undefined;
        if (pathId === undefined) {
          const name = f.path.slice(f.path.lastIndexOf('/') + 1);
          pathId = Number(addPath.run(f.volume, f.path, name).lastInsertRowid);
        }
        add.run(pointId, pathId, f.type, f.size, f.mode, f.uid, f.gid, f.mtimeMs, f.inode, f.chunks);
        n++;
      }
      this.db.prepare('UPDATE points SET files_indexed = 1 WHERE id = ?').run(pointId);
    })();
    return n;
  }

  /** Gives point `to` the same file index as point `from` (same disk content); false if `from` has none. */
  copyFiles(from: string, to: string): number | null {
    const indexed = this.db.prepare('SELECT files_indexed FROM points WHERE id = ?').pluck().get(from) as
      | number
      | undefined;
    if (indexed !== 1) return null;
    let n = 0;
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM entries WHERE point_id = ?').run(to);
      n = this.db
        .prepare(
          `INSERT INTO entries (point_id, path_id, type, size, mode, uid, gid, mtime_ms, inode, chunks)
           SELECT ?, path_id, type, size, mode, uid, gid, mtime_ms, inode, chunks FROM entries WHERE point_id = ?`,
        )
        .run(to, from).changes;
      this.db.prepare('UPDATE points SET files_indexed = 1 WHERE id = ?').run(to);
    })();
    return n;
  }

  /** Ids of points whose files are not indexed yet. */
  unindexedPoints(): string[] {
    return this.db
      .prepare('SELECT id FROM points WHERE files_indexed = 0 ORDER BY time')
      .pluck()
      .all() as string[];
  }

  /**
   * Files whose path (with a `/` in the pattern: the full view path "/part1/etc/hosts") or
   * name (without) matches a glob, in every indexed restore point.
   */
  findFiles(glob: string, pointName?: string): FoundFile[] {
    const byPath = glob.includes('/');
    const pattern = byPath && !glob.startsWith('/') ? `*/${glob}` : glob;
    const where = byPath ? "('/' || p.volume || p.path) GLOB ?" : 'p.name GLOB ?';
    const rows = this.db
      .prepare(
        `SELECT p.volume, p.path, e.type, e.size, e.mode, e.mtime_ms, pt.id AS point_id, pt.name AS point_name, pt.time
         FROM paths p JOIN entries e ON e.path_id = p.id JOIN points pt ON pt.id = e.point_id
         WHERE ${where} ${pointName === undefined ? '' : 'AND pt.name = ?'}
         ORDER BY p.volume, p.path, pt.time`,
      )
      .all(...(pointName === undefined ? [pattern] : [pattern, pointName])) as Record<string, unknown>[];
    return rows.map((r) => ({
      path: `/${r.volume as string}${r.path as string}`,
      type: r.type as string,
      size: r.size as number,
      mode: r.mode as number,
      mtimeMs: r.mtime_ms as number,
      pointId: r.point_id as string,
      pointName: r.point_name as string,
      time: r.time as string,
    }));
  }

  close(): void {
    this.db.close();
  }
}
