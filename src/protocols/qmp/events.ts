/**
 * Event fan-out for the QMP client: a bounded history (so a waiter registered after a command's
 * reply still sees events QEMU sent before that reply), listeners, async iterators and waiters.
 */
import { VmvaultError } from '../../core/errors.js';
import { timeoutError } from './errors.js';
import type { QmpEvent } from './messages.js';

/** Predicate over an event's payload. */
export type EventPredicate<D = Record<string, unknown>> = (event: QmpEvent<D>) => boolean;

/** Options of {@link EventHub.wait}. */
export interface WaitForEventOptions {
  /**
   * Also consider buffered events whose `seq` is greater than this mark (take it with
   * `eventMark()` before sending the command that causes the event). Without it only events that
   * arrive after the call match.
   */
  since?: number;
  /** Aborts the wait. */
  signal?: AbortSignal;
}

interface Waiter {
  name: string | undefined;
  predicate: EventPredicate<never> | undefined;
  resolve(e: QmpEvent): void;
  reject(err: unknown): void;
}

interface Subscription {
  queue: QmpEvent[];
  wake: (() => void) | undefined;
  filter: ((e: QmpEvent) => boolean) | undefined;
  ended: boolean;
}

/** Keeps recent events and hands them to listeners, iterators and waiters. */
export class EventHub {
  private readonly history: QmpEvent[] = [];
  private readonly listeners = new Set<(e: QmpEvent) => void>();
  private readonly waiters = new Set<Waiter>();
  private readonly subs = new Set<Subscription>();
  private lastSeq = 0;

  constructor(private readonly historySize: number) {}

  /** Sequence number of the newest event received so far (0 before any). */
  get mark(): number {
    return this.lastSeq;
  }

  /** Records and dispatches an event that just arrived. */
  dispatch(raw: Omit<QmpEvent, 'seq'>): QmpEvent {
    const event: QmpEvent = { ...raw, seq: ++this.lastSeq };
    this.history.push(event);
    if (this.history.length > this.historySize)
      this.history.splice(0, this.history.length - this.historySize);
    for (const w of [...this.waiters]) {
      if (matches(event, w.name, w.predicate)) {
        this.waiters.delete(w);
        w.resolve(event);
      }
    }
    for (const s of this.subs) {
      if (!s.ended && (!s.filter || s.filter(event))) {
        s.queue.push(event);
        s.wake?.();
      }
    }
    for (const l of [...this.listeners]) {
      try {
        l(event);
      } catch {
        // a throwing listener must not break the connection
      }
    }
    return event;
  }

  /** Buffered events newer than `since`, oldest first. */
  recent(since = 0): QmpEvent[] {
    return this.history.filter((e) => e.seq > since);
  }

  /** Adds a listener; returns a function that removes it. */
  listen(listener: (e: QmpEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Waits for an event named `name` (any name when undefined) that satisfies `predicate`. */
  wait<D = Record<string, unknown>>(
    name: string | undefined,
    predicate: EventPredicate<D> | undefined,
    timeoutMs: number,
    options: WaitForEventOptions = {},
  ): Promise<QmpEvent<D>> {
    if (options.since !== undefined) {
      const hit = this.history.find(
        (e) => e.seq > (options.since ?? 0) && matches(e, name, predicate as EventPredicate<never>),
      );
      if (hit) return Promise.resolve(hit as unknown as QmpEvent<D>);
    }
    return new Promise<QmpEvent<D>>((resolve, reject) => {
      const { signal } = options;
      const cleanup = (): void => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        signal?.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter = {
        name,
        predicate: predicate as EventPredicate<never> | undefined,
        resolve: (e) => {
          cleanup();
          resolve(e as unknown as QmpEvent<D>);
        },
        reject: (err) => {
          cleanup();
          reject(err);
        },
      };
      const timer = setTimeout(
        () => waiter.reject(timeoutError(`waiting for QMP event ${name ?? '(any)'}`, timeoutMs)),
        timeoutMs,
      );
      const onAbort = (): void =>
        waiter.reject(new VmvaultError('E_CLOSED', `waiting for QMP event ${name ?? '(any)'}: aborted`));
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(waiter);
    });
  }

  /**
   * Async iterator over events arriving from now on (optionally filtered). It ends when the hub
   * is closed for good or when the consumer breaks out of the loop.
   */
  iterate(filter?: (e: QmpEvent) => boolean): AsyncIterableIterator<QmpEvent> {
    const sub: Subscription = { queue: [], wake: undefined, filter, ended: false };
    this.subs.add(sub);
    const finish = (): IteratorResult<QmpEvent> => {
      sub.ended = true;
      this.subs.delete(sub);
      return { value: undefined, done: true };
    };
    const iterator: AsyncIterableIterator<QmpEvent> = {
      next: async () => {
        for (;;) {
          const e = sub.queue.shift();
          if (e) return { value: e, done: false };
          if (sub.ended) return finish();
          await new Promise<void>((r) => {
            sub.wake = r;
          });
          sub.wake = undefined;
        }
      },
      return: async () => finish(),
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }

  /** Fails every waiter with `err` (the connection went away). */
  failWaiters(err: unknown): void {
    for (const w of [...this.waiters]) w.reject(err);
  }

  /** Ends every iterator (after draining what it already queued). */
  endIterators(): void {
    for (const s of this.subs) {
      s.ended = true;
      s.wake?.();
    }
  }
}

function matches(
  e: QmpEvent,
  name: string | undefined,
  predicate: EventPredicate<never> | undefined,
): boolean {
  if (name !== undefined && e.event !== name) return false;
  if (!predicate) return true;
  try {
    return (predicate as EventPredicate)(e);
  } catch {
    return false;
  }
}
