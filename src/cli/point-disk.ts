/** Resolving `<id> [--disk NAME]` to a restore point and one of its disks, for every command. */
import { VmvaultError } from '../core/errors.js';
import type { DiskRecord, Repository, RestorePoint } from '../repository/index.js';

/**
 * The restore point `ref` names (id, unique prefix, `latest`, `NAME:latest`) and its disk
 * `diskName` (the first disk when not given). E_NOT_FOUND, listing the point's disks, when it
 * has no such disk.
 */
export async function resolvePointDisk(
  repo: Repository,
  ref: string,
  diskName: string | undefined,
): Promise<{ point: RestorePoint; disk: DiskRecord }> {
  const point = await repo.resolvePoint(ref);
  const disk = diskName ? point.disks.find((d) => d.name === diskName) : point.disks[0];
  if (!disk) {
    throw new VmvaultError('E_NOT_FOUND', `restore point ${point.id} has no disk ${diskName}`, {
      hint: `its disks: ${point.disks.map((d) => d.name).join(', ')}`,
    });
  }
  return { point, disk };
}
