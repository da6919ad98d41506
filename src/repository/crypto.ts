/**
 * Keys, digests and sealing. A plain repository names chunks by SHA-256 of their content; an
 * encrypted one by HMAC-SHA-256 under a key only the passphrase unlocks, and seals every blob,
 * trailer, index and manifest with AES-256-GCM.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  randomBytes,
  randomFillSync,
  scrypt,
} from 'node:crypto';
import { type NativeAddon, VmvaultError, nativeAddon } from '../core/index.js';
import { DIGEST_SIZE, NONCE_SIZE, TAG_SIZE } from './format.js';

/** The secret key material of an encrypted repository. */
export interface MasterKey {
  /** AES-256-GCM key for sealing. */
  encryption: Buffer;
  /** HMAC-SHA-256 key for chunk digests. */
  mac: Buffer;
}

/** Serialised form of a {@link MasterKey} (64 bytes). */
export function masterKeyBytes(k: MasterKey): Buffer {
  return Buffer.concat([k.encryption, k.mac]);
}

/** Parses 64 key bytes into a {@link MasterKey}. */
export function masterKeyFromBytes(b: Uint8Array): MasterKey {
  const buf = Buffer.from(b);
  if (buf.length !== 64) throw new VmvaultError('E_CORRUPT', 'key material has the wrong length');
  return { encryption: buf.subarray(0, 32), mac: buf.subarray(32, 64) };
}

/** A new random master key. */
export function newMasterKey(): MasterKey {
  return masterKeyFromBytes(randomBytes(64));
}

/**
 * Derivations started in this process, by passphrase, salt and parameters: a derivation begun
 * early (see `prefetchKey`) is picked up by the repository open that needs it, not repeated.
 * Only successful derivations stay; at most a handful per process.
 */
const derivations = new Map<string, Promise<Buffer>>();

/** Derives a 32-byte key-encryption key from a passphrase with scrypt. */
export function deriveKey(
  passphrase: string,
  salt: Buffer,
  params: { N: number; r: number; p: number },
): Promise<Buffer> {
  const id = JSON.stringify([passphrase, salt.toString('base64'), params.N, params.r, params.p]);
  const known = derivations.get(id);
  if (known) return known;
  const p = runScrypt(passphrase, salt, params);
  derivations.set(id, p);
  p.catch(() => derivations.delete(id));
  return p;
}

function runScrypt(
  passphrase: string,
  salt: Buffer,
  params: { N: number; r: number; p: number },
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(
      passphrase.normalize('NFC'),
      salt,
      32,
      { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + 64 * 1024 * 1024 },
      (err, key) => (err ? reject(err) : resolve(key)),
    );
  });
}

/** Computes the content digest of a chunk or page: SHA-256, or HMAC-SHA-256 when keyed. */
export function digestOf(data: Uint8Array, macKey: Buffer | null): Buffer {
  return macKey
    ? createHmac('sha256', macKey).update(data).digest()
    : createHash('sha256').update(data).digest();
}

/** Plain SHA-256, for names of packs and index files and plain-text checksums. */
export function sha256(data: Uint8Array | readonly Uint8Array[]): Buffer {
  const h = createHash('sha256');
  if (data instanceof Uint8Array) h.update(data);
  else for (const part of data) h.update(part);
  return h.digest();
}

/** Random nonces drawn in bulk: one call into the CSPRNG per 4096 nonces, not one per seal. */
const NONCES_PER_FILL = 4096;
let noncePool = Buffer.alloc(0);
let nonceAt = 0;

/** Writes a fresh random nonce into `out` at `at` (its bytes in the pool are wiped). */
function takeNonce(out: Buffer, at = 0): void {
  if (nonceAt + NONCE_SIZE > noncePool.length) {
    noncePool = randomFillSync(Buffer.allocUnsafeSlow(NONCE_SIZE * NONCES_PER_FILL));
    nonceAt = 0;
  }
  noncePool.copy(out, at, nonceAt, nonceAt + NONCE_SIZE);
  noncePool.fill(0, nonceAt, nonceAt + NONCE_SIZE); // a used nonce never stays in memory to repeat
  nonceAt += NONCE_SIZE;
}

/** The native addon when it has AES-GCM (it seals with a kept context, about twice as fast). */
function gcmAddon(): NativeAddon | null {
  const a = nativeAddon();
  return a && typeof a.gcmSealInto === 'function' ? a : null;
}

/**
 * Encrypts `plain` (one buffer, or parts sealed as their concatenation) as
 * nonce ‖ ciphertext ‖ tag, with a random 96-bit nonce per call. Uses the native addon when it
 * is built, else {@link nodeSeal}; both give the same layout.
 */
