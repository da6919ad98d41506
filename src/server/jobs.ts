/**
 * Jobs of the REST API: every backup request is a job with an id, a state and its progress, so
 * a client can start one without waiting (`?wait=false`, 202) and poll `GET /api/v1/jobs/ID`.
 * Finished jobs are kept (the latest {@link KEEP_FINISHED}) with their result or error.
 */
import { randomBytes } from 'node:crypto';
import { ProgressLine } from '../cli/progress.js';
import { errorBody } from './http-util.js';

/** Finished jobs remembered. */
export const KEEP_FINISHED = 100;

/** What a job is doing. */
export type JobState = 'queued' | 'running' | 'done' | 'failed';

/** A job as the API shows it. */
export interface JobView {
  id: string;
  /** What it runs, e.g. `backup`. */
  kind: string;
  /** The request body it was started with. */
  request: Record<string, unknown>;
  /** The schedule that started it (`serve --schedule`), or null for a request. */
  schedule: string | null;
  state: JobState;
  createdAt: string;
  startedAt: string | null;
  endedAt: string | null;
  /** Bytes done of total (the disk size for a backup), with rate and ETA; null before any. */
  progress: { done: number; total: number; bytesPerSecond: number; etaSeconds: number | null } | null;
  /** The command's JSON result once done. */
  result: unknown;
  /** The error document once failed. */
  error: Record<string, unknown> | null;
}

/** A progress line that records into a job instead of drawing on a terminal. */
class JobProgress extends ProgressLine {
  constructor(
    label: string,
    private readonly job: JobView,
  ) {
    super(label, false);
  }

  override update(done: number, total: number): void {
    const started = this.job.startedAt ? Date.parse(this.job.startedAt) : Date.now();
    const secs = Math.max(0.001, (Date.now() - started) / 1000);
    const rate = done / secs;
    this.job.progress = {
      done,
      total,
      bytesPerSecond: Math.round(rate),
      etaSeconds: rate > 0 ? Math.max(0, (total - done) / rate) : null,
    };
  }
}

/** The server's jobs, newest last. */
export class JobTable {
  private readonly jobs = new Map<string, JobView>();

  /** Registers a queued job (started by schedule `schedule`, if given). */
  create(kind: string, request: Record<string, unknown>, schedule: string | null = null): JobView {
    const job: JobView = {
      id: randomBytes(8).toString('hex'),
      kind,
      request,
      schedule,
      state: 'queued',
      createdAt: new Date().toISOString(),
      startedAt: null,
      endedAt: null,
      progress: null,
      result: null,
      error: null,
    };
    this.jobs.set(job.id, job);
    return job;
  }

  /** The progress sink a command of `job` reports to. */
  progressOf(job: JobView): (label: string) => ProgressLine {
    return (label) => new JobProgress(label, job);
  }

  started(job: JobView): void {
    job.state = 'running';
    job.startedAt = new Date().toISOString();
  }

  finished(job: JobView, result: unknown): void {
    job.state = 'done';
    job.result = result;
    this.end(job);
  }

  failed(job: JobView, err: unknown): void {
    job.state = 'failed';
    job.error = errorBody(err).error;
    this.end(job);
  }

  get(id: string): JobView | undefined {
    return this.jobs.get(id);
  }

  /** Every job kept, oldest first. */
  list(): JobView[] {
    return [...this.jobs.values()];
  }

  private end(job: JobView): void {
    job.endedAt = new Date().toISOString();
    if (job.progress) job.progress = { ...job.progress, done: job.progress.total, etaSeconds: 0 };
    const finished = this.list().filter((j) => j.state === 'done' || j.state === 'failed');
    for (const old of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED)))
      this.jobs.delete(old.id);
  }
}
