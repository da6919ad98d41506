/**
 * The REST API's routes (docs/server.md). Each route runs the CLI command of the same job in
 * the server's {@link ServerContext}, so the API and the CLI share one implementation and
 * answer with the same JSON documents.
 */
import { isAbsolute } from 'node:path';
import type { OptionValues } from '../cli/command.js';
import { COMMANDS, PRUNE_RULES } from '../cli/commands/specs.js';
import { REMOTE_COMMANDS } from '../cli/remote.js';
import { VmvaultError } from '../core/index.js';
import { defaultCloneSocket } from '../live/clone-file.js';
import type { JobTable, JobView } from './jobs.js';
import type { MountListen, MountRequest, MountTable } from './mounts.js';
import type { ResidentRepository } from './resident.js';
import { type CommandOutput, ServerContext } from './server-context.js';

/** A parsed request, as a route sees it. */
export interface ApiRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  query: URLSearchParams;
  body: () => Promise<Record<string, unknown>>;
}

/** A route's answer: a status and a JSON value, and the text form when there is one. */
export interface ApiReply {
  status: number;
  value: unknown;
  text?: string;
}

/** What routes need from the server. */
export interface RouteContext {
  resident: ResidentRepository;
  jobs: JobTable;
  mounts: MountTable;
  /** The schedules and their state (`serve --schedule`); none when not set. */
  schedules?: () => unknown[];
  /** `--catalog` of the server, if given. */
  catalog?: string;
  version: string;
}

type Handler = (req: ApiRequest, ctx: RouteContext) => Promise<ApiReply>;

/**
 * Loads the modules of the API's commands (and of the VM backup, which `backup` loads on
 * demand), so that the first request does not wait for them. Failures surface when a request
 * needs the module.
 */
export async function preloadCommands(): Promise<void> {
  // The commands the CLI sends to a server are the ones the routes run.
  for (const name of REMOTE_COMMANDS) await COMMANDS.find((c) => c.name === name)?.load();
  await import('../cli/commands/backup-vm.js');
}

/** Runs CLI command `name` in the server; its captured output. */
async function runCommand(
  rc: RouteContext,
  name: string,
  args: string[],
  values: OptionValues,
  job?: JobView,
): Promise<CommandOutput> {
  const spec = COMMANDS.find((c) => c.name === name);
  if (!spec) throw new VmvaultError('E_INTERNAL', `no command ${name}`);
  const hooks = job ? { progress: rc.jobs.progressOf(job), onStart: () => rc.jobs.started(job) } : {};
  const ctx = new ServerContext(rc.resident, rc.catalog !== undefined ? { catalog: rc.catalog } : {}, hooks);
  const run = await spec.load();
  const code = await run(ctx, args, { ...values, json: true });
  // verify answers 3 with its report when it finds damage: the report is the answer.
  if (!ctx.output) {
    throw new VmvaultError('E_INTERNAL', `${name} ended with status ${code} and no result`);
  }
  return ctx.output;
}

function usage(message: string, hint?: string): VmvaultError {
  return new VmvaultError('E_USAGE', message, hint ? { hint } : {});
}

function optString(body: Record<string, unknown>, key: string): string | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v === '') throw usage(`"${key}" must be a non-empty string`);
  return v;
}

function optStrings(body: Record<string, unknown>, key: string): string[] | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || x === '')) {
    throw usage(`"${key}" must be an array of non-empty strings`);
  }
  return v as string[];
}

/** A path the server opens: it must be absolute (the server's working directory is its own). */
function absolute(what: string, path: string): string {
  if (!isAbsolute(path)) {
    throw usage(
      `${what} must be an absolute path, not ${path}`,
      "the server does not know the client's directory",
    );
  }
  return path;
}

const BACKUP_KEYS = [
  'source',
  'name',
  'tags',
  'fileIndex',
  'guestAgent',
  'freezeTimeout',
  'disks',
  'nbdSocket',
  'scratchDir',
];

