/** Runs external commands, timing them from spawn to exit and reading their peak RSS. */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Options of {@link run}. */
export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Wrap in `/usr/bin/time -v` to read the peak RSS. */
  measureRss?: boolean;
  /** Do not throw on a non-zero exit. */
  allowFail?: boolean;
}

/** What a finished command did. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit, ms. */
  ms: number;
  /** Peak RSS in bytes (only with `measureRss`), else 0. */
  maxRss: number;
}

/**
 * Runs `cmd args`, collecting output. With `measureRss` the command runs under GNU
 * `/usr/bin/time -v` and "Maximum resident set size" is parsed from its report.
 * @throws Error with the command's stderr when it exits non-zero (unless `allowFail`).
 */
export async function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  let file = cmd;
  let argv = [...args];
  let tmp: string | undefined;
  if (opts.measureRss) {
    tmp = mkdtempSync(join(tmpdir(), 'vvbench-time-'));
    file = '/usr/bin/time';
    argv = ['-v', '-o', join(tmp, 'time.txt'), cmd, ...args];
  }
  const started = performance.now();
  const child = spawn(file, argv, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c) => resolve(c ?? 128));
  });
  const ms = performance.now() - started;
  let maxRss = 0;
  if (tmp) {
    const report = readFileSync(join(tmp, 'time.txt'), 'utf8');
    const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(report);
    maxRss = m ? Number(m[1]) * 1024 : 0;
    rmSync(tmp, { recursive: true, force: true });
  }
  const r = {
    code,
    stdout: Buffer.concat(out).toString(),
    stderr: Buffer.concat(err).toString(),
    ms,
    maxRss,
  };
  if (code !== 0 && !opts.allowFail) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${r.stderr.slice(-2000)}`);
  }
  return r;
}

/** Bytes used by `path` as `du -sb` counts them (apparent sizes, directories included). */
export async function duBytes(path: string): Promise<number> {
  const r = await run('du', ['-sb', path]);
  return Number(r.stdout.split(/\s/)[0]);
}

/** Reads `path` once to warm the page cache (`cat path > /dev/null`). */
export async function warmCache(path: string): Promise<void> {
  await run('sh', ['-c', 'cat "$1" > /dev/null', 'sh', path]);
}

/** Whether two files are byte-identical (`cmp -s`). */
export async function sameFiles(a: string, b: string): Promise<boolean> {
  const r = await run('cmp', ['-s', a, b], { allowFail: true });
  if (r.code > 1) throw new Error(`cmp ${a} ${b} failed: ${r.stderr}`);
  return r.code === 0;
}

/**
 * Runs a command the way a user's shell does and returns its wall time as bash's `time` sees it
 * (ms), plus its output. The bench process forks only the small shell: a bench that holds a
 * large heap pays tens of milliseconds to fork, which is not the command's start-up.
 */
export async function runTimedInShell(
  cmd: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  const script = 'TIMEFORMAT=%R; { time "$@" 2>"$VVBENCH_ERR" ; } 2>"$VVBENCH_TIME"';
  const dir = mkdtempSync(join(tmpdir(), 'vvbench-sh-'));
  try {
    const env = {
      ...(opts.env ?? process.env),
      VVBENCH_ERR: join(dir, 'err'),
      VVBENCH_TIME: join(dir, 'time'),
    };
    const r = await run('bash', ['-c', script, 'bash', cmd, ...args], { ...opts, env, allowFail: true });
    const seconds = Number(readFileSync(join(dir, 'time'), 'utf8').trim().split('\n').pop());
    const stderr = readFileSync(join(dir, 'err'), 'utf8');
    if (r.code !== 0 && !opts.allowFail)
      throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${stderr.slice(-2000)}`);
    return { ...r, stderr, ms: seconds * 1000 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
