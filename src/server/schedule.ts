/**
 * Schedules of `vmvault serve --schedule FILE`: jobs the server starts by itself at fixed
 * intervals (a backup, optionally followed by a prune of its name; a verify; a gc), run like API
 * jobs (the same queue, locks and job records, `GET /api/v1/jobs`). The file format and the
 * timing rules are in docs/server.md ("Schedules").
 */
import { readFileSync } from 'node:fs';
import { VmvaultError } from '../core/index.js';
import type { JobView } from './jobs.js';
import { JOB_PARSERS, type JobCommand, type RouteContext, startJob } from './routes.js';

/** Commands a schedule may run. */
const SCHEDULED = ['backup', 'verify', 'gc'] as const;
type ScheduledCommand = (typeof SCHEDULED)[number];

/** Longest delay one Node timer takes. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Shortest interval a schedule may have. */
const MIN_INTERVAL_MS = 1000;
const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** One schedule, checked. */
export interface Schedule {
  id: string;
  /** The interval, as written and in milliseconds. */
  every: string;
  everyMs: number;
  /** Milliseconds from the server's start to the first run. */
  firstMs: number;
  command: ScheduledCommand;
  /** The request body of the command (as `POST /api/v1/<command>` takes it). */
  body: Record<string, unknown>;
  /** After a successful backup: the body of a prune (its `name` defaults to the backup's). */
  prune: Record<string, unknown> | null;
}

/** A schedule as `GET /api/v1/schedules` shows it. */
export interface ScheduleView {
  id: string;
  every: string;
  command: ScheduledCommand;
  prune: boolean;
  nextRunAt: string | null;
  /** Runs started, and ticks skipped because the previous run had not ended. */
  runs: number;
  skipped: number;
  /** The job of the latest run (the prune after it, if one ran, is a job of its own). */
  lastJob: { id: string; state: JobView['state']; endedAt: string | null } | null;
}

function bad(where: string, message: string): VmvaultError {
  return new VmvaultError('E_USAGE', `${where}: ${message}`, {
    hint: 'see "Schedules" in docs/server.md',
  });
}