/**
 * `POST /api/v1/backups`: the body is `{source, name?, tags?, fileIndex?, guestAgent?,
 * freezeTimeout?, disks?, nbdSocket?, scratchDir?}`, the options of `vmvault backup`.
 */
export function backupArgs(body: Record<string, unknown>): { args: string[]; values: OptionValues } {
  known(body, BACKUP_KEYS, 'backup');
  const source = optString(body, 'source');
  if (!source) throw usage('a backup request needs "source"', 'e.g. {"source": "/var/lib/vm/disk.raw"}');
  if (source.startsWith('qmp:')) absolute('the QMP socket', source.slice('qmp:'.length));
  else if (!/^nbd(\+unix)?:\/\//.test(source)) absolute('the source', source);
  const values: OptionValues = {};
  const name = optString(body, 'name');
  if (name) values.name = name;
  const tags = optStrings(body, 'tags');
  if (tags) values.tag = tags;
  if (body.fileIndex !== undefined) {
    if (typeof body.fileIndex !== 'boolean') throw usage('"fileIndex" must be true or false');
    if (!body.fileIndex) values['no-file-index'] = true;
  }
  const agent = body.guestAgent;
  if (agent === false) values['no-guest-agent'] = true;
  else if (agent !== undefined && agent !== null) {
    if (typeof agent !== 'string') throw usage('"guestAgent" must be the agent socket path or false');
    values['guest-agent'] = absolute('the guest agent socket', agent);
  }
  const ft = body.freezeTimeout;
  if (ft !== undefined && ft !== null) {
    if (typeof ft !== 'number' || !(ft > 0))
      throw usage('"freezeTimeout" must be a positive number of seconds');
    values['freeze-timeout'] = String(ft);
  }
  const disks = optStrings(body, 'disks');
  if (disks) values.disk = disks;
  const nbd = optString(body, 'nbdSocket');
  if (nbd) values['nbd-socket'] = absolute('nbdSocket', nbd);
  const scratch = optString(body, 'scratchDir');
  if (scratch) values['scratch-dir'] = absolute('scratchDir', scratch);
  return { args: [source], values };
}

/** `POST /api/v1/restores`: `{point, target, format?, disk?, force?}` (`vmvault restore`). */
export function restoreArgs(body: Record<string, unknown>): { args: string[]; values: OptionValues } {
  known(body, ['point', 'target', 'format', 'disk', 'force'], 'restore');
  const point = optString(body, 'point');
  const target = optString(body, 'target');
  if (!point || !target) throw usage('a restore request needs "point" and "target"');
  const values: OptionValues = {};
  const format = optString(body, 'format');
  if (format) values.format = format;
  const disk = optString(body, 'disk');
  if (disk) values.disk = disk;
  if (optBoolean(body, 'force')) values.force = true;
  return { args: [point, absolute('the target', target)], values };
}

/** `POST /api/v1/verify`: `{points?}` (`vmvault verify [ID...]`; all points without). */
export function verifyArgs(body: Record<string, unknown>): { args: string[]; values: OptionValues } {
  known(body, ['points'], 'verify');
  return { args: optStrings(body, 'points') ?? [], values: {} };
}

/** `POST /api/v1/prune`: `{keepLast?, keepHourly?, …, keepYearly?, name?, dryRun?}`. */
export function pruneArgs(body: Record<string, unknown>): { args: string[]; values: OptionValues } {
  const rules = PRUNE_RULES.map((r) => [r, `keep${r[0]!.toUpperCase()}${r.slice(1)}`] as const);
  known(body, [...rules.map(([, k]) => k), 'name', 'dryRun'], 'prune');
  const values: OptionValues = {};
  for (const [rule, key] of rules) {
    const n = body[key];
    if (n === undefined || n === null) continue;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0)
      throw usage(`"${key}" must be a whole number`);
    values[`keep-${rule}`] = String(n);
  }
  const name = optString(body, 'name');
  if (name) values.name = name;
  if (optBoolean(body, 'dryRun')) values['dry-run'] = true;
  return { args: [], values };
}

