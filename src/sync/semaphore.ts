/**
 * `Semaphore`: a counter of permits with fair (FIFO) waiting.
 *
 * Guarantees, and who keeps them:
 * 1. Permits are conserved: an acquirer interrupted while blocked holds nothing; one that was
 *    granted its permits returns normally even if a cancellation arrives afterwards, so
 *    `withPermit` (acquire under `mask`, release in a `finally`) never leaks one.
 * 2. Fair: acquirers are served strictly in arrival order; a large request at the head is not
 *    overtaken by smaller ones behind it. When the head gives up, the next is reconsidered at
 *    once (`#dispatch` on unregister).
 * 3. `release` never blocks and never throws for a valid count, so it is safe in cleanup.
 */
import { block, pendingCancellation, pollCancel, rejectCancelled } from '../core/internal.ts';
import { ArgumentError, bracket } from '../core/index.ts';
import type { SelectEvent } from './select.ts';
import { WaitList } from './wait-list.ts';

function count(name: string, n: unknown, min: number): number {
  if (!Number.isInteger(n) || (n as number) < min) {
    throw new ArgumentError(`${name}: must be an integer >= ${min}, got ${String(n)}`);
  }
  return n as number;
}

/**
 * A fair counting semaphore.
 * @example
 * const db = new Semaphore(10); // at most 10 queries at once
 * const rows = await db.withPermit(() => query(sql));
 */
export class Semaphore {
  #permits: number;
  // Invariant: waiters.size > 0 implies permits < waiters.head.value (the head cannot be served).
  readonly #waiters = new WaitList<number>();

  /**
   * A semaphore holding `permits` (an integer >= 0) permits.
   * **Cancellation**: not a checkpoint.
   */
  constructor(permits: number) {
    this.#permits = count('new Semaphore(permits)', permits, 0);
  }

  /** Permits available now (a snapshot). */
  get available(): number {
    return this.#permits;
  }

  /** How many acquirers are waiting. */
  get waiting(): number {
    return this.#waiters.size;
  }

  /**
   * Takes `n` permits (default 1), waiting in line until they are available. Prefer
   * `withPermit`, which cannot leak them. The line is strict: a request for more permits than
   * will ever be available waits forever and holds up everyone behind it.
   * **Cancellation**: a checkpoint; blocks only when it must wait (then interruptible under
   * `mask`). Interrupted, it holds nothing.
   * @example
   * await sem.acquire();
   * try { await work(); } finally { sem.release(); }
   */
  acquire(n = 1): Promise<void> {
    if (n !== 1) count('Semaphore.acquire(n)', n, 1);
    if (this.#waiters.size === 0 && this.#permits >= n) {
      const e = pendingCancellation();
      if (e !== null) return rejectCancelled(e);
      this.#permits -= n;
      return Promise.resolve();
    }
    return block<void>((w) => this.#enqueue(w, n));
  }

  /**
   * Takes `n` permits if they are available now and nobody is waiting; returns whether it did.
   * **Cancellation**: a non-blocking checkpoint.
   */
  tryAcquire(n = 1): boolean {
    if (n !== 1) count('Semaphore.tryAcquire(n)', n, 1);
    pollCancel();
    if (this.#waiters.size > 0 || this.#permits < n) return false;
    this.#permits -= n;
    return true;
  }

  /**
   * Returns `n` permits (default 1) and serves waiting acquirers in order.
   * **Cancellation**: not a checkpoint; never blocks, so it is safe in `finally`.
   */
  release(n = 1): void {
    if (n !== 1) count('Semaphore.release(n)', n, 1);
    this.#permits += n;
    this.#dispatch();
  }

  /**
   * Runs `fn` holding `n` permits and releases them whatever happens.
   * Reference: `bracket(() => acquire(n), () => release(n), fn)`.
   * **Cancellation**: called unmasked in a cancelled scope it raises before acquiring, so `fn`
   * never runs; otherwise the acquire is a checkpoint (interruptible while it waits), `fn`
   * runs in the caller's masking state, and the release always runs.
   * @example
   * await uploads.withPermit(() => upload(file));
   */
  withPermit<R>(fn: () => R | PromiseLike<R>, n = 1): Promise<R> {
    if (n !== 1) count('Semaphore.withPermit(fn, n)', n, 1);
    return bracket(
      () => this.acquire(n),
      () => this.release(n),
      () => fn(),
    );
  }

  /**
   * `acquire(n)` as an event for `select`: fires once the permits are granted (the caller
   * then holds them and must release them). Losing the select holds nothing.
   * **Cancellation**: not a checkpoint; the `select` is.
   * @example
   * const r = await select(sem.acquireEvent(), after(100));
   * if (r.index === 0) try { await work(); } finally { sem.release(); }
   */
  acquireEvent(n = 1): SelectEvent<void> {
    if (n !== 1) count('Semaphore.acquireEvent(n)', n, 1);
    return {
      poll: () => {
        if (this.#waiters.size > 0 || this.#permits < n) return undefined;
        this.#permits -= n;
        return { value: undefined };
      },
      register: (w) => this.#enqueue(w, n),
    };
  }

  #enqueue(w: Parameters<WaitList<number>['push']>[0], n: number): () => void {
    const p = this.#waiters.push(w, n, 0);
    return () => {
      if (!p.linked) return;
      this.#waiters.remove(p);
      // The head may have left: whoever is now first may be servable.
      this.#dispatch();
    };
  }

  #dispatch(): void {
    for (let p = this.#waiters.head; p !== null && this.#permits >= p.value; ) {
      this.#waiters.remove(p);
      this.#permits -= p.value;
      if (!p.waiter.commit(undefined)) this.#permits += p.value;
      p = this.#waiters.head;
    }
  }
}
