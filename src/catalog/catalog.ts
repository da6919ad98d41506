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
import { VmvaultError } from '../core/errors.js';
import type { FileRecord } from '../files/index.js';
import type { Repository, RestorePoint } from '../repository/index.js';

/** One entry of the file index of a point, as {@link Catalog.indexedEntry} and {@link Catalog.indexedDir} return it. */
export interface IndexedEntry
  extends Pick<FileRecord, 'type' | 'size' | 'mode' | 'uid' | 'gid' | 'mtimeMs' | 'inode'> {
  /** Last component of the path. */
  name: string;
  /** A symlink's target; null for other entries and for symlinks indexed before targets were. */
  target: string | null;
}

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

const SCHEMA_VERSION = 3;

/**
 * Tables of schema 3. `paths.parent` is the directory an entry is in ("/" for "/etc", "/etc"
 * for "/etc/hosts"), so `files ls` reads one directory through an index; `entries.target` is a
 * symlink's target (NULL for other entries, and for symlinks indexed by schema 2).
 */
const SCHEMA = `
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
    parent TEXT,
    UNIQUE (volume, path)
  );
  CREATE INDEX paths_name ON paths(name);
  CREATE INDEX paths_parent ON paths(volume, parent);
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
    chunks TEXT NOT NULL,
    target TEXT
  );
  CREATE INDEX entries_path_point ON entries(path_id, point_id);
  CREATE INDEX entries_point ON entries(point_id);
`;

/** Creates the tables from scratch (a new catalog, or one of an unknown schema). */
function createSchema(db: Database.Database): void {
  db.exec(`
    DROP TABLE IF EXISTS entries;
    DROP TABLE IF EXISTS paths;
    DROP TABLE IF EXISTS points;
    ${SCHEMA}
  `);
  db.pragma(`user_version = ${SCHEMA_VERSION}`);
}

