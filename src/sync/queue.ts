/**
 * `Queue<T>`: a bounded FIFO queue with backpressure — `put` waits while the queue is full.
 *
 * Guarantees, and who keeps them:
 * 1. No item is lost or duplicated by a cancellation: a `get` interrupted while blocked took
 *    nothing; a `put` interrupted while blocked added nothing (its item is not in the queue);
 *    an operation that was handed its item or its slot completes even if a cancellation
 *    arrives afterwards.
 * 2. Items come out in the order they went in; blocked getters are served in arrival order,
 *    and so are blocked putters (a slot that frees goes to the longest-waiting put).
 * 3. Never more than `capacity` items are buffered. Capacity 0 is a rendezvous: a `put`
 *    completes only when a `get` takes its item.
 * 4. `close()` stops puts (blocked ones reject with `QueueClosedError`, their items not
 *    added); getters get every buffered item, then the end.
 */
import { block, pendingCancellation, pollCancel, rejectCancelled } from '../core/internal.ts';
import { ArgumentError } from '../core/index.ts';
import type { ChanRead } from './chan.ts';
import { Deque } from './deque.ts';
import { QueueClosedError } from './errors.ts';
import type { SelectEvent } from './select.ts';
import { WaitList } from './wait-list.ts';

const BARE = 0;
const WRAPPED = 1;

const END: { done: true; value: undefined } = Object.freeze({ done: true, value: undefined });

/**
 * A bounded, cancellation-safe FIFO queue.
 * @example
 * const work = new Queue<Job>(100);
 * spawn(async () => { for await (const job of work) await run(job); });
 * await work.put(job); // waits while 100 jobs are queued
 */
export class Queue<T> implements AsyncIterable<T> {
  /** The most items the queue buffers. */
  readonly capacity: number;
  #closed = false;
  readonly #buf = new Deque<T>();
  // Invariants: getters.size > 0 implies buf.length === 0 and no putter is waiting;
  // putters.size > 0 implies buf.length === capacity; buf.length <= capacity.
  readonly #getters = new WaitList();
  readonly #putters = new WaitList<T>();

