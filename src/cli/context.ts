/** What every command needs: global options, the repository, the catalog and output helpers. */
import { readFileSync } from 'node:fs';
import { Catalog, defaultCatalogPath } from '../catalog/index.js';
import { VmvaultError } from '../core/index.js';
import { type LockKind, Repository } from '../repository/index.js';
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

  /** Opens the repository. */
  openRepo(loadIndex = true): Promise<Repository> {
    return Repository.open(this.repoPath(), { passphrase: this.passphrase(), loadIndex });
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

  /** Opens the catalog of `repo`, synced with its manifests. */
  async openCatalog(repo: Repository): Promise<Catalog> {
    const cat = Catalog.open(this.catalogPath(repo));
    await cat.sync(repo);
    return cat;
  }

  /** Where the catalog of `repo` lives (`--catalog`, `VMVAULT_CATALOG` or the default). */
  catalogPath(repo: Repository): string {
    return this.opts.catalog ?? process.env.VMVAULT_CATALOG ?? defaultCatalogPath(repo.config.id);
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
