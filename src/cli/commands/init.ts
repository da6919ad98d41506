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
  const level = v['compression-level'] === undefined ? undefined : Number(v['compression-level']);
  if (level !== undefined && (!Number.isInteger(level) || level < -7 || level > 19)) {
    throw new VmvaultError(
      'E_USAGE',
      `--compression-level must be -7 (fastest) to 19 (smallest), or 0 for none, not ${v['compression-level']}`,
    );
  }
  const repo = await Repository.init(path, {
    passphrase,
    ...(chunkSize !== undefined ? { chunkSize } : {}),
    ...(level !== undefined ? { compressionLevel: level } : {}),
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
      `created ${c.encryption ? 'encrypted ' : ''}repository ${c.id} at ${path} (chunks ${formatBytes(c.chunkSize)}, zstd level ${c.compression.level})`,
  );
  return 0;
};