/** `POST /api/v1/gc`: `{dryRun?, repackThreshold?}` (`vmvault gc`). */
export function gcArgs(body: Record<string, unknown>): { args: string[]; values: OptionValues } {
  known(body, ['dryRun', 'repackThreshold'], 'gc');
  const values: OptionValues = {};
  if (optBoolean(body, 'dryRun')) values['dry-run'] = true;
  const t = body.repackThreshold;
  if (t !== undefined && t !== null) {
    if (typeof t !== 'number' || !(t >= 0 && t <= 1))
      throw usage('"repackThreshold" must be a number from 0 to 1');
    values['repack-threshold'] = String(t);
  }
  return { args: [], values };
}

const MOUNT_KEYS = [
  'point',
  'disk',
  'socket',
  'host',
  'port',
  'export',
  'trace',
  'writable',
  'overlay',
  'clone',
];

/**
 * The body of `POST /api/v1/mounts`: `{point, disk?, socket? | port? (host?), export?, trace?,
 * writable?, overlay?, clone?}`, the options of `vmvault mount` (and of `vmvault clone`: with
 * `clone`, `socket` defaults to the clone's own).
 */
export function mountRequest(body: Record<string, unknown>): MountRequest {
  known(body, MOUNT_KEYS, 'mount');
  const point = optString(body, 'point');
  if (!point) throw usage('a mount request needs "point"');
  const cloneText = optString(body, 'clone');
  const clone = cloneText === undefined ? undefined : absolute('"clone"', cloneText);
  if (clone !== undefined) {
    if (body.port !== undefined || body.host !== undefined)
      throw usage('a clone is served on a unix socket, not a port');
    if (body.writable === true || body.overlay !== undefined)
      throw usage('a clone is served read-only: its writes go to the clone');
    if (body.export !== undefined) throw usage("a clone's export is the point id");
  }
  const socket = optString(body, 'socket') ?? (clone !== undefined ? defaultCloneSocket(clone) : undefined);
  const port = body.port;
  if ((socket === undefined) === (port === undefined || port === null)) {
    throw usage('a mount request needs exactly one of "socket" or "port"');
  }
  let listen: MountListen;
  if (socket !== undefined) {
    if (body.host !== undefined) throw usage('"host" goes with "port", not with "socket"');
    listen = { socketPath: absolute('"socket"', socket) };
  } else {
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) {
      throw usage('"port" must be a TCP port number');
    }
    listen = { host: optString(body, 'host') ?? '127.0.0.1', port };
  }
  const disk = optString(body, 'disk');
  const exportName = optString(body, 'export');
  const trace = body.trace === undefined || body.trace === null ? true : optBoolean(body, 'trace');
  const overlay = optString(body, 'overlay');
  const writable = optBoolean(body, 'writable') || overlay !== undefined;
  return {
    point,
    listen,
    trace,
    writable,
    ...(overlay !== undefined ? { overlay: absolute('"overlay"', overlay) } : {}),
    ...(clone !== undefined ? { clone } : {}),
    ...(disk !== undefined ? { disk } : {}),
    ...(exportName !== undefined ? { exportName } : {}),
  };
}

function known(body: Record<string, unknown>, keys: readonly string[], what: string): void {
  for (const k of Object.keys(body))
    if (!keys.includes(k)) throw usage(`unknown field "${k}" in a ${what} request`);
}