export function seal(key: Buffer, plain: Uint8Array | readonly Uint8Array[]): Buffer {
  const gcm = gcmAddon();
  if (!gcm) return nodeSeal(key, plain);
  const parts = plain instanceof Uint8Array ? [plain] : plain;
  let total = 0;
  for (const p of parts) total += p.length;
  const out = Buffer.allocUnsafe(NONCE_SIZE + total + TAG_SIZE);
  takeNonce(out);
  gcm.gcmSealInto(key, out.subarray(0, NONCE_SIZE), parts, out, NONCE_SIZE);
  return out;
}

/**
 * Decrypts a sealed buffer. Returns `null` when authentication fails (wrong key or damaged
 * bytes): callers turn that into the error that fits (bad password, corrupt chunk...). Uses the
 * native addon when it is built, else {@link nodeUnseal}.
 */
export function unseal(key: Buffer, sealed: Uint8Array): Buffer | null {
  if (sealed.length < NONCE_SIZE + TAG_SIZE) return null;
  return unsealInto(key, sealed, Buffer.allocUnsafe(sealed.length - NONCE_SIZE - TAG_SIZE));
}

/**
 * {@link unseal} into `dst` (at least the sealed length less {@link SEAL_OVERHEAD} bytes; it
 * may be reused from call to call): returns the view of `dst` that holds the plaintext, or
 * `null` when authentication fails (`dst` may then hold garbage).
 */
export function unsealInto(key: Buffer, sealed: Uint8Array, dst: Buffer): Buffer | null {
  if (sealed.length < NONCE_SIZE + TAG_SIZE) return null;
  const body = sealed.subarray(NONCE_SIZE, sealed.length - TAG_SIZE);
  if (dst.length < body.length) throw new Error('unsealInto: dst too small');
  const gcm = gcmAddon();
  if (!gcm) {
    const plain = nodeUnseal(key, sealed);
    if (!plain) return null;
    plain.copy(dst);
    return dst.subarray(0, plain.length);
  }
  const out = dst.subarray(0, body.length);
  try {
    const ok = gcm.gcmOpenInto(
      key,
      sealed.subarray(0, NONCE_SIZE),
      body,
      sealed.subarray(sealed.length - TAG_SIZE),
      out,
    );
    return ok ? out : null;
  } catch {
    return null;
  }
}

/** {@link seal} with Node's own crypto (the fallback without the addon; tests compare both). */
export function nodeSeal(key: Buffer, plain: Uint8Array | readonly Uint8Array[]): Buffer {
  const nonce = Buffer.allocUnsafe(NONCE_SIZE);
  takeNonce(nonce);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  const parts: Buffer[] = [nonce];
  if (plain instanceof Uint8Array) parts.push(c.update(plain));
  else for (const p of plain) parts.push(c.update(p));
  parts.push(c.final(), c.getAuthTag());
  return Buffer.concat(parts);
}

/** {@link unseal} with Node's own crypto. */
export function nodeUnseal(key: Buffer, sealed: Uint8Array): Buffer | null {
  if (sealed.length < NONCE_SIZE + TAG_SIZE) return null;
  const buf = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  const nonce = buf.subarray(0, NONCE_SIZE);
  const tag = buf.subarray(buf.length - TAG_SIZE);
  const body = buf.subarray(NONCE_SIZE, buf.length - TAG_SIZE);
  try {
    const d = createDecipheriv('aes-256-gcm', key, nonce);
    d.setAuthTag(tag);
    const plain = d.update(body);
    // GCM has no padding: final() adds no bytes, it only checks the tag (and throws).
    const rest = d.final();
    return rest.length === 0 ? plain : Buffer.concat([plain, rest]);
  } catch {
    return null;
  }
}

/**
 * Protects a metadata body (pack trailer, index segment, manifest): sealed with `key` in an
 * encrypted repository, else followed by its SHA-256 so that damage is always detected.
 */
export function protect(body: Buffer, key: Buffer | null): Buffer {
  return key ? seal(key, body) : Buffer.concat([body, sha256(body)]);
}

/** Reverses {@link protect}; null when the bytes are damaged (or the key is wrong). */
export function unprotect(data: Buffer, key: Buffer | null): Buffer | null {
  if (key) return unseal(key, data);
  if (data.length < 32) return null;
  const body = data.subarray(0, data.length - 32);
  return sha256(body).equals(data.subarray(data.length - 32)) ? body : null;
}

/** Overhead that {@link seal} adds to its input. */
export const SEAL_OVERHEAD = NONCE_SIZE + TAG_SIZE;
/** Most parts one {@link seal} takes (the native addon's limit, MAX_PARTS in native/gcm.c). */
export const SEAL_MAX_PARTS = 8;

/** Hex form of a digest. */
export function hex(d: Uint8Array): string {
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('hex');
}

/** Parses a 64-character hex digest. */
export function fromHex(h: string): Buffer {
  const b = Buffer.from(h, 'hex');
  if (b.length !== DIGEST_SIZE) throw new VmvaultError('E_CORRUPT', `not a digest: ${h}`);
  return b;
}
