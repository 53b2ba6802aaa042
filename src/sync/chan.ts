/**
 * `Chan<T>`: an unbounded FIFO channel — `write` never blocks, `read` waits for an item.
 *
 * Guarantees, and who keeps them:
 * 1. No item is lost or duplicated by a cancellation: a reader interrupted while blocked took
 *    nothing (the item goes to the next reader or stays buffered); a reader that was handed an
 *    item returns it even if a cancellation arrives afterwards (`#deliver`, core's commit).
 * 2. A write either happened or did not: it is synchronous, so nothing can interrupt it
 *    half-way; a cancelled writer raises before writing.
 * 3. Items come out in write order; blocked readers are served in arrival order.
 * 4. `close()` stops writes; readers get every buffered item, then the end (`read` throws
 *    `ChanClosedError`, `for await` ends, `readEvent` gives `{ done: true }`).
 * 5. `dup()` makes a broadcast reader: it receives its own copy of every item written after
 *    it was made, through any duplicate of the channel.
 */
import { block, pendingCancellation, pollCancel, rejectCancelled } from '../core/internal.ts';
import { Deque } from './deque.ts';
import { ChanClosedError } from './errors.ts';
import type { SelectEvent } from './select.ts';
import { WaitList } from './wait-list.ts';

/** What a read that may meet the end gives: an item, or `done` once closed and drained. */
export type ChanRead<T> = { done: false; value: T } | { done: true; value: undefined };

// How a waiting reader wants its item: bare (`read`), or as a `ChanRead` (events, iteration).
const BARE = 0;
const WRAPPED = 1;

const END: { done: true; value: undefined } = Object.freeze({ done: true, value: undefined });

// The write end shared by a channel and its duplicates.
interface Hub<T> {
  members: Chan<T>[];
  closed: boolean;
}

/**
 * An unbounded, cancellation-safe FIFO channel.
 * @example
 * const jobs = new Chan<Job>();
 * spawn(async () => { for await (const job of jobs) await run(job); });
 * jobs.write(job1);
 * jobs.close();
 */
export class Chan<T> implements AsyncIterable<T> {
  #hub: Hub<T>;
  #detached = false;
  readonly #buf = new Deque<T>();
  // Invariant: readers.size > 0 implies buf.length === 0 and the channel is not ended.
  readonly #readers = new WaitList();

  /** **Cancellation**: not a checkpoint. */
  constructor() {
    this.#hub = { members: [this], closed: false };
  }

  /** How many items are buffered for this reader. */
  get size(): number {
    return this.#buf.length;
  }

  /** True once the channel was closed (or this duplicate detached); items may remain. */
  get closed(): boolean {
    return this.#hub.closed || this.#detached;
  }

  /**
   * Appends `value`; never blocks. With duplicates, every one of them receives it.
   * Throws `ChanClosedError` if the channel is closed.
   * **Cancellation**: a non-blocking checkpoint: raises a pending cancellation (unmasked
   * only) *before* writing, so a cancelled write did not happen.
   * @example
   * events.write({ kind: 'tick' });
   */
  write(value: T): void {
    pollCancel();
    if (this.closed) throw new ChanClosedError('write');
    const members = this.#hub.members;
    for (let i = 0; i < members.length; i++) members[i].#deliver(value);
  }