function optBoolean(body: Record<string, unknown>, key: string): boolean {
  const v = body[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw usage(`"${key}" must be true or false`);
  return v;
}

/**
 * `POST /api/v1/files/restore`: `{point, paths, to}` (`vmvault files restore POINT PATH… --to
 * DIR`): files and directories out of a restore point's filesystems, with owner, mode, times and
 * links, into the directory `to` (absolute).
 */
export function filesRestoreArgs(body: Record<string, unknown>): { args: string[]; values: OptionValues } {
  known(body, ['point', 'paths', 'to'], 'file restore');
  const point = optString(body, 'point');
  const paths = optStrings(body, 'paths');
  const to = optString(body, 'to');
  if (!point || !paths || paths.length === 0 || !to) {
    throw usage('a file restore request needs "point", "paths" (an array) and "to"');
  }
  return { args: ['restore', point, ...paths], values: { to: absolute('"to"', to) } };
}

/** What each job command takes from a request body: its CLI arguments and options. */
export const JOB_PARSERS = {
  backup: backupArgs,
  restore: restoreArgs,
  verify: verifyArgs,
  prune: pruneArgs,
  gc: gcArgs,
  files: filesRestoreArgs,
} as const;

/** A command the API runs as a job. */
export type JobCommand = keyof typeof JOB_PARSERS;

/**
 * Starts CLI command `command` as a job with the request `body` (checked first: E_USAGE before
 * any job exists). `done` settles when the job ends; the job records the result or the error.
 */
export function startJob(
  rc: RouteContext,
  command: JobCommand,
  body: Record<string, unknown>,
  schedule: string | null = null,
): { job: JobView; done: Promise<CommandOutput> } {
  const { args, values } = JOB_PARSERS[command](body);
  const job = rc.jobs.create(command, body, schedule);
  const done = runCommand(rc, command, args, values, job).then(
    (out) => {
      rc.jobs.finished(job, out.value);
      return out;
    },
    (err: unknown) => {
      rc.jobs.failed(job, err);
      throw err;
    },
  );
  return { job, done };
}

/**
 * `POST path` runs CLI command `command` as a job: it answers when the job ends (201 for a
 * backup, 200 otherwise, with the command's JSON), or at once with `?wait=false` (202, the job).
 */
function commandJob(path: string, command: JobCommand): { method: string; path: string; handle: Handler } {
  return {
    method: 'POST',
    path,
    handle: async (req, rc) => {
      const wait = req.query.get('wait');
      if (wait !== null && wait !== 'true' && wait !== 'false') throw usage('wait takes true or false');
      const { job, done } = startJob(rc, command, await req.body());
      if (wait === 'false') {
        done.catch(() => undefined); // recorded in the job
        return { status: 202, value: job };
      }
      return { status: command === 'backup' ? 201 : 200, ...(await done) };
    },
  };
}

const routes: { method: string; path: string; handle: Handler }[] = [
  {
    method: 'GET',
    path: '/api/v1/health',
    handle: async (_req, rc) => {
      const repo = await rc.resident.repository();
      return {
        status: 200,
        value: {
          status: 'ok',
          version: rc.version,
          repository: {
            path: rc.resident.opts.path,
            id: repo.config.id,
            encrypted: repo.config.encryption !== null,
          },
          jobs: rc.jobs.list().filter((j) => j.state === 'queued' || j.state === 'running'),
        },
      };
    },
  },
  {
    method: 'GET',
    path: '/api/v1/points',
    handle: async (req, rc) => {
      const name = req.query.get('name');
      const out = await runCommand(rc, 'list', [], name ? { name } : {});
      return { status: 200, ...out };
    },
  },
  {
    method: 'GET',
    path: '/api/v1/stats',
    handle: async (_req, rc) => ({ status: 200, ...(await runCommand(rc, 'stats', [], {})) }),
  },
  commandJob('/api/v1/backups', 'backup'),
  commandJob('/api/v1/restores', 'restore'),
  commandJob('/api/v1/verify', 'verify'),
  commandJob('/api/v1/prune', 'prune'),
  commandJob('/api/v1/gc', 'gc'),
  {
    method: 'GET',
    path: '/api/v1/jobs',
    handle: async (_req, rc) => ({ status: 200, value: rc.jobs.list() }),
  },
  commandJob('/api/v1/files/restore', 'files'),
  {
    method: 'GET',
    path: '/api/v1/files',
    handle: async (req, rc) => {
      const point = req.query.get('point');
      if (!point) throw usage('GET /api/v1/files needs ?point=ID (and &path=/part1/dir)');
      const fromFs = req.query.get('fromFs');
      if (fromFs !== null && fromFs !== 'true' && fromFs !== 'false')
        throw usage('fromFs takes true or false');
      const out = await runCommand(
        rc,
        'files',
        ['ls', point, req.query.get('path') || '/'],
        fromFs === 'true' ? { 'from-fs': true } : {},
      );
      return { status: 200, ...out };
    },
  },
  {
    method: 'GET',
    path: '/api/v1/find',
    handle: async (req, rc) => {
      const glob = req.query.get('glob');
      if (!glob) throw usage("GET /api/v1/find needs ?glob=PATTERN (e.g. 'nginx.conf', '/part1/etc/*')");
      const name = req.query.get('name');
      return { status: 200, ...(await runCommand(rc, 'find', [glob], name ? { name } : {})) };
    },
  },
  {
    method: 'GET',
    path: '/api/v1/schedules',
    handle: async (_req, rc) => ({ status: 200, value: rc.schedules?.() ?? [] }),
  },
  {
    method: 'POST',
    path: '/api/v1/mounts',
    handle: async (req, rc) => ({
      status: 201,
      value: await rc.mounts.start(mountRequest(await req.body())),
    }),
  },
  {
    method: 'GET',
    path: '/api/v1/mounts',
    handle: async (_req, rc) => ({ status: 200, value: rc.mounts.list() }),
  },
];

/** `GET /api/v1/jobs/ID`: one job, or E_NOT_FOUND. */
const JOB_PATH = /^\/api\/v1\/jobs\/([0-9a-f]{16})$/;
const jobRoute: Handler = async (req, rc) => {
  const id = JOB_PATH.exec(req.path)![1]!;
  const job = rc.jobs.get(id);
  if (!job)
    throw new VmvaultError('E_NOT_FOUND', `no job ${id}`, { hint: 'GET /api/v1/jobs lists the jobs kept' });
  return { status: 200, value: job };
};

/** `GET /api/v1/mounts/ID` (one mount) and `DELETE /api/v1/mounts/ID` (stop it). */
const MOUNT_PATH = /^\/api\/v1\/mounts\/([0-9a-f]{16})$/;
const mountRoute: Handler = async (req, rc) => {
  const id = MOUNT_PATH.exec(req.path)![1]!;
  const flag = (key: string): boolean => {
    const v = req.query.get(key);
    if (v !== null && v !== 'true' && v !== 'false') throw usage(`${key} takes true or false`);
    return v === 'true';
  };
  const view =
    req.method === 'DELETE'
      ? await rc.mounts.stop(id, {
          save: flag('save'),
          keepOverlay: flag('keepOverlay'),
          ...(req.query.get('name') ? { name: req.query.get('name')! } : {}),
        })
      : rc.mounts.get(id);
  if (!view) {
    throw new VmvaultError('E_NOT_FOUND', `no mount ${id}`, {
      hint: 'GET /api/v1/mounts lists the running mounts',
    });
  }
  return { status: 200, value: req.method === 'DELETE' ? { ...view, stopped: true } : view };
};

/** The methods `path` takes (empty for an unknown path). */
export function allowedMethods(path: string): string[] {
  if (JOB_PATH.test(path)) return ['GET'];
  if (MOUNT_PATH.test(path)) return ['GET', 'DELETE'];
  return routes.filter((r) => r.path === path).map((r) => r.method);
}

/** The handler of `method path`, or null when there is none. */
export function route(method: string, path: string): Handler | null {
  if (JOB_PATH.test(path)) return method === 'GET' ? jobRoute : null;
  if (MOUNT_PATH.test(path)) return method === 'GET' || method === 'DELETE' ? mountRoute : null;
  return routes.find((r) => r.path === path && r.method === method)?.handle ?? null;
}
