/** Thin wrappers that run the vmvault CLI and restic as a user would, timing each call. */
import { readdir, stat } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type RunResult, run } from './proc.js';

/** The vmvault CLI of this checkout (`bin/vmvault`, running the compiled dist/). */
export const VMVAULT_BIN = fileURLToPath(new URL('../../../bin/vmvault', import.meta.url));

/** Result of one timed backup. */
export interface BackupRun {
  ms: number;
  maxRss: number;
  /** Bytes the tool says it added. */
  bytesStored: number;
  /** vmvault restore point id, or restic snapshot id. */
  id: string;
}

/** One vmvault repository driven through the CLI. */
export class Vmvault {
  constructor(
    readonly repo: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  private cli(args: string[], measureRss = false): Promise<RunResult> {
    return run(process.execPath, [VMVAULT_BIN, ...args, '--repo', this.repo, '--json'], {
      env: this.env,
      measureRss,
    });
  }

  /** `vmvault init` with optional `--encrypt`, `--chunk-size` and `--compression`. */
  async init(opts: { encrypt: boolean; chunkSize?: string; compression?: string }): Promise<void> {
    const args = ['init'];
    if (opts.encrypt) args.push('--encrypt');
    if (opts.compression) args.push('--compression', opts.compression);
    if (opts.chunkSize) args.push('--chunk-size', opts.chunkSize);
    await this.cli(args);
  }

  /** `vmvault backup path --name name`, under `/usr/bin/time -v`. */
  async backup(path: string, name: string): Promise<BackupRun & { json: Record<string, unknown> }> {
    const r = await this.cli(['backup', path, '--name', name], true);
    const json = JSON.parse(r.stdout) as Record<string, unknown>;
    return { ms: r.ms, maxRss: r.maxRss, bytesStored: Number(json.bytesStored), id: String(json.id), json };
  }

  /** `vmvault restore id target`; returns the restored file. */
  async restore(id: string, target: string): Promise<{ ms: number; maxRss: number; file: string }> {
    const r = await this.cli(['restore', id, target], true);
    return { ms: r.ms, maxRss: r.maxRss, file: target };
  }
}

/** One restic repository (always encrypted), with its cache inside the benchmark directory. */
export class Restic {
  private readonly env: NodeJS.ProcessEnv;

  constructor(
    readonly repo: string,
    private readonly cacheDir: string,
    password: string,
  ) {
    this.env = { ...process.env, RESTIC_PASSWORD: password, RESTIC_REPOSITORY: repo };
  }

  private cli(args: string[], cwd?: string): Promise<RunResult> {
    return run('restic', ['--cache-dir', this.cacheDir, ...args], {
      env: this.env,
      measureRss: true,
      ...(cwd ? { cwd } : {}),
    });
  }

  /** `restic init` (repository format 2, compression auto: the 0.14 defaults). */
  async init(): Promise<void> {
    await this.cli(['init', '--repository-version', '2', '--quiet']);
  }

  /** `restic backup --json FILE` run from the file's directory. */
  async backup(dir: string, file: string): Promise<BackupRun> {
    const r = await this.cli(['backup', '--json', file], dir);
    const summary = r.stdout
      .split('\n')
      .filter((l) => l.includes('"summary"'))
      .map((l) => JSON.parse(l) as { data_added?: number; snapshot_id?: string })
      .pop();
    return {
      ms: r.ms,
      maxRss: r.maxRss,
      bytesStored: summary?.data_added ?? 0,
      id: summary?.snapshot_id ?? '',
    };
  }

  /** `restic restore latest --target dir`; returns the restored file named `file`. */
  async restore(target: string, file: string): Promise<{ ms: number; maxRss: number; file: string }> {
    const r = await this.cli(['restore', 'latest', '--target', target]);
    const found = await findFile(target, file);
    if (!found) throw new Error(`restic restored no ${file} under ${target}`);
    return { ms: r.ms, maxRss: r.maxRss, file: found };
  }
}

/** First regular file named `name` under `dir` (depth-first). */
async function findFile(dir: string, name: string): Promise<string | undefined> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isFile() && e.name === name) return p;
    if (e.isDirectory()) {
      const f = await findFile(p, name);
      if (f) return f;
    }
  }
  return undefined;
}

/** One line describing the machine and tool versions, for the report header. */
export async function machineInfo(): Promise<string> {
  const restic = (await run('restic', ['version'])).stdout.trim();
  const git = await run(
    'git',
    ['-C', fileURLToPath(new URL('../../..', import.meta.url)), 'rev-parse', '--short', 'HEAD'],
    {
      allowFail: true,
    },
  );
  const cpu = cpus()[0]?.model ?? 'unknown cpu';
  const rev = git.code === 0 ? git.stdout.trim() : 'unknown';
  return `nproc ${cpus().length} (${cpu}), node ${process.version}, ${restic}, vmvault at ${rev} (+ working tree)`;
}

/** Size in bytes of the file at `path`. */
export async function fileSize(path: string): Promise<number> {
  return (await stat(path)).size;
}
