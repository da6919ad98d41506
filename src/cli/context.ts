/** What every command needs: global options, the repository, the catalog and output helpers. */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { LocalBackend } from '../backends/local.js';
import { Catalog, defaultCatalogPath } from '../catalog/index.js';
import { errnoCode, VmvaultError } from '../core/errors.js';
import { parseConfig, unlockKey } from '../repository/config.js';
import type { CodecPool, LockKind, Repository } from '../repository/index.js';
import { TraceStore } from '../live/traces.js';
import { ProgressLine } from './progress.js';

/** Options every command accepts. */
export interface GlobalOptions {
  repo?: string;
  'password-file'?: string;
  json?: boolean;
  quiet?: boolean;
  progress?: boolean;
  'lock-wait'?: string;
  catalog?: string;
}

/** The per-invocation context handed to commands. */
export class Context {
  constructor(readonly opts: GlobalOptions) {}

  get json(): boolean {
    return this.opts.json === true;
  }

  /** Repository path from --repo or VMVAULT_REPO. */
  repoPath(): string {
    const p = this.opts.repo ?? process.env.VMVAULT_REPO;
    if (!p) {
      throw new VmvaultError('E_USAGE', 'no repository given', {
        hint: 'pass --repo DIR or set VMVAULT_REPO',
      });
    }
    return p;
  }

  /** Passphrase from --password-file or VMVAULT_PASSWORD, or null. */
  passphrase(): string | null {
    const file = this.opts['password-file'];
    if (file) {
      try {
        return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
      } catch (err) {
        throw new VmvaultError('E_USAGE', `cannot read password file ${file}: ${(err as Error).message}`);
      }
    }
    return process.env.VMVAULT_PASSWORD ?? null;
  }

  /**
   * Opens the repository. The repository module (zstd, the worker pool, pack and index code)
   * is imported here, on first use, so commands the catalog alone answers never load it.
   */
  async openRepo(loadIndex = true): Promise<Repository> {
    const { Repository } = await import('../repository/index.js');
    return Repository.open(this.repoPath(), { passphrase: this.passphrase(), loadIndex });
  }

  /**
   * Runs `query` on the catalog without opening the repository, when the catalog alone gives
   * the same answer as the repository would: it holds every restore point the repository has
   * (points it holds that the repository no longer has are dropped first) and, with
   * `needFiles`, every point's file index. Resolves to `null` when it cannot (no repository
   * there, points the catalog has not seen, points without a file index, no passphrase for an
   * encrypted repository): the caller then takes the ordinary path, which opens the
   * repository, syncs the catalog and reports errors the usual way.
   *
   * An encrypted repository's passphrase is still checked (scrypt, ~0.2 s, run while `query`
   * runs): the catalog holds names from the repository, and a command must not answer without
   * the passphrase only because an earlier run left a catalog behind.
   */
  async withCatalogOnly<T>(needFiles: boolean, query: (cat: Catalog) => T | null): Promise<T | null> {
    const path = this.repoPath();
    let raw: Buffer;
    try {
      raw = await readFile(join(path, 'config'));
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return null;
      throw err;
    }
    const config = parseConfig(raw, path);
    let unlocked: Promise<unknown> = Promise.resolve();
    if (config.encryption) {
      const passphrase = this.passphrase();
      if (passphrase === null) return null;
      unlocked = unlockKey(config, passphrase);
      // Checked below; until then a rejection must not count as unhandled.
      unlocked.catch(() => {});
    }
    const backend = new LocalBackend(path);
    let ids: string[];
    try {
      ids = (await backend.listNames('snapshots')).map((n) => n.slice('snapshots/'.length));
    } finally {
      await backend.close();
    }
    const cat = Catalog.open(this.catalogPathFor(config.id));
    try {
      if (cat.reconcile(ids).length > 0) return null;
      if (needFiles && cat.unindexedPoints().length > 0) return null;
      const answer = query(cat);
      if (answer !== null) await unlocked;
      return answer;
    } finally {
      cat.close();
    }
  }

