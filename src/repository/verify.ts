/**
 * Verification: re-reads every chunk that the chosen restore points use (every point by
 * default), decodes it and checks its digest, and names the restore points that are damaged.
 */
import { VmvaultError } from '../core/index.js';
import type { CodecPool } from './codec-pool.js';
import { hex } from './crypto.js';
import type { RestorePoint } from './manifest.js';
import { packObjectName, readPackTrailer } from './pack.js';
import { collectUsage, type UsageMap } from './reachability.js';
import type { Repository } from './repository.js';

/** One damaged blob. */
export interface BlobProblem {
  digest: string;
  pack: string | null;
  code: string;
  message: string;
}

/** A restore point that cannot be restored intact. */
export interface DamagedPoint {
  id: string;
  name: string;
  time: string;
  problems: number;
}

/** Result of {@link verifyRepository}. */
export interface VerifyReport {
  pointsChecked: number;
  chunksChecked: number;
  bytesChecked: number;
  packsChecked: number;
  problems: BlobProblem[];
  damaged: DamagedPoint[];
}

/** Progress callback argument. */
export interface VerifyProgress {
  done: number;
  total: number;
}

/** Verifies `points` (all of them when omitted). */
export async function verifyRepository(
  repo: Repository,
  pool: CodecPool,
  points: readonly RestorePoint[],
  onProgress?: (p: VerifyProgress) => void,
): Promise<VerifyReport> {
  const usage: UsageMap = new Map();
  const treeFailures = await collectUsage(repo, points, usage);
  const problems: BlobProblem[] = [];
  const badPoints = new Map<string, number>();
  const blame = (ids: Iterable<string>): void => {
    for (const id of ids) badPoints.set(id, (badPoints.get(id) ?? 0) + 1);
  };
  for (const f of treeFailures) {
    problems.push({
      digest: String(f.error.details.digest ?? ''),
      pack: (f.error.details.pack as string) ?? null,
      code: f.error.code,
      message: f.error.message,
    });
    blame([f.point]);
  }

  // Group used blobs by pack so each pack is read once, sequentially.
  const byPack = new Map<string, { digest: Buffer; users: Set<string> }[]>();
  for (const [k, users] of usage) {
    const digest = Buffer.from(k, 'latin1');
    const loc = repo.index.get(digest);
    if (!loc) {
      problems.push({
        digest: hex(digest),
        pack: null,
        code: 'E_CHUNK_MISSING',
        message: `chunk ${hex(digest)} is missing from the index`,
      });
      blame(users);
      continue;
    }
    const list = byPack.get(loc.pack);
    if (list) list.push({ digest, users });
    else byPack.set(loc.pack, [{ digest, users }]);
  }

  let chunksChecked = 0;
  let bytesChecked = 0;
  let packsChecked = 0;
  const total = usage.size;
  for (const [pack, blobs] of byPack) {
    packsChecked++;
    const name = packObjectName(pack);
    let data: Buffer | null = null;
    let packError: VmvaultError | null = null;
    try {
      data = await repo.backend.read(name);
      await readPackTrailer(pack, data.length, async (o, l) => data!.subarray(o, o + l), repo.sealKey);
    } catch (err) {
      if (!(err instanceof VmvaultError)) throw err;
      packError =
        err.code === 'E_NOT_FOUND'
          ? new VmvaultError('E_PACK_MISSING', `pack ${pack} is missing`)
          : err.code === 'E_PACK_CORRUPT'
            ? err
            : new VmvaultError('E_PACK_CORRUPT', `pack ${pack}: ${err.message}`);
      // A damaged trailer does not doom blobs that still decode: keep checking them below.
      if (err.code === 'E_NOT_FOUND') data = null;
    }
    const checks = blobs.map(async (b) => {
      const loc = repo.index.get(b.digest)!;
      chunksChecked++;
      try {
        if (!data) throw packError!;
        if (loc.entry.offset + loc.entry.length > data.length) {
          throw new VmvaultError(
            'E_PACK_CORRUPT',
            `pack ${pack} is truncated: chunk ${hex(b.digest)} lies past its end`,
          );
        }
        const stored = data.subarray(loc.entry.offset, loc.entry.offset + loc.entry.length);
        await pool.decode(stored, b.digest, loc.entry.rawLength, `pack ${pack}`);
        bytesChecked += loc.entry.rawLength;
      } catch (err) {
        if (!(err instanceof VmvaultError)) throw err;
        problems.push({ digest: hex(b.digest), pack, code: err.code, message: err.message });
        blame(b.users);
      }
    });
    await Promise.all(checks);
    if (packError && data && !problems.some((p) => p.pack === pack)) {
      // Trailer damage only: the blobs are fine, but report it (the index can still be rebuilt).
      problems.push({ digest: '', pack, code: packError.code, message: packError.message });
    }
    onProgress?.({ done: chunksChecked, total });
  }
  const damaged: DamagedPoint[] = points
    .filter((p) => badPoints.has(p.id))
    .map((p) => ({ id: p.id, name: p.name, time: p.time, problems: badPoints.get(p.id)! }));
  return { pointsChecked: points.length, chunksChecked, bytesChecked, packsChecked, problems, damaged };
}
