/**
 * `--server URL`: a command sent to a running `vmvault serve` instead of run here. The server
 * runs the same command on its repository and answers with the same JSON (or text), which is
 * printed as the command would print it.
 */
import { resolve } from 'node:path';
import { VmvaultError } from '../core/errors.js';
import type { OptionValues } from './command.js';

/** Commands that can run on a server. */
export const REMOTE_COMMANDS: ReadonlySet<string> = new Set([
  'backup',
  'restore',
  'verify',
  'prune',
  'gc',
  'list',
  'stats',
]);

/** A path option of `vmvault backup`, made absolute (the server has its own working directory). */
function abs(v: OptionValues[string]): string | undefined {
  return typeof v === 'string' ? resolve(v) : undefined;
}

/** The backup request body for `vmvault backup <source> [options]` (see routes.ts). */
export function backupRequest(args: readonly string[], v: OptionValues): Record<string, unknown> {
  if (args.length !== 1) {
    throw new VmvaultError('E_USAGE', 'backup takes one source path', {
      hint: 'vmvault backup <path> [--name NAME]',
    });
  }
  const a = args[0]!;
  const source = a.startsWith('qmp:')
    ? `qmp:${resolve(a.slice('qmp:'.length))}`
    : /^nbd(\+unix)?:\/\//.test(a)
      ? a
      : resolve(a);
  const body: Record<string, unknown> = { source };
  if (typeof v.name === 'string') body.name = v.name;
  if (Array.isArray(v.tag)) body.tags = v.tag;
  if (v['no-file-index'] === true) body.fileIndex = false;
  if (v['no-guest-agent'] === true) body.guestAgent = false;
  else if (typeof v['guest-agent'] === 'string') body.guestAgent = abs(v['guest-agent']);
  if (typeof v['freeze-timeout'] === 'string') {
    const n = Number(v['freeze-timeout']);
    if (!Number.isFinite(n) || n <= 0)
      throw new VmvaultError('E_USAGE', `--freeze-timeout takes seconds, not ${v['freeze-timeout']}`);
    body.freezeTimeout = n;
  }
  if (Array.isArray(v.disk)) body.disks = v.disk;
  if (typeof v['nbd-socket'] === 'string') body.nbdSocket = abs(v['nbd-socket']);
  if (typeof v['scratch-dir'] === 'string') body.scratchDir = abs(v['scratch-dir']);
  return body;
}

/** The request body of `restore`, `verify`, `prune` or `gc` (see docs/server.md). */
export function jobRequest(name: string, args: readonly string[], v: OptionValues): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  const num = (opt: string): number => {
    const n = Number(v[opt]);
    if (!Number.isFinite(n))
      throw new VmvaultError('E_USAGE', `--${opt} takes a number, not ${String(v[opt])}`);
    return n;
  };
  if (name === 'restore') {
    if (args.length !== 2) {
      throw new VmvaultError('E_USAGE', 'restore takes a restore point id and a target', {
        hint: 'vmvault restore <id> <target>',
      });
    }
    body.point = args[0];
    body.target = resolve(args[1]!);
    if (typeof v.format === 'string') body.format = v.format;
    if (typeof v.disk === 'string') body.disk = v.disk;
    if (v.force === true) body.force = true;
  } else if (name === 'verify') {
    if (args.length > 0) body.points = [...args];
  } else if (name === 'prune') {
    for (const [k, val] of Object.entries(v)) {
      const m = /^keep-(\w+)$/.exec(k);
      if (m && val !== undefined) body[`keep${m[1]![0]!.toUpperCase()}${m[1]!.slice(1)}`] = num(k);
    }
    if (typeof v.name === 'string') body.name = v.name;
    if (v['dry-run'] === true) body.dryRun = true;
  } else if (name === 'gc') {
    if (v['dry-run'] === true) body.dryRun = true;
    if (v['repack-threshold'] !== undefined) body.repackThreshold = num('repack-threshold');
  }
  return body;
}

/** API paths of the job commands. */
const JOB_PATHS: Record<string, string> = {
  restore: '/api/v1/restores',
  verify: '/api/v1/verify',
  prune: '/api/v1/prune',
  gc: '/api/v1/gc',
};

/** Runs command `name` on the server at `server`; prints its answer; resolves to the exit code. */
export async function runRemote(
  server: string,
  token: string | null,
  name: string,
  args: readonly string[],
  v: OptionValues,
): Promise<number> {
  if (!REMOTE_COMMANDS.has(name)) {
    const api = name === 'mount' ? '; a server mounts through POST /api/v1/mounts (docs/server.md)' : '';
    throw new VmvaultError('E_USAGE', `${name} does not run on a server`, {
      hint: `drop --server (commands a server runs: ${[...REMOTE_COMMANDS].join(', ')})${api}`,
    });
  }
  if (v.repo !== undefined) {
    throw new VmvaultError('E_USAGE', '--repo and --server exclude each other', {
      hint: 'the server works on the repository it was started with',
    });
  }
  const { apiRequest } = await import('../server/client.js');
  const json = v.json === true;
  let method: 'GET' | 'POST' = 'GET';
  let path: string;
  let body: unknown;
  if (name === 'backup') {
    method = 'POST';
    path = '/api/v1/backups';
    body = backupRequest(args, v);
  } else if (JOB_PATHS[name]) {
    method = 'POST';
    path = JOB_PATHS[name]!;
    body = jobRequest(name, args, v);
  } else {
    if (args.length > 0) throw new VmvaultError('E_USAGE', `${name} takes no arguments`);
    path = name === 'list' ? '/api/v1/points' : '/api/v1/stats';
    if (name === 'list' && typeof v.name === 'string') path += `?name=${encodeURIComponent(v.name)}`;
  }
  // verify's exit code depends on its report, so it is always fetched as JSON.
  const asJson = json || name === 'verify';
  const answer = await apiRequest(server, { method, path, body, token, text: !asJson });
  if (json) process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
  else if (v.quiet !== true && name !== 'verify') {
    const text = String(answer);
    if (text) process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }
  if (name === 'verify') {
    const r = answer as { damaged?: unknown[]; problems?: unknown[]; pointsChecked?: number };
    const bad = (r.damaged?.length ?? 0) + (r.problems?.length ?? 0);
    if (!json && v.quiet !== true) {
      process.stdout.write(
        `checked ${r.pointsChecked ?? 0} restore point(s): ${bad === 0 ? 'no problems found' : `${r.problems?.length ?? 0} problem(s)`}\n`,
      );
    }
    if (bad > 0) {
      process.stderr.write(
        `vmvault: verify found ${r.problems?.length ?? 0} problem(s); run 'vmvault verify' on the repository for the details\n`,
      );
      return 3;
    }
  }
  return 0;
}