  /**
   * Removes and returns the next item, waiting while there is none. On a closed channel with
   * nothing buffered, rejects with `ChanClosedError`.
   * **Cancellation**: a checkpoint; blocks only when nothing is buffered (then interruptible
   * under `mask`). Interrupted, it took nothing.
   * @example
   * const msg = await inbox.read();
   */
  read(): Promise<T> {
    if (this.#buf.length > 0) {
      const e = pendingCancellation();
      return e === null ? Promise.resolve(this.#buf.shift()) : rejectCancelled(e);
    }
    if (this.closed) {
      const e = pendingCancellation();
      return e !== null ? rejectCancelled(e) : Promise.reject(new ChanClosedError('read'));
    }
    return block<T>((w) => {
      const p = this.#readers.push(w, undefined, BARE);
      return () => this.#readers.remove(p);
    });
  }

  /**
   * Like `read`, but the end of a closed channel is a value: `{ done: true }`.
   * **Cancellation**: as `read`.
   * @example
   * for (let r = await c.next(); !r.done; r = await c.next()) use(r.value);
   */
  next(): Promise<ChanRead<T>> {
    if (this.#buf.length > 0) {
      const e = pendingCancellation();
      return e === null
        ? Promise.resolve({ done: false, value: this.#buf.shift() })
        : rejectCancelled(e);
    }
    if (this.closed) {
      const e = pendingCancellation();
      return e === null ? Promise.resolve(END) : rejectCancelled(e);
    }
    return block<ChanRead<T>>((w) => {
      const p = this.#readers.push(w, undefined, WRAPPED);
      return () => this.#readers.remove(p);
    });
  }

  /**
   * The next item if one is buffered (`{ value }`), else `undefined` — see `closed` to tell
   * an empty channel from an ended one.
   * **Cancellation**: a non-blocking checkpoint.
   */
  tryRead(): { value: T } | undefined {
    pollCancel();
    return this.#buf.length > 0 ? { value: this.#buf.shift() } : undefined;
  }

  /**
   * Closes the channel for writing, for every duplicate. Readers still get the buffered
   * items, then the end. Idempotent.
   * **Cancellation**: not a checkpoint; never throws, so it is safe in cleanup.
   * @example
   * try { await produce(chan); } finally { chan.close(); }
   */
  close(): void {
    const hub = this.#hub;
    if (hub.closed) return;
    hub.closed = true;
    for (const m of hub.members) m.#end();
  }

  /**
   * A broadcast reader: a new channel that receives a copy of every item written after this
   * call, through this channel or any duplicate, and shares their `close`. Like Haskell's
   * `dupChan`. A duplicate nobody reads keeps its items: `detach()` it when done.
   * **Cancellation**: not a checkpoint.
   * @example
   * const audit = events.dup();
   * spawn(async () => { for await (const e of audit) log(e); });
   */
  dup(): Chan<T> {
    const c = new Chan<T>();
    c.#hub = this.#hub;
    if (this.#hub.closed) c.#detached = true;
    else this.#hub.members = [...this.#hub.members, c];
    return c;
  }

  /**
   * Stops this reader from receiving further items (the others are unaffected). Its buffered
   * items stay readable, then it reads as closed; writing through it throws. Idempotent.
   * **Cancellation**: not a checkpoint; never throws.
   */
  detach(): void {
    if (this.#detached) return;
    this.#detached = true;
    // Copy on write: a write in progress keeps iterating the array it started with.
    this.#hub.members = this.#hub.members.filter((m) => m !== this);
    this.#end();
  }

  /**
   * `read` as an event for `select`: fires with the next item (`{ done: false, value }`) or,
   * closed and drained, with `{ done: true }`.
   * **Cancellation**: not a checkpoint; the `select` is. Losing the select takes nothing.
   * @example
   * const r = await select(inbox.readEvent(), after(1000));
   */
  readEvent(): SelectEvent<ChanRead<T>> {
    return {
      poll: () => {
        if (this.#buf.length > 0) return { value: { done: false, value: this.#buf.shift() } };
        return this.closed ? { value: END } : undefined;
      },
      register: (w) => {
        const p = this.#readers.push(w, undefined, WRAPPED);
        return () => this.#readers.remove(p);
      },
    };
  }

  /**
   * Iterates the items until the channel is closed and drained; `break` leaves the
   * remaining items in the channel.
   * **Cancellation**: each step is a `next()`, a checkpoint; a cancelled step took nothing.
   * @example
   * for await (const line of lines) console.log(line);
   */
  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => this.next() as Promise<IteratorResult<T>>,
      return: () => Promise.resolve(END),
    };
  }

  #deliver(value: T): void {
    for (let r = this.#readers.shift(); r !== null; r = this.#readers.shift()) {
      if (r.waiter.commit(r.tag === BARE ? value : { done: false, value })) return;
    }
    this.#buf.push(value);
  }

  // The channel ended for this reader: nobody waiting can get an item any more.
  #end(): void {
    if (this.#buf.length > 0) return; // invariant: then no reader is waiting
    for (let r = this.#readers.shift(); r !== null; r = this.#readers.shift()) {
      if (r.tag === BARE) r.waiter.fail(new ChanClosedError('read'));
      else r.waiter.commit(END);
    }
  }
}
