/** A whole backup: every disk of one source at one point in time, then the manifest. */
import { hostname } from 'node:os';
import {
  type CodecPool,
  type DiskRecord,
  newPointId,
  type Repository,
  type RestorePoint,
} from '../repository/index.js';
import type { DiskSource } from '../sources/index.js';
import { type BackupProgress, backupDisk } from './backup-disk.js';

/** Options of {@link runBackup}. */
export interface RunBackupOptions {
  name: string;
  tags?: string[];
  /** The point to compare with; found by name (the latest) when not given. */
  parent?: RestorePoint | null;
  onProgress?: (p: BackupProgress & { disk: string }) => void;
}

/** Result of {@link runBackup}: the saved point and what it cost. */
export interface BackupResult {
  point: RestorePoint;
  /** Bytes of packs, index and manifest this backup added. */
  bytesStored: number;
  bytesRead: number;
}

/** The latest restore point of `name`, or null. */
export async function latestPoint(repo: Repository, name: string): Promise<RestorePoint | null> {
  const earlier = (await repo.listPoints()).filter((p) => p.name === name);
  return earlier[earlier.length - 1] ?? null;
}

/**
 * The last steps of every backup, in the repository's write order: makes the packs and their
 * index segment durable, then writes the manifest. Returns the saved point.
 */
export async function commitPoint(
  repo: Repository,
  p: {
    name: string;
    time: string;
    started: number;
    parent: RestorePoint | null;
    disks: DiskRecord[];
    tags: string[];
    vm?: unknown;
  },
): Promise<RestorePoint> {
  await repo.flush();
  const point: RestorePoint = {
    version: 1,
    id: newPointId(),
    name: p.name,
    time: p.time,
    hostname: hostname(),
    parent: p.parent?.id ?? null,
    disks: p.disks,
    durationMs: Date.now() - p.started,
    tags: p.tags,
    ...(p.vm === undefined ? {} : { vm: p.vm }),
  };
  await repo.savePoint(point);
  return point;
}

/**
 * Backs up `disks` as one restore point. The repository write order is kept: packs, then the
 * index segment ({@link Repository.flush}), then the manifest.
 */
export async function runBackup(
  repo: Repository,
  pool: CodecPool,
  disks: readonly { name: string; source: DiskSource }[],
  opts: RunBackupOptions,
): Promise<BackupResult> {
  const started = Date.now();
  const time = new Date(started).toISOString();
  const written0 = repo.stats.bytesWritten;
  const parent = opts.parent !== undefined ? opts.parent : await latestPoint(repo, opts.name);
  const records = [];
  for (const d of disks) {
    const method = parent ? 'read-compare' : 'full';
    const reason = parent
      ? `no change tracking for ${d.source.kind} sources: read all data, stored only chunks not already in the repository (compared with ${parent.id})`
      : `first backup of ${opts.name}`;
    records.push(
      await backupDisk(repo, pool, d.source, {
        name: d.name,
        method,
        reason,
        ...(opts.onProgress
          ? { onProgress: (p: BackupProgress) => opts.onProgress!({ ...p, disk: d.name }) }
          : {}),
      }),
    );
  }
  const point = await commitPoint(repo, {
    name: opts.name,
    time,
    started,
    parent,
    disks: records,
    tags: opts.tags ?? [],
  });
  return {
    point,
    bytesStored: repo.stats.bytesWritten - written0,
    bytesRead: records.reduce((s, r) => s + r.stats.bytesRead, 0),
  };
}