  /**
   * A queue that buffers at most `capacity` items (an integer >= 0).
   * **Cancellation**: not a checkpoint.
   */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) {
      throw new ArgumentError(
        `new Queue(capacity): capacity must be an integer >= 0, got ${String(capacity)}`,
      );
    }
    this.capacity = capacity;
  }

  /** How many items are buffered. */
  get size(): number {
    return this.#buf.length;
  }

  /** True once `close()` was called; buffered items may remain. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Adds `value`, waiting while the queue is full. Rejects with `QueueClosedError` if the queue
   * is closed, or closes while this put waits (the item was then not added).
   * **Cancellation**: a checkpoint; blocks only when full (then interruptible under `mask`).
   * Interrupted, it added nothing.
   * @example
   * await q.put(item);
   */
  put(value: T): Promise<void> {
    if (this.#closed) {
      const e = pendingCancellation();
      return e !== null ? rejectCancelled(e) : Promise.reject(new QueueClosedError('put'));
    }
    if (this.#getters.size > 0 || this.#buf.length < this.capacity) {
      const e = pendingCancellation();
      if (e !== null) return rejectCancelled(e);
      if (this.#offer(value)) return Promise.resolve();
    }
    return block<void>((w) => {
      const p = this.#putters.push(w, value, 0);
      return () => this.#putters.remove(p);
    });
  }

  /**
   * Adds `value` if there is room now; returns whether it did. Throws `QueueClosedError` on a
   * closed queue.
   * **Cancellation**: a non-blocking checkpoint.
   * @example
   * if (!q.tryPut(item)) metrics.dropped++;
   */
  tryPut(value: T): boolean {
    pollCancel();
    if (this.#closed) throw new QueueClosedError('put');
    return this.#offer(value);
  }

  /**
   * Removes and returns the next item, waiting while there is none. On a closed queue with
   * nothing buffered, rejects with `QueueClosedError`.
   * **Cancellation**: a checkpoint; blocks only when empty. Interrupted, it took nothing.
   * @example
   * const job = await q.get();
   */
  get(): Promise<T> {
    if (this.#buf.length > 0 || this.#putters.size > 0) {
      const e = pendingCancellation();
      if (e !== null) return rejectCancelled(e);
      const r = this.#take();
      if (r !== NONE) return Promise.resolve(r as T);
    }
    if (this.#closed) {
      const e = pendingCancellation();
      return e !== null ? rejectCancelled(e) : Promise.reject(new QueueClosedError('get'));
    }
    return block<T>((w) => {
      const p = this.#getters.push(w, undefined, BARE);
      return () => this.#getters.remove(p);
    });
  }

  /**
   * Like `get`, but the end of a closed queue is a value: `{ done: true }`.
   * **Cancellation**: as `get`.
   */
  next(): Promise<ChanRead<T>> {
    if (this.#buf.length > 0 || this.#putters.size > 0) {
      const e = pendingCancellation();
      if (e !== null) return rejectCancelled(e);
      const r = this.#take();
      if (r !== NONE) return Promise.resolve({ done: false, value: r as T });
    }
    if (this.#closed) {
      const e = pendingCancellation();
      return e === null ? Promise.resolve(END) : rejectCancelled(e);
    }
    return block<ChanRead<T>>((w) => {
      const p = this.#getters.push(w, undefined, WRAPPED);
      return () => this.#getters.remove(p);
    });
  }

  /**
   * The next item if one is available now (`{ value }`), else `undefined`.
   * **Cancellation**: a non-blocking checkpoint.
   */
  tryGet(): { value: T } | undefined {
    pollCancel();
    const r = this.#take();
    return r === NONE ? undefined : { value: r as T };
  }

  /**
   * Closes the queue: further puts throw, blocked puts reject with `QueueClosedError` (their
   * items not added), getters drain the buffer and then see the end. Idempotent.
   * **Cancellation**: not a checkpoint; never throws.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (let p = this.#putters.shift(); p !== null; p = this.#putters.shift()) {
      p.waiter.fail(new QueueClosedError('put'));
    }
    if (this.#buf.length > 0) return; // invariant: then no getter is waiting
    for (let g = this.#getters.shift(); g !== null; g = this.#getters.shift()) {
      if (g.tag === BARE) g.waiter.fail(new QueueClosedError('get'));
      else g.waiter.commit(END);
    }
  }

  /**
   * `get` as an event for `select`: fires with the next item (`{ done: false, value }`) or,
   * closed and drained, with `{ done: true }`.
   * **Cancellation**: not a checkpoint; the `select` is. Losing the select takes nothing.
   * @example
   * const r = await select(q.getEvent(), after(50));
   */
  getEvent(): SelectEvent<ChanRead<T>> {
    return {
      poll: () => {
        const r = this.#take();
        if (r !== NONE) return { value: { done: false, value: r as T } };
        return this.#closed ? { value: END } : undefined;
      },
      register: (w) => {
        const p = this.#getters.push(w, undefined, WRAPPED);
        return () => this.#getters.remove(p);
      },
    };
  }

  /**
   * Iterates the items until the queue is closed and drained.
   * **Cancellation**: each step is a `next()`, a checkpoint; a cancelled step took nothing.
   * @example
   * for await (const job of q) await run(job);
   */
  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => this.next() as Promise<IteratorResult<T>>,
      return: () => Promise.resolve(END),
    };
  }

  // Hands `value` to a waiting getter or buffers it; false if there is no room.
  #offer(value: T): boolean {
    for (let g = this.#getters.shift(); g !== null; g = this.#getters.shift()) {
      if (g.waiter.commit(g.tag === BARE ? value : { done: false, value })) return true;
    }
    if (this.#buf.length < this.capacity) {
      this.#buf.push(value);
      return true;
    }
    return false;
  }

  // Takes the next item — from the buffer, refilling it from waiting putters, or straight
  // from a putter when the capacity is 0 — or returns NONE.
  #take(): T | typeof NONE {
    let v: T | typeof NONE = NONE;
    if (this.#buf.length > 0) v = this.#buf.shift();
    while (this.#buf.length < this.capacity || v === NONE) {
      const p = this.#putters.shift();
      if (p === null) break;
      if (!p.waiter.commit(undefined)) continue;
      if (v === NONE) v = p.value;
      else this.#buf.push(p.value);
    }
    return v;
  }
}

const NONE: unique symbol = Symbol('none');
