/**
 * An open repository: configuration and keys, the location index, pack writing with
 * write-ordering (packs → index segment → pages → manifest), and restore-point manifests.
 */
import { stat } from 'node:fs/promises';
import { type Backend, LocalBackend } from '../backends/index.js';
import { VmvaultError, errnoCode } from '../core/index.js';
import { BlobDecoder, BlobEncoder, type DecodeOptions } from './blob-codec.js';
import {
  type CompressionAlgorithm,
  createConfig,
  parseConfig,
  type RepoConfig,
  unlockKey,
} from './config.js';
import { digestOf, hex, type MasterKey } from './crypto.js';
import {
  BlobType,
  DEFAULT_CHUNK_SIZE,
  DEFAULT_COMPRESSION_LEVEL,
  DEFAULT_PACK_SIZE,
  ZERO_DIGEST,
} from './format.js';
import { type BlobLocation, LocationIndex } from './location-index.js';
import { acquireLock, type Lock, type LockKind } from './lock.js';
import { decodeManifest, encodeManifest, manifestObjectName, type RestorePoint } from './manifest.js';
import { PackBuilder, packIdFromName, packObjectName, readPackTrailer } from './pack.js';
import { TreeReader } from './tree.js';
import { PageCache } from './page-cache.js';

/** Options of {@link Repository.init}. */
export interface InitOptions {
  /** Passphrase for an encrypted repository; null for a plain one. */
  passphrase: string | null;
  chunkSize?: number;
  packSize?: number;
  compressionLevel?: number;
  /** `zstd` (default), `lz4` or `none`. */
  compressionAlgorithm?: CompressionAlgorithm;
  /** Layout version to create (1 only to test readers of older repositories); default the current one. */
  formatVersion?: number;
}

/** Counters of what a writer added to the repository. */
export interface WriteStats {
  packsWritten: number;
  /** Bytes of pack files, index segments and manifests written. */
  bytesWritten: number;
}

/** How many sealed packs may be in flight to the backend at once. */
const MAX_PACK_WRITES = 4;
/** Bytes of decoded index pages kept (a 16 KiB leaf page covers 32 MiB of disk). */
const PAGE_CACHE_BYTES = 8 << 20;

/** An open vmvault repository. */
export class Repository {
  readonly index = new LocationIndex();
  /** Blobs added to packs not yet durable and indexed: digest → true. */
  private readonly pendingBlobs = new Set<string>();
  private builder = new PackBuilder();
  private readonly packWrites = new Set<Promise<void>>();
  private packWriteError: unknown = null;
  private readonly pageEncoder: BlobEncoder;
  private readonly decoder: BlobDecoder;
  readonly stats: WriteStats = { packsWritten: 0, bytesWritten: 0 };
  private readonly pages = new PageCache(PAGE_CACHE_BYTES);

  private constructor(
    readonly backend: Backend,
    readonly config: RepoConfig,
    readonly key: MasterKey | null,
  ) {
    this.pageEncoder = new BlobEncoder(config.compression, key?.encryption ?? null, config.version);
    this.decoder = new BlobDecoder(key?.encryption ?? null, key?.mac ?? null);
  }