  /**
   * Opens the repository, takes a lock of `kind` and runs `fn`; releases the lock and closes
   * the repository however `fn` ends.
   */
  async withRepo<T>(
    kind: LockKind,
    command: string,
    fn: (repo: Repository) => Promise<T>,
    loadIndex = true,
  ): Promise<T> {
    const repo = await this.openRepo(loadIndex);
    try {
      const lock = await repo.lock(kind, command, this.lockWaitMs(), this.onLockWait);
      try {
        return await fn(repo);
      } finally {
        await lock.release();
      }
    } finally {
      await repo.close();
    }
  }

  /**
   * Starts the threads of the command's {@link codecPool} while the repository opens (the
   * passphrase's scrypt runs meanwhile); call before {@link withRepo}.
   */
  prestartPool(): void {
    import('../repository/index.js').then(
      (m) => m.prestartCodecWorkers(),
      () => {}, // openRepo reports it
    );
  }

  /**
   * The worker pool that encodes and decodes `repo`'s blobs for one command; hand it back with
   * {@link releasePool}. A resident server lends its warm pool instead of starting one.
   */
  async codecPool(repo: Repository): Promise<CodecPool> {
    const { CodecPool } = await import('../repository/index.js');
    return new CodecPool(repo);
  }

  /** Hands back a pool from {@link codecPool} (here: stops its workers). */
  async releasePool(pool: CodecPool): Promise<void> {
    await pool.close();
  }

  /** Opens the catalog of `repo`, synced with its manifests. */
  async openCatalog(repo: Repository): Promise<Catalog> {
    const cat = Catalog.open(this.catalogPath(repo));
    await cat.sync(repo);
    return cat;
  }

  /**
   * Opens the repository (without its location index, and without a lock: nothing is
   * deleted) and its catalog synced with the manifests, runs `fn`, and closes both.
   */
  async withSyncedCatalog<T>(fn: (cat: Catalog, repo: Repository) => Promise<T> | T): Promise<T> {
    const repo = await this.openRepo(false);
    try {
      const cat = await this.openCatalog(repo);
      try {
        return await fn(cat, repo);
      } finally {
        cat.close();
      }
    } finally {
      await repo.close();
    }
  }

  /** Where the catalog of `repo` lives (`--catalog`, `VMVAULT_CATALOG` or the default). */
  catalogPath(repo: Repository): string {
    return this.catalogPathFor(repo.config.id);
  }

  /** The live mounts' read traces of `repo`: next to its catalog. */
  traceStore(repo: Repository): TraceStore {
    return new TraceStore(join(dirname(this.catalogPath(repo)), 'traces'));
  }

  /** Where the catalog of the repository with id `repoId` lives. */
  catalogPathFor(repoId: string): string {
    return this.opts.catalog ?? process.env.VMVAULT_CATALOG ?? defaultCatalogPath(repoId);
  }

  /** How long to wait for a busy lock (ms); default one hour. */
  lockWaitMs(): number {
    const v = this.opts['lock-wait'];
    if (v === undefined) return 3600_000;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0)
      throw new VmvaultError('E_USAGE', `--lock-wait takes seconds, not ${v}`);
    return n * 1000;
  }

  /** Prints a note on stderr when a lock is busy. */
  onLockWait = (holder: string): void => {
    if (!this.opts.quiet)
      process.stderr.write(`vmvault: waiting for the repository lock held by ${holder}\n`);
  };

  /** A progress line, shown only on a terminal and not with --quiet / --no-progress. */
  progress(label: string): ProgressLine {
    const on = process.stderr.isTTY === true && !this.opts.quiet && this.opts.progress !== false;
    return new ProgressLine(label, on);
  }

  /** Prints the result: JSON on stdout with --json, else the human text. */
  out(value: unknown, human: () => string): void {
    if (this.json) process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
    else if (!this.opts.quiet) {
      const text = human();
      if (text) process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    }
  }
}
