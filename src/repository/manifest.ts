/**
 * Restore-point manifests: the small self-describing record of one point in time, stored as
 * snapshots/<id>. Written last by a backup; removed first by prune.
 *
 *   manifest = "VVSNAP\0\1" | JSON (sealed when encrypted, else JSON ‖ SHA-256(JSON))
 */
import { randomBytes } from 'node:crypto';
import { VmvaultError } from '../core/index.js';
import { protect, unprotect } from './crypto.js';
import { MANIFEST_MAGIC } from './format.js';

/** One disk captured in a restore point. */
export interface DiskRecord {
  /** Disk name inside the point ("disk0", "vda"...). */
  name: string;
  /** Size in bytes. */
  size: number;
  /** Chunk size the tree was cut with. */
  chunkSize: number;
  /** Root page digest (hex); all zeros for an all-zero disk. */
  root: string;
  /** Where the disk was read from. */
  source: { kind: string; path: string; format?: string };
  /** How it was captured: full read, read-compare against a parent, bitmap incremental. */
  method: 'full' | 'read-compare' | 'bitmap';
  /** Why that method (e.g. "no earlier restore point of this name"). */
  reason: string;
  /** Bytes read from the source, stored chunks new to the repository, etc. */
  stats: DiskStats;
  /**
   * Chunks to fetch first on restore or live mount (partition table, filesystem metadata, boot
   * files): sorted, disjoint `[firstChunk, endChunk)` ranges. Optional (VM backups).
   */
  priorities?: [number, number][];
}

/** Per-disk counters of one backup. */
export interface DiskStats {
  bytesRead: number;
  bytesStored: number;
  chunksNew: number;
  chunksReused: number;
  chunksZero: number;
}

/** A restore point as stored in its manifest. */
export interface RestorePoint {
  /** Format version of the manifest. */
  version: 1;
  id: string;
  name: string;
  /** ISO 8601 time of the point. */
  time: string;
  hostname: string;
  /** Restore point this one was compared against, if any. */
  parent: string | null;
  disks: DiskRecord[];
  /** Wall time of the backup in milliseconds. */
  durationMs: number;
  tags: string[];
  /**
   * For backups of running VMs: the VM's configuration, change tracking per disk and
   * consistency (see src/backup/vm/types.ts `VmPointRecord`). Optional.
   */
  vm?: unknown;
}

/** A new random restore-point id (16 hex digits). */
export function newPointId(): string {
  return randomBytes(8).toString('hex');
}

/** Object name of a manifest. */
export function manifestObjectName(id: string): string {
  return `snapshots/${id}`;
}

/** Serialises a manifest for storage. */
export function encodeManifest(p: RestorePoint, key: Buffer | null): Buffer {
  const json = Buffer.from(JSON.stringify(p));
  return Buffer.concat([MANIFEST_MAGIC, protect(json, key)]);
}

/** Parses a stored manifest. */
export function decodeManifest(data: Buffer, key: Buffer | null, name: string): RestorePoint {
  const bad = (why: string): never => {
    throw new VmvaultError('E_CORRUPT', `restore point manifest ${name} is damaged: ${why}`);
  };
  if (!data.subarray(0, MANIFEST_MAGIC.length).equals(MANIFEST_MAGIC)) bad('bad magic');
  const json = unprotect(data.subarray(MANIFEST_MAGIC.length), key);
  if (!json) return bad(key ? 'authentication failed' : 'checksum mismatch');
  let p: RestorePoint;
  try {
    p = JSON.parse(json.toString('utf8')) as RestorePoint;
  } catch {
    return bad('not JSON');
  }
  if (p.version !== 1 || typeof p.id !== 'string' || !Array.isArray(p.disks)) bad('unknown layout');
  return p;
}