  /** Creates a repository in an empty or missing directory. */
  static async init(path: string, opts: InitOptions): Promise<Repository> {
    const backend = new LocalBackend(path);
    if (await backend.stat('config')) {
      throw new VmvaultError('E_REPO_EXISTS', `${path} already holds a vmvault repository`);
    }
    try {
      const st = await stat(path);
      if (!st.isDirectory()) throw new VmvaultError('E_USAGE', `${path} exists and is not a directory`);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
    const { config, key } = await createConfig({
      chunkSize: opts.chunkSize ?? DEFAULT_CHUNK_SIZE,
      packSize: opts.packSize ?? DEFAULT_PACK_SIZE,
      compressionLevel: opts.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL,
      passphrase: opts.passphrase,
      ...(opts.compressionAlgorithm ? { compressionAlgorithm: opts.compressionAlgorithm } : {}),
      ...(opts.formatVersion !== undefined ? { formatVersion: opts.formatVersion } : {}),
    });
    await backend.write('config', Buffer.from(`${JSON.stringify(config, null, 2)}\n`));
    return new Repository(backend, config, key);
  }

  /**
   * Opens an existing repository. `passphrase` is needed for encrypted ones; loads the index
   * unless `loadIndex` is false.
   */
  static async open(
    path: string,
    opts: { passphrase: string | null; loadIndex?: boolean },
  ): Promise<Repository> {
    const backend = new LocalBackend(path);
    try {
      let raw: Buffer;
      try {
        raw = await backend.read('config');
      } catch (err) {
        if ((err as VmvaultError).code === 'E_NOT_FOUND') {
          throw new VmvaultError('E_NO_REPO', `no vmvault repository at ${path}`, {
            hint: "create one with 'vmvault init', or set --repo / VMVAULT_REPO",
          });
        }
        throw err;
      }
      const config = parseConfig(raw, path);
      let key: MasterKey | null = null;
      if (config.encryption) {
        if (opts.passphrase === null) {
          throw new VmvaultError('E_PASSWORD_REQUIRED', `the repository at ${path} is encrypted`, {
            hint: 'set VMVAULT_PASSWORD or pass --password-file FILE',
          });
        }
        key = await unlockKey(config, opts.passphrase);
      }
      const repo = new Repository(backend, config, key);
      if (opts.loadIndex !== false) await repo.loadIndex();
      return repo;
    } catch (err) {
      await backend.close();
      throw err;
    }
  }

  /**
   * Another open instance of the repository `of` is (at `path`): the same configuration and
   * keys, so no passphrase and no key derivation, but its own backend handles, location index
   * and pack writer. For long work beside `of`'s jobs, such as a live mount in `vmvault serve`.
   */
  static async openBeside(of: Repository, path: string): Promise<Repository> {
    const backend = new LocalBackend(path);
    const repo = new Repository(backend, of.config, of.key);
    try {
      await repo.loadIndex();
    } catch (err) {
      await backend.close();
      throw err;
    }
    return repo;
  }

  private indexLoaded = false;

  /** Loads the location index from its segments, once (open does it unless told not to). */
  async loadIndex(): Promise<void> {
    if (this.indexLoaded) return;
    this.indexLoaded = true;
    await this.index.load(this.backend, this.sealKey);
  }

  /**
   * Brings the loaded location index up to date with what other processes wrote since it was
   * loaded, for a repository kept open across jobs (`vmvault serve`). Call it with a lock held
   * and nothing of this instance's own pending. New segments are loaded; when a segment this
   * index knows is gone (gc or compaction rewrote the index, and packs it named may be gone
   * too), the index is loaded again from scratch, so it never names a blob that is no longer
   * stored. Returns what it did.
   */
  async refreshIndex(): Promise<{ segmentsLoaded: number; reloaded: boolean }> {
    if (!this.indexLoaded) {
      await this.loadIndex();
      return { segmentsLoaded: this.index.segments.size, reloaded: true };
    }
    if (this.index.hasPending || this.builder.count > 0 || this.packWrites.size > 0) {
      throw new VmvaultError('E_INTERNAL', 'the location index cannot be refreshed with blobs pending');
    }
    const names = await this.backend.listNames('index');
    const present = new Set(names);
    const gone = [...this.index.segments].some((n) => !present.has(n));
    if (gone) {
      this.index.clear();
      this.pages.clear();
      await this.index.loadSegments(this.backend, this.sealKey, names);
      return { segmentsLoaded: names.length, reloaded: true };
    }
    const fresh = names.filter((n) => !this.index.segments.has(n));
    await this.index.loadSegments(this.backend, this.sealKey, fresh);
    return { segmentsLoaded: fresh.length, reloaded: false };
  }

  /** AES key for sealing, or null. */
  get sealKey(): Buffer | null {
    return this.key?.encryption ?? null;
  }

  /** HMAC key for digests, or null. */
  get macKey(): Buffer | null {
    return this.key?.mac ?? null;
  }

  /** Takes a repository lock. */
  lock(kind: LockKind, command: string, waitMs: number, onWait?: (holder: string) => void): Promise<Lock> {
    return acquireLock(this.backend, kind, { command, waitMs, ...(onWait ? { onWait } : {}) });
  }

  // ---- blobs -------------------------------------------------------------------------------

  /** True when a blob with this digest is stored or being stored. */
  hasBlob(digest: Buffer): boolean {
    return this.index.has(digest) || this.pendingBlobs.has(digest.toString('latin1'));
  }

  /**
   * Adds an encoded blob to the current pack. When the pack is full it is sealed and written in
   * the background; at most MAX_PACK_WRITES writes are in flight (this call waits otherwise).
   */
  async addBlob(type: BlobType, digest: Buffer, stored: Buffer, rawLength: number): Promise<void> {
    if (this.packWriteError) throw this.packWriteError;
    this.pendingBlobs.add(digest.toString('latin1'));
    this.builder.add(type, digest, stored, rawLength);
    if (this.builder.byteLength >= this.config.packSize) await this.sealPack();
  }

  /** Bytes in the open (not yet sealed) pack. */
  get openPackBytes(): number {
    return this.builder.byteLength;
  }

  /**
   * Seals the open pack and starts writing it (waiting only while too many pack writes are
   * under way); the next blobs go to a new pack. {@link flush} still has to follow to make it
   * durable and indexed. Lets a caller overlap the last pack's write with other work.
   */
  async sealPack(): Promise<void> {
    const b = this.builder;
    if (b.count === 0) return;
    this.builder = new PackBuilder();
    while (this.packWrites.size >= MAX_PACK_WRITES) await Promise.race(this.packWrites);
    const { id, parts, size } = b.finish(this.sealKey);
    const p: Promise<void> = this.backend
      .write(packObjectName(id), parts)
      .then(() => {
        this.index.addPack(id, b.entries, false);
        for (const e of b.entries) this.pendingBlobs.delete(e.digest.toString('latin1'));
        this.stats.packsWritten++;
        this.stats.bytesWritten += size;
      })
      .catch((err: unknown) => {
        this.packWriteError ??= err;
      })
      .finally(() => this.packWrites.delete(p));
    this.packWrites.add(p);
  }

  /**
   * Makes everything added so far durable: seals the open pack, waits for pack writes, then
   * writes a location-index segment naming the new packs.
   */
  async flush(): Promise<void> {
    await this.sealPack();
    await Promise.all(this.packWrites);
    if (this.packWriteError) throw this.packWriteError;
    const before = this.index.hasPending;
    const name = await this.index.flush(this.backend, this.sealKey);
    if (before && name) {
      const st = await this.backend.stat(name);
      this.stats.bytesWritten += st?.size ?? 0;
    }
  }

  /**
   * Adds a blob copied from another pack (gc). Unlike {@link addBlob} it ignores the index:
   * the digest is indexed already, at the pack being emptied.
   */
  async addBlobCopy(type: BlobType, digest: Buffer, stored: Buffer, rawLength: number): Promise<void> {
    await this.addBlob(type, digest, stored, rawLength);
  }

  /** Encodes and stores an index page (deduplicated); returns its digest. */
  async storePage(page: Buffer): Promise<Buffer> {
    const digest = digestOf(page, this.macKey);
    if (!this.hasBlob(digest))
      await this.addBlob(BlobType.page, digest, this.pageEncoder.encode(page, digest), page.length);
    this.pages.put(digest, Buffer.from(page));
    return digest;
  }

  /** Where a blob is stored; E_CHUNK_MISSING when the index does not know it. */
  locate(digest: Buffer): BlobLocation {
    const loc = this.index.get(digest);
    if (!loc) {
      throw new VmvaultError('E_CHUNK_MISSING', `chunk ${hex(digest)} is missing from the repository`, {
        hint: "run 'vmvault verify' to list the affected restore points",
        details: { digest: hex(digest) },
      });
    }
    return loc;
  }

  /** Reads the stored (encoded) bytes of a blob. */
  async readStored(digest: Buffer): Promise<{ stored: Buffer; loc: BlobLocation }> {
    const loc = this.locate(digest);
    try {
      const stored = await this.backend.readRange(
        packObjectName(loc.pack),
        loc.entry.offset,
        loc.entry.length,
      );
      return { stored, loc };
    } catch (err) {
      if (err instanceof VmvaultError && err.code === 'E_NOT_FOUND') {
        throw new VmvaultError('E_PACK_MISSING', `pack ${loc.pack} holding chunk ${hex(digest)} is missing`, {
          hint: "run 'vmvault verify' to list the affected restore points",
          details: { pack: loc.pack, digest: hex(digest) },
        });
      }
      if (err instanceof VmvaultError && err.code === 'E_CORRUPT') {
        throw new VmvaultError(
          'E_PACK_CORRUPT',
          `pack ${loc.pack} is truncated: chunk ${hex(digest)} cannot be read`,
          {
            hint: "run 'vmvault verify' to list the affected restore points",
            details: { pack: loc.pack, digest: hex(digest) },
          },
        );
      }
      throw err;
    }
  }

  /**
   * Reads, decodes and checks one blob on the calling thread; `opts` as for
   * {@link BlobDecoder.decode} (by default the digest is always recomputed).
   */
  async loadBlob(digest: Buffer, opts: DecodeOptions = {}): Promise<Buffer> {
    const { stored, loc } = await this.readStored(digest);
    return this.decoder.decode(stored, digest, loc.entry.rawLength, `pack ${loc.pack}`, opts);
  }

  /** A reader over the index tree of one disk of a restore point. */
  treeReader(root: Buffer, size: number, chunkSize: number): TreeReader {
    return new TreeReader(root, Math.ceil(size / chunkSize), async (d) => {
      const hit = this.pages.get(d);
      if (hit) return hit;
      const page = await this.loadBlob(d);
      this.pages.put(d, page);
      return page;
    });
  }

  // ---- restore points ----------------------------------------------------------------------

  /** Writes a manifest (after {@link flush}): the point becomes visible. */
  async savePoint(p: RestorePoint): Promise<void> {
    const data = encodeManifest(p, this.sealKey);
    await this.backend.write(manifestObjectName(p.id), data);
    this.stats.bytesWritten += data.length;
  }

  /** Reads every manifest. */
  async listPoints(): Promise<RestorePoint[]> {
    const objects = await this.backend.list('snapshots');
    const points = await Promise.all(
      objects.map(async (o) => {
        try {
          return decodeManifest(await this.backend.read(o.name), this.sealKey, o.name);
        } catch (err) {
          if (err instanceof VmvaultError && err.code === 'E_NOT_FOUND') return null; // pruned meanwhile
          throw err;
        }
      }),
    );
    return points.filter((p): p is RestorePoint => p !== null).sort((a, b) => a.time.localeCompare(b.time));
  }

  /** Ids of every stored manifest, without reading them. */
  async pointIds(): Promise<string[]> {
    return (await this.backend.listNames('snapshots')).map((n) => n.slice('snapshots/'.length));
  }

  /** Reads one manifest by full id. */
  async readPoint(id: string): Promise<RestorePoint> {
    const name = manifestObjectName(id);
    return decodeManifest(await this.backend.read(name), this.sealKey, name);
  }

  /** Resolves an id or unique id prefix ("latest" and "NAME:latest" too). */
  async resolvePoint(ref: string): Promise<RestorePoint> {
    const latest = /^(?:(.+):)?latest$/.exec(ref);
    if (latest) {
      const pts = (await this.listPoints()).filter((p) => latest[1] === undefined || p.name === latest[1]);
      const p = pts[pts.length - 1];
      if (!p)
        throw new VmvaultError('E_NOT_FOUND', `no restore point matches ${ref}`, {
          hint: "see 'vmvault list'",
        });
      return p;
    }
    const ids = (await this.pointIds()).filter((id) => id.startsWith(ref.toLowerCase()));
    if (ids.length === 0 || ref.length === 0) {
      throw new VmvaultError('E_NOT_FOUND', `no restore point with id ${ref}`, {
        hint: "see 'vmvault list'",
      });
    }
    if (ids.length > 1) {
      throw new VmvaultError('E_AMBIGUOUS', `id prefix ${ref} matches ${ids.length} restore points`, {
        hint: 'give more digits',
      });
    }
    return this.readPoint(ids[0]!);
  }

  /** Removes a manifest; its chunks stay until gc. */
  async deletePoint(id: string): Promise<void> {
    await this.backend.remove(manifestObjectName(id));
  }

  // ---- recovery ----------------------------------------------------------------------------

  /**
   * Indexes packs that no index segment names (left by a backup that was killed after writing
   * packs but before its index), so their chunks are reused instead of written again.
   * Damaged orphan packs are skipped; gc removes them. Returns how many were recovered.
   */
  async recoverOrphanPacks(): Promise<number> {
    const known = new Set(this.index.packIds());
    let n = 0;
    // Names first: only packs the index does not know are stat'ed and read.
    const unknown = (await this.backend.listNames('packs')).filter((name) => {
      const id = packIdFromName(name);
      return id !== null && !known.has(id);
    });
    for (const o of await Promise.all(unknown.map((name) => this.backend.stat(name)))) {
      if (!o) continue; // removed meanwhile
      const id = packIdFromName(o.name)!;
      try {
        const entries = await readPackTrailer(
          id,
          o.size,
          (off, len) => this.backend.readRange(o.name, off, len),
          this.sealKey,
        );
        this.index.addPack(id, entries, false);
        n++;
      } catch (err) {
        if (!(err instanceof VmvaultError)) throw err;
      }
    }
    if (n > 0) await this.flush();
    return n;
  }

  /** Closes files; unflushed data is dropped (call {@link flush} first). */
  async close(): Promise<void> {
    await Promise.allSettled(this.packWrites);
    await this.backend.close();
  }
}

export { ZERO_DIGEST };