/** Directory part of a path inside a filesystem ("/etc/hosts" → "/etc", "/etc" → "/"). */
export function parentPath(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

/**
 * Upgrades a schema-2 catalog in place, keeping its file indexes: adds and fills
 * `paths.parent`, adds `entries.target`, and indexes entries by (path, point).
 */
function migrateFromV2(db: Database.Database): void {
  db.transaction(() => {
    db.exec(`
      ALTER TABLE paths ADD COLUMN parent TEXT;
      ALTER TABLE entries ADD COLUMN target TEXT;
      DROP INDEX IF EXISTS entries_path;
    `);
    const set = db.prepare('UPDATE paths SET parent = ? WHERE id = ?');
    for (const r of db.prepare('SELECT id, path FROM paths').all() as { id: number; path: string }[])
      set.run(parentPath(r.path), r.id);
    db.exec(`
      CREATE INDEX paths_parent ON paths(volume, parent);
      CREATE INDEX entries_path_point ON entries(path_id, point_id);
    `);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  })();
}

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

/** Columns {@link entryOf} reads (paths as `p`, entries as `e`). */
const ENTRY_COLUMNS = 'p.name, e.type, e.size, e.mode, e.uid, e.gid, e.mtime_ms, e.inode, e.target';

function entryOf(r: Record<string, unknown>): IndexedEntry {
  return {
    name: r.name as string,
    type: r.type as IndexedEntry['type'],
    size: r.size as number,
    mode: r.mode as number,
    uid: r.uid as number,
    gid: r.gid as number,
    mtimeMs: r.mtime_ms as number,
    inode: r.inode as number,
    target: (r.target as string | null) ?? null,
  };
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
    if (v === 2) migrateFromV2(db);
    else if (v !== SCHEMA_VERSION) createSchema(db);
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

  /**
   * Drops the points that are not in `ids` (the repository's point ids) and returns the ids of
   * `ids` the catalog does not hold yet.
   */
  reconcile(ids: readonly string[]): string[] {
    const want = new Set(ids);
    const have = new Set(this.db.prepare('SELECT id FROM points').pluck().all() as string[]);
    this.remove([...have].filter((id) => !want.has(id)));
    return [...want].filter((id) => !have.has(id));
  }

  /** Brings the catalog in line with the repository's manifests; returns what changed. */
  async sync(repo: Repository): Promise<{ added: number; removed: number }> {
    const before = this.pointCount();
    const fresh = this.reconcile(await repo.pointIds());
    const removed = before - this.pointCount();
    const points = await Promise.all(fresh.map((id) => repo.readPoint(id).catch(() => null)));
    this.db.transaction(() => {
      for (const p of points) if (p) this.upsert(p);
    })();
    return { added: points.filter(Boolean).length, removed };
  }

  /** Number of points in the catalog. */
  pointCount(): number {
    return this.db.prepare('SELECT count(*) FROM points').pluck().get() as number;
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
    const addPath = this.db.prepare('INSERT INTO paths (volume, path, name, parent) VALUES (?, ?, ?, ?)');
    const add = this.db.prepare(
      'INSERT INTO entries (point_id, path_id, type, size, mode, uid, gid, mtime_ms, inode, chunks, target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    let n = 0;
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM entries WHERE point_id = ?').run(pointId);
      for (const f of files) {
        let pathId = getPath.get(f.volume, f.path) as number | undefined;
        if (pathId === undefined) {
          const name = f.path.slice(f.path.lastIndexOf('/') + 1);
          pathId = Number(addPath.run(f.volume, f.path, name, parentPath(f.path)).lastInsertRowid);
        }
        add.run(
          pointId,
          pathId,
          f.type,
          f.size,
          f.mode,
          f.uid,
          f.gid,
          f.mtimeMs,
          f.inode,
          f.chunks,
          f.target ?? null,
        );
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
          `INSERT INTO entries (point_id, path_id, type, size, mode, uid, gid, mtime_ms, inode, chunks, target)
           SELECT ?, path_id, type, size, mode, uid, gid, mtime_ms, inode, chunks, target FROM entries WHERE point_id = ?`,
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
   * Resolves a restore point reference the way the repository does: a full id or unique id
   * prefix, `latest` or `NAME:latest`. Throws `E_NOT_FOUND` / `E_AMBIGUOUS` like
   * `Repository.resolvePoint`; only meaningful on a catalog in sync with the repository.
   */
  resolvePointRef(ref: string): string {
    const latest = /^(?:(.+):)?latest$/.exec(ref);
    if (latest) {
      const id = (
        latest[1] === undefined
          ? this.db.prepare('SELECT id FROM points ORDER BY time DESC LIMIT 1').pluck().get()
          : this.db
              .prepare('SELECT id FROM points WHERE name = ? ORDER BY time DESC LIMIT 1')
              .pluck()
              .get(latest[1])
      ) as string | undefined;
      if (id === undefined)
        throw new VmvaultError('E_NOT_FOUND', `no restore point matches ${ref}`, {
          hint: "see 'vmvault list'",
        });
      return id;
    }
    const prefix = ref.toLowerCase();
    const ids = (
      this.db
        .prepare('SELECT id FROM points WHERE id >= ? ORDER BY id LIMIT 2')
        .pluck()
        .all(prefix) as string[]
    ).filter((id) => id.startsWith(prefix));
    if (ids.length === 0 || ref.length === 0)
      throw new VmvaultError('E_NOT_FOUND', `no restore point with id ${ref}`, {
        hint: "see 'vmvault list'",
      });
    if (ids.length > 1)
      throw new VmvaultError('E_AMBIGUOUS', `id prefix ${ref} matches several restore points`, {
        hint: 'give more digits',
      });
    return ids[0]!;
  }

  /** Whether point `pointId` has a file index. */
  hasFileIndex(pointId: string): boolean {
    return this.db.prepare('SELECT files_indexed FROM points WHERE id = ?').pluck().get(pointId) === 1;
  }

  /** Whether the file index of `pointId` has entries on volume `volume` ("part1", "vdb/disk"). */
  hasIndexedVolume(pointId: string, volume: string): boolean {
    return (
      this.db
        .prepare(
          `SELECT 1 FROM paths p JOIN entries e ON e.path_id = p.id AND e.point_id = ?
           WHERE p.volume = ? AND p.parent = '/' LIMIT 1`,
        )
        .get(pointId, volume) !== undefined
    );
  }

  /** The indexed entry at `path` on `volume` in `pointId`, or null when the index has none. */
  indexedEntry(pointId: string, volume: string, path: string): IndexedEntry | null {
    const row = this.db
      .prepare(
        `SELECT ${ENTRY_COLUMNS} FROM paths p JOIN entries e ON e.path_id = p.id AND e.point_id = ?
         WHERE p.volume = ? AND p.path = ?`,
      )
      .get(pointId, volume, path) as Record<string, unknown> | undefined;
    return row ? entryOf(row) : null;
  }

  /** The indexed entries directly in directory `dir` on `volume` in `pointId`, by name. */
  indexedDir(pointId: string, volume: string, dir: string): IndexedEntry[] {
    const rows = this.db
      .prepare(
        `SELECT ${ENTRY_COLUMNS} FROM paths p JOIN entries e ON e.path_id = p.id AND e.point_id = ?
         WHERE p.volume = ? AND p.parent = ? ORDER BY p.name`,
      )
      .all(pointId, volume, dir) as Record<string, unknown>[];
    return rows.map(entryOf);
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
