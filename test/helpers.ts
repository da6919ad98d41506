/** Shared helpers of the end-to-end tests: run the CLI, build images, compare files. */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A serving command (`mount`, `clone`) started by {@link serveCommand}. */
export interface Serving {
  p: ChildProcess;
  /** The first line it printed (the URI, or JSON with `--json`). */
  first: string;
  /** Everything it printed on stdout so far. */
  out: () => string;
}

/**
 * Spawns `vmvault args` and resolves with its first stdout line; rejects (with its stderr) if it
 * exits before printing one.
 */
export function serveCommand(ws: Workspace, args: string[]): Promise<Serving> {
  const p = ws.spawn(args);
  let out = '';
  let err = '';
  p.stderr!.on('data', (d: Buffer) => {
    err += d;
  });
  return new Promise((resolve, reject) => {
    p.stdout!.on('data', (d: Buffer) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve({ p, first: out.slice(0, nl), out: () => out });
    });
    p.once('exit', (code) => reject(new Error(`${args[0]} exited ${code} before serving: ${err}`)));
  });
}

/** Stops a serving command with SIGINT; resolves with its exit code. */
export function stopServing(p: ChildProcess): Promise<number> {
  return new Promise((r) => {
    p.removeAllListeners('exit');
    p.once('exit', (code) => r(code ?? -1));
    p.kill('SIGINT');
  });
}

/** Root of the checkout (dist/test/helpers.js → ../..). */
export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const BIN = join(ROOT, 'bin', 'vmvault');

/** Result of one CLI run. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A temporary workspace with its own repository path and catalog cache. */
export class Workspace {
  readonly dir = mkdtempSync(join(tmpdir(), 'vmvault-test-'));
  readonly repo = join(this.dir, 'repo');
  readonly env: NodeJS.ProcessEnv = {
    ...process.env,
    VMVAULT_REPO: join(this.dir, 'repo'),
    XDG_CACHE_HOME: join(this.dir, 'cache'),
    VMVAULT_PASSWORD: undefined,
  };

  path(...p: string[]): string {
    return join(this.dir, ...p);
  }

  /** Runs `vmvault args` and waits for it. */
  run(args: string[], env: NodeJS.ProcessEnv = {}): RunResult {
    const r = spawnSync(process.execPath, [BIN, ...args], {
      env: { ...this.env, ...env },
      encoding: 'utf8',
      timeout: 120_000,
    });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  /** Runs `vmvault args` asynchronously (for concurrency and kill tests). */
  spawn(args: string[], env: NodeJS.ProcessEnv = {}) {
    return spawn(process.execPath, [BIN, ...args], {
      env: { ...this.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }

  /** Runs and expects success; returns parsed JSON when `--json` is among the args. */
  // biome-ignore lint/suspicious/noExplicitAny: tests read whatever JSON a command prints
  ok(args: string[], env: NodeJS.ProcessEnv = {}): any {
    const r = this.run(args, env);
    if (r.code !== 0) throw new Error(`vmvault ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
    return args.includes('--json') ? JSON.parse(r.stdout) : r.stdout;
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** SHA-256 of a file's content. */
export function fileHash(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Allocated bytes of a file (st_blocks × 512). */
export function allocated(path: string): number {
  return statSync(path).blocks * 512;
}

/** Runs a command, throwing with its stderr on failure. */
export function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** Deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Builds a tree of files (text, random binary, a sparse file) under `dir` for `mkfs.ext4 -d`.
 * `marker` is written into a text file so tests can look for plaintext.
 */
export function makeTree(
  dir: string,
  opts: { randomMiB?: number; marker?: string; seed?: number } = {},
): void {
  mkdirSync(join(dir, 'etc'), { recursive: true });
  mkdirSync(join(dir, 'data', 'nested'), { recursive: true });
  writeFileSync(join(dir, 'etc', 'hostname'), 'testhost\n');
  const text = `${opts.marker ?? 'hello vmvault'}\n`.repeat(2000);
  writeFileSync(join(dir, 'etc', 'notes.txt'), text);
  const rnd = prng(opts.seed ?? 1);
  const n = (opts.randomMiB ?? 4) << 20;
  const big = Buffer.alloc(n);
  for (let i = 0; i < n; i += 4) big.writeUInt32LE((rnd() * 2 ** 32) >>> 0, i);
  writeFileSync(join(dir, 'data', 'random.bin'), big);
  writeFileSync(join(dir, 'data', 'nested', 'small.bin'), randomBytes(1000));
}

/** Makes a sparse raw image of `size` bytes holding ext4 built from `treeDir`. */
export function makeExt4Image(path: string, size: number, treeDir: string): void {
  sh('truncate', ['-s', String(size), path]);
  sh('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=1,nodiscard', '-d', treeDir, path]);
}

/** Overwrites `count` random `length`-byte regions of `path` with random bytes; returns offsets. */
export async function randomWrites(
  path: string,
  count: number,
  length: number,
  align: number,
  seed: number,
  limit?: number,
): Promise<number[]> {
  const fh = await open(path, 'r+');
  try {
    const size = limit ?? (await fh.stat()).size;
    const rnd = prng(seed);
    const offsets: number[] = [];
    for (let i = 0; i < count; i++) {
      const off = Math.floor((rnd() * (size - length)) / align) * align;
      offsets.push(off);
      await fh.write(randomBytes(length), 0, length, off);
    }
    return offsets;
  } finally {
    await fh.close();
  }
}
