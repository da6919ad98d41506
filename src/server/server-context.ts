/**
 * The context a CLI command runs in when the server runs it: the server's repository (kept
 * open, see {@link ResidentRepository}) and its passphrase, its warm codec workers, no progress
 * line, and the result captured instead of printed.
 */
import { Context, type GlobalOptions } from '../cli/context.js';
import { ProgressLine } from '../cli/progress.js';
import type { CodecPool, LockKind, Repository } from '../repository/index.js';
import type { ResidentRepository } from './resident.js';

/** What a command produced: its JSON value and the text it would print without --json. */
export interface CommandOutput {
  value: unknown;
  text: string;
}

/** A command context bound to the server's resident repository. */
export class ServerContext extends Context {
  /** Set by the command's {@link out} call. */
  output: CommandOutput | null = null;

  constructor(
    private readonly resident: ResidentRepository,
    opts: Omit<GlobalOptions, 'repo' | 'password-file' | 'json'>,
    /** Where the command's progress goes (a job's record), and who hears that it started. */
    private readonly job: { progress?: (label: string) => ProgressLine; onStart?: () => void } = {},
  ) {
    super({ ...opts, repo: resident.opts.path, json: true, quiet: true, progress: false });
  }

  override passphrase(): string | null {
    return this.resident.opts.passphrase;
  }

  override lockWaitMs(): number {
    return this.resident.opts.lockWaitMs;
  }

  override withRepo<T>(kind: LockKind, command: string, fn: (repo: Repository) => Promise<T>): Promise<T> {
    return this.resident.run(kind, command, (repo) => {
      this.job.onStart?.();
      return fn(repo);
    });
  }

  override prestartPool(): void {
    // The resident repository's pool is warm already.
  }

  override async codecPool(repo: Repository): Promise<CodecPool> {
    return this.resident.codecPool(repo);
  }

  override async releasePool(): Promise<void> {
    // The pool stays with the resident repository.
  }

  override progress(label: string): ProgressLine {
    return this.job.progress?.(label) ?? new ProgressLine(label, false);
  }

  override out(value: unknown, human: () => string): void {
    this.output = { value, text: human() };
  }
}
