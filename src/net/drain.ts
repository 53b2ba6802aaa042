/**
 * The "server is draining" flag a server shares with its connections.
 *
 * Guarantees:
 * 1. Set once, never cleared: every waiter registered before `set()` is woken by it, and every
 *    check after it sees it (so a handler cannot miss the news, whenever it looks).
 * 2. The AbortSignal is created on first use and aborted by `set()`.
 */
import { Event } from '../sync/event.ts';

/** @internal */
export class DrainFlag {
  readonly #event = new Event();
  #controller: AbortController | null = null;
  #listeners: Set<() => void> | null = null;

  get isSet(): boolean {
    return this.#event.isSet;
  }

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#event.isSet) this.#controller.abort(drainingReason());
    }
    return this.#controller.signal;
  }

  set(): void {
    if (!this.#event.set()) return;
    this.#controller?.abort(drainingReason());
    const ls = this.#listeners;
    this.#listeners = null;
    if (ls) for (const l of ls) l();
  }

  /** Blocks until set (a blocking checkpoint); returns at once, after a poll, if it is. */
  wait(): Promise<void> {
    return this.#event.wait();
  }

  /** Calls `fn` once when set (at once if it is); returns how to take it back. */
  subscribe(fn: () => void): () => void {
    if (this.#event.isSet) {
      fn();
      return noop;
    }
    const ls = (this.#listeners ??= new Set());
    ls.add(fn);
    return () => ls.delete(fn);
  }
}

function noop(): void {}

function drainingReason(): Error {
  return Object.assign(new Error('the server is draining'), { code: 'QUIESCE_DRAINING' });
}

/** @internal a flag that is never set, for connections without a server. */
export const neverDraining = new DrainFlag();
