/**
 * Application consistency through the QEMU guest agent: freeze the guest's filesystems just
 * around the QMP transaction, thaw them always (even when the transaction fails), and bound
 * how long the guest can stay frozen. Without an agent, or when it fails, the backup goes on
 * crash-consistent and says so.
 */
import { GuestAgentClient, type QmpClient } from '../../protocols/qmp/index.js';
import type { Consistency } from './types.js';

/** Chardev labels that name a guest-agent channel. */
const AGENT_LABEL = /^(qga\d*|.*guest[._-]?agent.*)$/i;

/**
 * Finds the host side of the guest agent's channel: a unix-socket chardev labelled like `qga0`
 * or `org.qemu.guest_agent.0` (`query-chardev`). `undefined` when there is none.
 */
export async function findAgentSocket(qmp: QmpClient): Promise<string | undefined> {
  const list = await qmp
    .execute<{ label: string; filename: string }[]>('query-chardev')
    .catch(() => [] as { label: string; filename: string }[]);
  for (const c of list) {
    if (!AGENT_LABEL.test(c.label)) continue;
    const m = /(?:^|:)unix:([^,]+)/.exec(c.filename);
    if (m?.[1]) return m[1];
  }
  return undefined;
}

/** Options of {@link withFrozenGuest}. */
export interface FreezeOptions {
  /** The agent's socket, or `undefined` for none. */
  agentSocket: string | undefined;
  /** Why there is no agent socket (for the record), when `agentSocket` is undefined. */
  noAgentReason?: string;
  /** Longest the guest may stay frozen; also the freeze command's limit (default 10 s). */
  freezeTimeoutMs?: number;
  /** How long to wait for the agent to answer at all (default 3 s). */
  syncTimeoutMs?: number;
  /** Called with each problem worth telling the user. */
  onNotice?: (message: string) => void;
}

/**
 * Runs `fn` (the transaction) with the guest's filesystems frozen when the agent allows, and
 * reports how consistent the result is. `fn` gets the time left before the guest must be
 * thawed. Thaw is attempted (three times) whenever a freeze was attempted.
 */
export async function withFrozenGuest<T>(
  opts: FreezeOptions,
  fn: (timeLeftMs: number) => Promise<T>,
): Promise<{ result: T; consistency: Consistency }> {
  const limit = opts.freezeTimeoutMs ?? 10_000;
  const notice = opts.onNotice ?? (() => undefined);
  if (!opts.agentSocket) {
    const detail = opts.noAgentReason ?? 'no guest agent channel is configured';
    return { result: await fn(limit), consistency: { level: 'crash', detail } };
  }
  let ga: GuestAgentClient;
  try {
    ga = await GuestAgentClient.connect(opts.agentSocket, {
      syncTimeoutMs: opts.syncTimeoutMs ?? 3000,
      freezeTimeoutMs: limit,
      commandTimeoutMs: 5000,
    });
  } catch (err) {
    const detail = `guest agent at ${opts.agentSocket} did not answer (${(err as Error).message})`;
    notice(`${detail}: the backup is only crash-consistent`);
    return { result: await fn(limit), consistency: { level: 'crash', detail } };
  }
  try {
    const t0 = Date.now();
    let frozen = 0;
    let freezeError: string | undefined;
    try {
      frozen = await ga.fsfreezeFreeze();
    } catch (err) {
      freezeError = (err as Error).message;
    }
    const tFrozen = Date.now();
    let status = 'unknown';
    let result: T;
    try {
      if (!freezeError) status = await ga.fsfreezeStatus().catch(() => 'unknown');
      result = await fn(Math.max(1000, limit - (Date.now() - t0)));
    } finally {
      const thawError = await thaw(ga);
      if (thawError)
        notice(
          `could not thaw the guest filesystems: ${thawError}; run guest-fsfreeze-thaw in the guest agent`,
        );
    }
    const frozenMs = Date.now() - tFrozen;
    if (freezeError) {
      const detail = `guest agent freeze failed (${freezeError})`;
      notice(`${detail}: the backup is only crash-consistent`);
      return { result, consistency: { level: 'crash', detail } };
    }
    return {
      result,
      consistency: {
        level: 'application',
        detail: `guest agent froze ${frozen} filesystem(s) (status ${status}) around the transaction and thawed them after ${frozenMs} ms`,
        frozenMs,
      },
    };
  } finally {
    ga.close();
  }
}

async function thaw(ga: GuestAgentClient): Promise<string | undefined> {
  let last = '';
  for (let i = 0; i < 3; i++) {
    try {
      await ga.fsfreezeThaw();
      return undefined;
    } catch (err) {
      last = (err as Error).message;
    }
  }
  return last;
}
