/**
 * `--server URL`: a command sent to a running `vmvault serve` instead of run here. The server
 * runs the same command on its repository and answers with the same JSON (or text), which is
 * printed as the command would print it.
 */
import { resolve } from 'node:path';
import { VmvaultError } from '../core/errors.js';
import type { OptionValues } from './command.js';

/** Commands that can run on a server. */
export const REMOTE_COMMANDS: ReadonlySet<string> = new Set(['backup', 'list', 'stats']);

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

/** Runs command `name` on the server at `server`; prints its answer; resolves to the exit code. */
export async function runRemote(
  server: string,
  token: string | null,
  name: string,
  args: readonly string[],
  v: OptionValues,
): Promise<number> {
  if (!REMOTE_COMMANDS.has(name)) {
    throw new VmvaultError('E_USAGE', `${name} does not run on a server`, {
      hint: `drop --server (commands a server runs: ${[...REMOTE_COMMANDS].join(', ')})`,
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
  } else {
    if (args.length > 0) throw new VmvaultError('E_USAGE', `${name} takes no arguments`);
    path = name === 'list' ? '/api/v1/points' : '/api/v1/stats';
    if (name === 'list' && typeof v.name === 'string') path += `?name=${encodeURIComponent(v.name)}`;
  }
  const answer = await apiRequest(server, { method, path, body, token, text: !json });
  if (json) process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
  else if (v.quiet !== true) {
    const text = String(answer);
    if (text) process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }
  return 0;
}