/** Milliseconds of an interval such as `90s`, `15m`, `1h`, `1d` (at least one second). */
export function parseInterval(text: unknown, where: string): number {
  const m = typeof text === 'string' ? /^(\d+(?:\.\d+)?)([smhd])$/.exec(text) : null;
  if (!m)
    throw bad(
      where,
      `an interval is a number and a unit (s, m, h, d), like "15m", not ${JSON.stringify(text)}`,
    );
  const ms = Number(m[1]) * UNITS[m[2]!]!;
  if (!(ms >= MIN_INTERVAL_MS)) throw bad(where, `an interval is at least 1s, not ${text}`);
  return ms;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Checks a schedule document, `{"schedules": [{"id", "every", "first"?, "backup" | "verify" |
 * "gc", "prune"?}, …]}`; each command body is checked as the API checks it. `where` names the
 * document in errors (E_USAGE).
 */
export function parseSchedules(doc: unknown, where: string): Schedule[] {
  if (!isObject(doc) || !Array.isArray(doc.schedules)) throw bad(where, 'expected {"schedules": [...]}');
  for (const k of Object.keys(doc)) if (k !== 'schedules') throw bad(where, `unknown field "${k}"`);
  const ids = new Set<string>();
  return doc.schedules.map((item: unknown, n: number) => {
    const at = `${where}: schedule ${n + 1}`;
    if (!isObject(item)) throw bad(at, 'a schedule is an object');
    const id = item.id;
    if (typeof id !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(id)) {
      throw bad(at, '"id" must be 1 to 64 letters, digits, ".", "_" or "-"');
    }
    if (ids.has(id)) throw bad(at, `two schedules are called ${id}`);
    ids.add(id);
    const here = `${where}: schedule ${id}`;
    for (const k of Object.keys(item)) {
      if (!['id', 'every', 'first', 'prune', ...SCHEDULED].includes(k))
        throw bad(here, `unknown field "${k}"`);
    }
    const commands = SCHEDULED.filter((c) => item[c] !== undefined);
    if (commands.length !== 1) throw bad(here, 'give exactly one of "backup", "verify" or "gc"');
    const command = commands[0]!;
    const body = item[command];
    if (!isObject(body)) throw bad(here, `"${command}" must be an object (the request body of ${command})`);
    const check = (c: JobCommand, b: Record<string, unknown>): void => {
      try {
        JOB_PARSERS[c](b);
      } catch (err) {
        throw bad(here, (err as Error).message);
      }
    };
    check(command, body);
    let prune: Record<string, unknown> | null = null;
    if (item.prune !== undefined) {
      if (command !== 'backup') throw bad(here, '"prune" goes with "backup"');
      if (!isObject(item.prune)) throw bad(here, '"prune" must be an object (the request body of prune)');
      prune = item.prune;
      check('prune', prune);
      if (!Object.keys(prune).some((k) => k.startsWith('keep'))) {
        throw bad(here, '"prune" needs at least one keep rule, e.g. {"keepDaily": 7}');
      }
    }
    const everyMs = parseInterval(item.every, `${here}: "every"`);
    const firstMs = item.first === undefined ? everyMs : parseInterval(item.first, `${here}: "first"`);
    return { id, every: item.every as string, everyMs, firstMs, command, body, prune };
  });
}

/** {@link parseSchedules} of a JSON file. */
export function loadSchedules(path: string): Schedule[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new VmvaultError('E_USAGE', `cannot read the schedule file ${path}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw bad(`schedule file ${path}`, `not JSON (${(err as Error).message})`);
  }
  return parseSchedules(doc, `schedule file ${path}`);
}

interface State {
  schedule: Schedule;
  timer: NodeJS.Timeout | null;
  nextRunAt: number | null;
  runs: number;
  skipped: number;
  last: JobView | null;
  /** The current run (its job and, for a backup, the prune after it) until it has ended. */
  running: Promise<void> | null;
}

/** Runs the schedules of one server. */
export class Scheduler {
  private readonly states: State[];
  private stopped = false;

  constructor(
    private readonly rc: RouteContext,
    schedules: readonly Schedule[],
    private readonly log: (line: string) => void = () => {},
  ) {
    this.states = schedules.map((schedule) => ({
      schedule,
      timer: null,
      nextRunAt: null,
      runs: 0,
      skipped: 0,
      last: null,
      running: null,
    }));
  }

  /** Arms every schedule: each first runs `first` after now, then every `every`. */
  start(): void {
    const now = Date.now();
    for (const s of this.states) this.arm(s, now + s.schedule.firstMs);
  }

  /** Disarms the timers and waits for the runs under way (their jobs finish; no prune follows). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const s of this.states) {
      if (s.timer) clearTimeout(s.timer);
      s.timer = null;
      s.nextRunAt = null;
    }
    await Promise.allSettled(this.states.map((s) => s.running));
  }

  list(): ScheduleView[] {
    return this.states.map((s) => ({
      id: s.schedule.id,
      every: s.schedule.every,
      command: s.schedule.command,
      prune: s.schedule.prune !== null,
      nextRunAt: s.nextRunAt === null ? null : new Date(s.nextRunAt).toISOString(),
      runs: s.runs,
      skipped: s.skipped,
      lastJob: s.last ? { id: s.last.id, state: s.last.state, endedAt: s.last.endedAt } : null,
    }));
  }

  private arm(s: State, at: number): void {
    if (this.stopped) return;
    s.nextRunAt = at;
    // Node's timers hold at most 2^31 - 1 ms (~24.8 days): a longer wait is made of several.
    const wait = Math.min(MAX_TIMER_MS, Math.max(0, at - Date.now()));
    s.timer = setTimeout(() => (Date.now() < at ? this.arm(s, at) : this.tick(s)), wait);
  }

  /** One tick: run unless the previous run is still going; arm the next tick on the grid. */
  private tick(s: State): void {
    const planned = s.nextRunAt ?? Date.now();
    if (s.running) {
      s.skipped++;
      this.log(`schedule ${s.schedule.id}: skipped, the run before it has not ended`);
    } else {
      s.runs++;
      s.running = this.run(s).finally(() => {
        s.running = null;
      });
    }
    // Fixed rate; a server that fell behind (a suspended machine) skips the ticks it missed.
    const every = s.schedule.everyMs;
    let next = planned + every;
    if (next <= Date.now()) next = Date.now() + every;
    this.arm(s, next);
  }

  private async run(s: State): Promise<void> {
    const { schedule } = s;
    const first = startJob(this.rc, schedule.command, schedule.body, schedule.id);
    s.last = first.job;
    let out: Awaited<typeof first.done>;
    try {
      out = await first.done;
    } catch (err) {
      this.log(`schedule ${schedule.id}: ${schedule.command} failed: ${(err as Error).message}`);
      return;
    }
    if (!schedule.prune || this.stopped) return;
    const name = (out.value as { name?: string }).name;
    const prune = startJob(this.rc, 'prune', { name, ...schedule.prune }, schedule.id);
    try {
      await prune.done;
    } catch (err) {
      this.log(`schedule ${schedule.id}: prune failed: ${(err as Error).message}`);
    }
  }
}
