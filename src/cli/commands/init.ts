import { VmvaultError, formatBytes, parseBytes } from '../../core/index.js';
import { Repository } from '../../repository/index.js';
import type { CommandRun } from '../command.js';

/** Runs `vmvault init` (its options and help: `initSpec` in specs.ts). */
export const run: CommandRun = async (ctx, _args, v) => {
  const path = ctx.repoPath();
  let passphrase: string | null = null;
  if (v.encrypt) {
    passphrase = ctx.passphrase();
    if (!passphrase) {
      throw new VmvaultError('E_PASSWORD_REQUIRED', '--encrypt needs a passphrase', {
        hint: 'set VMVAULT_PASSWORD or pass --password-file FILE',
      });
    }
  }
  const chunkSize = v['chunk-size'] === undefined ? undefined : parseBytes(String(v['chunk-size']));
  if (
    chunkSize !== undefined &&
    (!Number.isInteger(chunkSize) ||
      chunkSize < 4096 ||
      chunkSize > 16 << 20 ||
      (chunkSize & (chunkSize - 1)) !== 0)
  ) {
    throw new VmvaultError(
      'E_USAGE',
      `--chunk-size must be a power of two from 4K to 16M, not ${v['chunk-size']}`,
    );
  }
  const algorithm = v.compression === undefined ? undefined : String(v.compression);
  if (algorithm !== undefined && algorithm !== 'zstd' && algorithm !== 'lz4' && algorithm !== 'none') {
    throw new VmvaultError('E_USAGE', `--compression must be zstd, lz4 or none, not ${algorithm}`);
  }
  const level = v['compression-level'] === undefined ? undefined : Number(v['compression-level']);
  const [min, max] = algorithm === 'lz4' ? [-64, 12] : [-7, 19];
  if (level !== undefined && (!Number.isInteger(level) || level < min || level > max)) {
    throw new VmvaultError(
      'E_USAGE',
      algorithm === 'lz4'
        ? `--compression-level for lz4 must be -64 (fastest) to 12 (smallest), 0 the default, not ${v['compression-level']}`
        : `--compression-level must be -7 (fastest) to 19 (smallest), or 0 for none, not ${v['compression-level']}`,
    );
  }
  const repo = await Repository.init(path, {
    passphrase,
    ...(chunkSize !== undefined ? { chunkSize } : {}),
    ...(level !== undefined
      ? { compressionLevel: level }
      : algorithm === 'lz4'
        ? { compressionLevel: 0 }
        : {}),
    ...(algorithm !== undefined ? { compressionAlgorithm: algorithm } : {}),
  });
  const c = repo.config;
  await repo.close();
  ctx.out(
    {
      path,
      id: c.id,
      encrypted: c.encryption !== null,
      chunkSize: c.chunkSize,
      compression: c.compression,
    },
    () =>
      `created ${c.encryption ? 'encrypted ' : ''}repository ${c.id} at ${path} (chunks ${formatBytes(c.chunkSize)}, ${describeCompression(c.compression)})`,
  );
  return 0;
};

/** "zstd level 1", "lz4 level 0" or "no compression". */
function describeCompression(c: { algorithm: string; level: number }): string {
  return c.algorithm === 'none' ? 'no compression' : `${c.algorithm} level ${c.level}`;
}
