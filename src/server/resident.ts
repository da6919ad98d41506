/**
 * A repository kept open across jobs, for `vmvault serve`: its location index stays loaded and
 * its codec workers stay warm, so a job starts without a process start, an index load or a
 * worker start. Jobs run one at a time (in the order they came); each takes the repository lock
 * a CLI command would take, so server jobs and CLI commands of other processes coordinate as
 * CLI commands do among themselves.
 *
 * Freshness: other processes may write the repository between jobs (a CLI backup adds index
 * segments; gc rewrites them and deletes packs). Each job therefore refreshes the location
 * index once it holds its lock ({@link Repository.refreshIndex}), and a job that fails drops
 * the open repository and its workers, so the next job starts from what is on disk.
 */
import { VmvaultError } from '../core/index.js';
import { CodecPool, type LockKind, Repository } from '../repository/index.js';

/** How {@link ResidentRepository} opens its repository. */
export interface ResidentOptions {
  /** Repository directory. */
  path: string;
  /** Passphrase of an encrypted repository, or null. */
  passphrase: string | null;
  /** How long a job waits for a busy repository lock (ms). */
  lockWaitMs: number;
  /** Called when a job waits for a lock another process holds. */
  onLockWait?: (holder: string, command: string) => void;
}

/** A repository, its location index and its codec workers, open across jobs. */
export class ResidentRepository {
  private repo: Repository | null = null;
  private pool: CodecPool | null = null;
  /** Tail of the job queue: every job starts after the one before it settled. */
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(readonly opts: ResidentOptions) {}

  /** The open repository (opened and its index loaded on first use). */
  async repository(): Promise<Repository> {
    if (this.closed) throw new VmvaultError('E_CLOSED', 'the server is shutting down');
    if (!this.repo) {
      this.repo = await Repository.open(this.opts.path, { passphrase: this.opts.passphrase });
      this.pool = new CodecPool(this.repo);
    }
    return this.repo;
  }

  /** The warm worker pool of the open repository. */
  codecPool(repo: Repository): CodecPool {
    if (repo !== this.repo || !this.pool) {
      throw new VmvaultError('E_INTERNAL', 'the codec pool belongs to another repository instance');
    }
    return this.pool;
  }

  /**
   * Runs `fn` as the next job: after every earlier job, with a repository lock of `kind` held
   * (named `command`) and the location index brought up to date. A job that throws drops the
   * open repository (its in-memory state may hold half a job), and the error goes to the caller.
   */
  run<T>(kind: LockKind, command: string, fn: (repo: Repository) => Promise<T>): Promise<T> {
    const job = this.tail.then(async () => {
      const repo = await this.repository();
      const onWait = (holder: string) => this.opts.onLockWait?.(holder, command);
      const lock = await repo.lock(kind, command, this.opts.lockWaitMs, onWait);
      try {
        await repo.refreshIndex();
        return await fn(repo);
      } catch (err) {
        await this.drop();
        throw err;
      } finally {
        await lock.release();
      }
    });
    this.tail = job.catch(() => undefined);
    return job;
  }

  /** Waits for the jobs queued so far, then closes the repository and stops the workers. */
  async close(): Promise<void> {
    this.closed = true;
    await this.tail;
    await this.drop();
  }

  /** Closes the open repository and its workers, if any. */
  private async drop(): Promise<void> {
    const { repo, pool } = this;
    this.repo = null;
    this.pool = null;
    await pool?.close();
    await repo?.close();
  }
}
