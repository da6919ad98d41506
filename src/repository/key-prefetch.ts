/**
 * Starts the passphrase's key derivation (scrypt, ~0.3 s) as early as a command knows its
 * repository, so it runs on the thread pool while the command's modules load. The open that
 * follows finds the derivation under way (see `deriveKey`) instead of starting it then.
 * Light on purpose: only `node:fs` and the crypto helpers, no zstd, workers or pack code.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { deriveKey } from './crypto.js';

/**
 * Begins deriving the key of the repository at `repoPath` when it is encrypted with scrypt.
 * Never fails: a missing or unreadable config, or anything unexpected in it, is left for the
 * real open to report.
 */
export function prefetchKey(repoPath: string, passphrase: string): void {
  readFile(join(repoPath, 'config'), 'utf8')
    .then((text) => {
      const kdf = (JSON.parse(text) as { encryption?: { kdf?: Record<string, unknown> } }).encryption?.kdf;
      if (kdf?.name !== 'scrypt' || typeof kdf.salt !== 'string') return;
      const { N, r, p } = kdf;
      if (typeof N !== 'number' || typeof r !== 'number' || typeof p !== 'number') return;
      deriveKey(passphrase, Buffer.from(kdf.salt, 'base64'), { N, r, p }).catch(() => {});
    })
    .catch(() => {});
}
