/**
 * The repository's `config` object: format version, chunking parameters and, for encrypted
 * repositories, the KDF parameters and the master key sealed under the passphrase-derived key.
 * It is plain JSON (no secrets in clear) so a repository describes itself.
 */
import { randomBytes } from 'node:crypto';
import { nativeAddon, VmvaultError } from '../core/index.js';
import {
  deriveKey,
  type MasterKey,
  masterKeyBytes,
  masterKeyFromBytes,
  newMasterKey,
  seal,
  unseal,
} from './crypto.js';
import {
  READABLE_FORMAT_VERSIONS,
  REPO_FORMAT_NAME,
  REPO_FORMAT_VERSION,
  SCRYPT_DEFAULTS,
} from './format.js';

/** Contents of `config`. */
export interface RepoConfig {
  format: typeof REPO_FORMAT_NAME;
  /**
   * Layout version: 1; 2 for repositories whose blobs check themselves; 3 writes LZ4 chunks
   * checked by XXH64 (docs/format.md).
   */
  version: number;
  id: string;
  createdAt: string;
  chunkSize: number;
  packSize: number;
  compression: Compression;
  encryption: null | {
    cipher: 'aes-256-gcm';
    kdf: { name: 'scrypt'; N: number; r: number; p: number; salt: string };
    /** Master key sealed with the passphrase-derived key (base64). */
    sealedKey: string;
  };
}

/**
 * How new blobs are compressed. `zstd` (the default) at `level`; `lz4` (format version 2 or later)
 * trades about a third more stored bytes for about 1.5× faster backups and 2× faster reads;
 * `none` stores blobs raw. Readers ignore it: each blob names its own codec.
 */
export interface Compression {
  algorithm: CompressionAlgorithm;
  /** zstd level (negative = fast levels), LZ4 level (0 = fast; negative = acceleration), or 0. */
  level: number;
}

/** The compression algorithms a repository can be created with. */
export type CompressionAlgorithm = 'zstd' | 'lz4' | 'none';

/** Creates a new config, with a new master key when a passphrase is given. */
export async function createConfig(opts: {
  chunkSize: number;
  packSize: number;
  compressionLevel: number;
  /** Default `zstd` (`none` when the level is 0). */
  compressionAlgorithm?: CompressionAlgorithm;
  passphrase: string | null;
  /** Layout version to write; default {@link REPO_FORMAT_VERSION}. */
  formatVersion?: number;
}): Promise<{ config: RepoConfig; key: MasterKey | null }> {
  const version = opts.formatVersion ?? REPO_FORMAT_VERSION;
  if (!READABLE_FORMAT_VERSIONS.includes(version)) {
    throw new VmvaultError('E_USAGE', `cannot create a repository of format ${version}`);
  }
  const base = {
    format: REPO_FORMAT_NAME,
    version,
    id: randomBytes(16).toString('hex'),
    createdAt: new Date().toISOString(),
    chunkSize: opts.chunkSize,
    packSize: opts.packSize,
    compression: compressionFor(opts.compressionAlgorithm, opts.compressionLevel, version),
  } as const;
  if (opts.passphrase === null) return { config: { ...base, encryption: null }, key: null };
  const salt = randomBytes(32);
  const kek = await deriveKey(opts.passphrase, salt, SCRYPT_DEFAULTS);
  const key = newMasterKey();
  return {
    config: {
      ...base,
      encryption: {
        cipher: 'aes-256-gcm',
        kdf: { name: 'scrypt', ...SCRYPT_DEFAULTS, salt: salt.toString('base64') },
        sealedKey: seal(kek, masterKeyBytes(key)).toString('base64'),
      },
    },
    key,
  };
}

/** Parses and checks `config`. */
export function parseConfig(data: Buffer, where: string): RepoConfig {
  let c: RepoConfig;
  try {
    c = JSON.parse(data.toString('utf8')) as RepoConfig;
  } catch {
    throw new VmvaultError('E_CORRUPT', `${where}/config is not valid JSON`);
  }
  if (c.format !== REPO_FORMAT_NAME) {
    throw new VmvaultError('E_NO_REPO', `${where} is not a vmvault repository`);
  }
  if (!READABLE_FORMAT_VERSIONS.includes(c.version)) {
    throw new VmvaultError(
      'E_REPO_VERSION',
      `${where} has repository format ${c.version}; this vmvault reads ${READABLE_FORMAT_VERSIONS.join(', ')}`,
      {
        hint: 'use a vmvault release that supports it',
      },
    );
  }
  const pow2 = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
  if (!pow2(c.chunkSize) || c.chunkSize < 4096 || c.chunkSize > 16 << 20) {
    throw new VmvaultError('E_CORRUPT', `${where}/config has an invalid chunk size ${c.chunkSize}`);
  }
  return c;
}

/** Unlocks the master key of an encrypted repository; E_BAD_PASSWORD on a wrong passphrase. */
export async function unlockKey(c: RepoConfig, passphrase: string): Promise<MasterKey> {
  const enc = c.encryption!;
  const kek = await deriveKey(passphrase, Buffer.from(enc.kdf.salt, 'base64'), enc.kdf);
  const raw = unseal(kek, Buffer.from(enc.sealedKey, 'base64'));
  if (!raw) {
    throw new VmvaultError('E_BAD_PASSWORD', 'wrong passphrase for this repository', {
      hint: 'check VMVAULT_PASSWORD or --password-file',
    });
  }
  return masterKeyFromBytes(raw);
}

/** Checks and normalises the compression a new repository asks for. */
function compressionFor(
  algorithm: CompressionAlgorithm | undefined,
  level: number,
  version: number,
): Compression {
  const algo = algorithm ?? (level !== 0 ? 'zstd' : 'none');
  if (algo === 'none' || (algo === 'zstd' && level === 0)) return { algorithm: 'none', level: 0 };
  if (algo === 'lz4' && version < 2) {
    throw new VmvaultError('E_USAGE', 'lz4 compression needs repository format version 2 or later');
  }
  if (algo === 'lz4' && !nativeAddon()) {
    throw new VmvaultError(
      'E_UNSUPPORTED',
      "lz4 compression needs vmvault's native addon, which is not built",
      {
        hint: "run 'npm run build' (it needs liblz4-dev), or choose --compression zstd",
      },
    );
  }
  return { algorithm: algo, level };
}
