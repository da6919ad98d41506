/**
 * Repository locks: small files under locks/. Backups, restores, verify and prune take shared
 * locks; gc takes an exclusive one. A process that finds a conflicting lock backs off and waits,
 * saying who holds it. Locks are refreshed while held; a lock whose process is gone (same host)
 * or that has not been refreshed for STALE_MS is stale and removed.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Backend } from '../backends/index.js';
import { VmvaultError } from '../core/index.js';

export type LockKind = 'shared' | 'exclusive';

interface LockInfo {
  kind: LockKind;
  pid: number;
  hostname: string;
  time: string;
  command: string;
}

const REFRESH_MS = 30_000;
const STALE_MS = 5 * 60_000;

/** Options for {@link acquireLock}. */
export interface LockOptions {
  /** What the holder is doing, shown to waiters ("backup vm1"). */
  command: string;
  /** How long to wait for a conflicting lock before failing (ms); 0 fails at once. */
  waitMs: number;
  /** Called once when the lock is busy and we start waiting. */
  onWait?: (holder: string) => void;
}

/** A held lock; call {@link Lock.release} when done. */
export class Lock {
  private timer: NodeJS.Timeout | null;
  constructor(
    private readonly backend: Backend,
    readonly name: string,
    private readonly info: LockInfo,
  ) {
    this.timer = setInterval(() => {
      this.backend
        .write(this.name, Buffer.from(JSON.stringify({ ...this.info, time: new Date().toISOString() })))
        .catch(() => {});
    }, REFRESH_MS);
    this.timer.unref();
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.backend.remove(this.name);
  }
}

function describe(l: LockInfo): string {
  return `${l.command} (pid ${l.pid} on ${l.hostname}, since ${l.time})`;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes a lock of `kind`, waiting up to `opts.waitMs` for conflicting holders. */
export async function acquireLock(backend: Backend, kind: LockKind, opts: LockOptions): Promise<Lock> {
  const me: LockInfo = {
    kind,
    pid: process.pid,
    hostname: hostname(),
    time: new Date().toISOString(),
    command: opts.command,
  };
  const deadline = Date.now() + opts.waitMs;
  let warned = false;
  for (;;) {
    const name = `locks/${randomBytes(8).toString('hex')}`;
    // Not fsynced: a lock means nothing after a crash (its process is gone, so it is stale).
    await backend.write(name, Buffer.from(JSON.stringify(me)), { durable: false });
    const conflict = await findConflict(backend, name, kind);
    if (!conflict) return new Lock(backend, name, me);
    await backend.remove(name);
    if (Date.now() >= deadline) {
      throw new VmvaultError('E_LOCKED', `the repository is locked by ${describe(conflict)}`, {
        hint: 'wait for it to finish, or pass --lock-wait SECONDS to wait longer',
        details: { holder: conflict },
      });
    }
    if (!warned) {
      warned = true;
      opts.onWait?.(describe(conflict));
    }
    await new Promise((r) => setTimeout(r, 100 + Math.random() * 400));
  }
}

async function findConflict(backend: Backend, own: string, kind: LockKind): Promise<LockInfo | null> {
  const host = hostname();
  for (const o of await backend.list('locks')) {
    if (o.name === own) continue;
    let info: LockInfo;
    try {
      info = JSON.parse((await backend.read(o.name)).toString('utf8')) as LockInfo;
    } catch {
      continue; // vanished or half-visible: ignore
    }
    const stale = (info.hostname === host && !processAlive(info.pid)) || Date.now() - o.mtimeMs > STALE_MS;
    if (stale) {
      await backend.remove(o.name);
      continue;
    }
    if (kind === 'exclusive' || info.kind === 'exclusive') return info;
  }
  return null;
}
