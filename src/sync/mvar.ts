/**
 * `MVar<T>`: a box that is either full (holds one value) or empty — a lock, a one-slot
 * channel, or shared state with `modify`.
 *
 * Guarantees, and who keeps them:
 * 1. Cancelled means it did not happen: a `take` or `read` interrupted while blocked took
 *    nothing; a `put` interrupted while blocked put nothing. Once a blocked operation was
 *    handed its value it completes, even if a cancellation arrives afterwards.
 * 2. FIFO: blocked takers are served in arrival order, and so are blocked putters. A `put`
 *    wakes every blocked `read` and then the first blocked `take`.
 * 3. `modify`, `modify_`, `with`, `swap` and `compareAndSwap` leave the MVar full whatever
 *    happens: interrupted anywhere, or failing, they put the old value back (Haskell's
 *    `modifyMVar`: `mask`, then the user function runs under `restore`). Called unmasked in a
 *    cancelled scope they raise before taking anything, so the user function never runs
 *    (their first line); in a cleanup window they run normally.
 * 4. `read` is atomic: it never empties the MVar, not even for a moment.
 * 5. An operation that does not block is not interruptible under `mask`: `take` from a full
 *    MVar, every `try…`. A `put` into an empty MVar is not interruptible at all, so a value
 *    taken is never lost by the put that gives it back.
 *
 * Lock order: when nested `modify` calls hold several MVars at once, every task must take them
 * in one global order (say, by account id), or two tasks can deadlock each holding one.
 */
import { block, pendingCancellation, pollCancel, rejectCancelled } from '../core/internal.ts';
import { ArgumentError, mask } from '../core/index.ts';
import type { SelectEvent } from './select.ts';
import { WaitList } from './wait-list.ts';

/**
 * A synchronizing box holding at most one value.
 * @example
 * const lock = new MVar<void>(undefined);      // full: the lock is free
 * await lock.with(async () => { await writeLog(line); });
 * const box = new MVar<number>();               // empty
 * spawn(async () => box.put(42));
 * console.log(await box.take());                // 42
 */
export class MVar<T> {
  #full: boolean;
  #value: T | undefined;
  // Invariant: takers.size + readers.size > 0 implies !full; putters.size > 0 implies full.
  readonly #takers = new WaitList();
  readonly #readers = new WaitList();
  readonly #putters = new WaitList<T>();

  /**
   * `new MVar<T>()` is empty; `new MVar(value)` is full.
   * **Cancellation**: not a checkpoint.
   */
  constructor(...initial: [] | [value: T]) {
    this.#full = initial.length > 0;
    this.#value = initial.length > 0 ? initial[0] : undefined;
  }

  /** True while the MVar holds a value (a snapshot: it can change at the next await). */
  get isFull(): boolean {
    return this.#full;
  }

  /**
   * How many `take`, `read` and `put` calls (and `select` events on this MVar) are blocked
   * right now. An interrupted one leaves the line at once, so this returns to 0 after any
   * number of timed-out waits.
   * @example
   * await timeout(10, () => box.take()); // box empty: times out
   * console.log(box.waiting); // 0
   */
  get waiting(): number {
    return this.#takers.size + this.#readers.size + this.#putters.size;
  }

  /**
   * Takes the value out, leaving the MVar empty; waits while it is empty.
   * **Cancellation**: a checkpoint. Blocks only when empty — and only then is it interruptible
   * under `mask`; interrupted, it took nothing.
   * @example
   * const job = await jobs.take();
   */
  take(): Promise<T> {
    if (this.#full) {
      const e = pendingCancellation();
      return e === null ? Promise.resolve(this.#takeNow()) : rejectCancelled(e);
    }
    return block<T>((w) => {
      const p = this.#takers.push(w, undefined, 0);
      return () => this.#takers.remove(p);
    });
  }

  /**
   * Puts `value` in, waiting while the MVar is full.
   * **Cancellation**: a checkpoint only when it must wait (full; then interruptible under
   * `mask`, and interrupted it put nothing). A put into an empty MVar never raises, even in
   * a cancelled scope: it is how a holder gives the value back, so `const v = await
   * m.take(); try { … } finally { await m.put(v); }` cannot leave the MVar empty, wherever
   * the cancellation lands.
   * @example
   * await results.put(answer);
   */
  put(value: T): Promise<void> {
    if (!this.#full) {
      // Not a checkpoint (see above): a give-back that raised would lose the value for good.
      this.#putNow(value);
      return Promise.resolve();
    }
    return block<void>((w) => {
      const p = this.#putters.push(w, value, 0);
      return () => this.#putters.remove(p);
    });
  }

  /**
   * Returns the value without taking it, atomically (the MVar is never empty in between);
   * waits while it is empty.
   * **Cancellation**: a checkpoint; blocks only when empty.
   * @example
   * const config = await current.read();
   */
  read(): Promise<T> {
    if (this.#full) {
      const e = pendingCancellation();
      return e === null ? Promise.resolve(this.#value as T) : rejectCancelled(e);
    }
    return block<T>((w) => {
      const p = this.#readers.push(w, undefined, 0);
      return () => this.#readers.remove(p);
    });
  }

  /**
   * Takes the value if there is one: `{ value }`, or `undefined` if empty.
   * **Cancellation**: a non-blocking checkpoint: raises a pending cancellation only unmasked.
   * @example
   * const r = box.tryTake(); if (r) use(r.value);
   */
  tryTake(): { value: T } | undefined {
    pollCancel();
    return this.#full ? { value: this.#takeNow() } : undefined;
  }

  /**
   * Puts `value` if the MVar is empty; returns whether it did.
   * **Cancellation**: a non-blocking checkpoint.
   * @example
   * if (!box.tryPut(v)) console.log('already full');
   */
  tryPut(value: T): boolean {
    pollCancel();
    if (this.#full) return false;
    this.#putNow(value);
    return true;
  }

  /**
   * The value if full (`{ value }`), without taking it; `undefined` if empty.
   * **Cancellation**: a non-blocking checkpoint.
   */
  tryRead(): { value: T } | undefined {
    pollCancel();
    return this.#full ? { value: this.#value as T } : undefined;
  }

  /**
   * Replaces the value with `f(old)[0]` and returns `f(old)[1]`, holding the MVar meanwhile.
   * If `f` throws, or anything is interrupted, the old value is put back and the error
   * rethrown: the MVar is left full whatever happens.
   * Reference (Haskell's `modifyMVar`): `mask(async (restore) => { const a = await take();
   * let r; try { r = await restore(() => f(a)); } catch (e) { putBack(a); throw e; }
   * putBack(r[0]); return r[1]; })`.
   * **Cancellation**: called unmasked in a cancelled scope it raises before taking, so `f`
   * never runs and the MVar keeps its value; otherwise the `take` is a checkpoint
   * (interruptible only while it blocks); `f` runs in the caller's masking state, so its
   * checkpoints raise as usual; putting back never blocks (the MVar is empty: every user
   * follows take-then-put), so never raises.
   * Nested modifies over several MVars must take them in one global order.
   * @example
   * const ticket = await counter.modify((n) => [n + 1, n]);
   */
  modify<R>(f: (value: T) => readonly [T, R] | PromiseLike<readonly [T, R]>): Promise<R> {
    const e = pendingCancellation();
    if (e !== null) return rejectCancelled(e);
    return mask(async (restore) => {
      const a = await this.take();
      let r: readonly [T, R];
      try {
        r = await restore(() => f(a));
      } catch (e) {
        await this.#putBack(a);
        throw e;
      }
      if (!Array.isArray(r) || r.length !== 2) {
        await this.#putBack(a);
        throw new ArgumentError('MVar.modify(f): f must return a pair [newValue, result]');
      }
      await this.#putBack(r[0]);
      return r[1];
    });
  }

  /**
   * Replaces the value with `f(old)`; like `modify` without a result (Haskell's
   * `modifyMVar_`). Left full with the old value if `f` throws or anything is interrupted.
   * **Cancellation**: as `modify`.
   * @example
   * await hits.modify_((n) => n + 1);
   */
  modify_(f: (value: T) => T | PromiseLike<T>): Promise<void> {
    const e = pendingCancellation();
    if (e !== null) return rejectCancelled(e);
    return mask(async (restore) => {
      const a = await this.take();
      let b: T;
      try {
        b = await restore(() => f(a));
      } catch (e) {
        await this.#putBack(a);
        throw e;
      }
      await this.#putBack(b);
    });
  }

  /**
   * Runs `f` with the value while holding the MVar (others wait), then puts the same value
   * back, whatever happens (Haskell's `withMVar`). The classic use is a lock.
   * **Cancellation**: as `modify`; the MVar is full again when `with` returns or throws.
   * @example
   * await stdoutLock.with(() => write(lines));
   */
  with<R>(f: (value: T) => R | PromiseLike<R>): Promise<R> {
    const e = pendingCancellation();
    if (e !== null) return rejectCancelled(e);
    return mask(async (restore) => {
      const a = await this.take();
      try {
        return await restore(() => f(a));
      } finally {
        await this.#putBack(a);
      }
    });
  }

  /**
   * Puts `value` in and returns the old one, atomically for every user that follows
   * take-then-put (Haskell's `swapMVar`).
   * **Cancellation**: raises before anything when called unmasked in a cancelled scope;
   * otherwise the `take` is the only checkpoint that can raise, and after it the swap
   * completes.
   * @example
   * const previous = await config.swap(next);
   */
  swap(value: T): Promise<T> {
    const e = pendingCancellation();
    if (e !== null) return rejectCancelled(e);
    return mask(async () => {
      const old = await this.take();
      await this.#putBack(value);
      return old;
    });
  }

  /**
   * If the value equals `expected` (by `equals`, default `Object.is`), replaces it with
   * `next` and returns true; otherwise leaves it and returns false (Haskell's `casMVar`).
   * **Cancellation**: as `modify`: interrupted, the MVar keeps its value and nothing changed.
   * @example
   * if (await state.compareAndSwap('idle', 'running')) start();
   */
  compareAndSwap(
    expected: T,
    next: T,
    equals: (a: T, b: T) => boolean = Object.is,
  ): Promise<boolean> {
    return this.modify((cur) => (equals(cur, expected) ? [next, true] : [cur, false]));
  }

  /**
   * `take` as an event for `select`: fires with the value, which it takes.
   * **Cancellation**: not a checkpoint; the `select` is. Losing the select takes nothing.
   * @example
   * const r = await select(box.takeEvent(), after(100));
   */
  takeEvent(): SelectEvent<T> {
    return {
      poll: () => (this.#full ? { value: this.#takeNow() } : undefined),
      register: (w) => {
        const p = this.#takers.push(w, undefined, 0);
        return () => this.#takers.remove(p);
      },
    };
  }

  /**
   * `read` as an event for `select`: fires with the value and leaves the MVar full.
   * **Cancellation**: not a checkpoint; the `select` is.
   */
  readEvent(): SelectEvent<T> {
    return {
      poll: () => (this.#full ? { value: this.#value as T } : undefined),
      register: (w) => {
        const p = this.#readers.push(w, undefined, 0);
        return () => this.#readers.remove(p);
      },
    };
  }

  // Precondition: full. Refills from the first putter still waiting, else empties.
  #takeNow(): T {
    const v = this.#value as T;
    for (;;) {
      const p = this.#putters.shift();
      if (p === null) {
        this.#full = false;
        this.#value = undefined;
        return v;
      }
      if (p.waiter.commit(undefined)) {
        this.#value = p.value;
        return v;
      }
    }
  }

  // Precondition: empty. Every reader sees the value; the first taker still waiting gets it.
  #putNow(value: T): void {
    for (let r = this.#readers.shift(); r !== null; r = this.#readers.shift()) {
      r.waiter.commit(value);
    }
    for (let t = this.#takers.shift(); t !== null; t = this.#takers.shift()) {
      if (t.waiter.commit(value)) return;
    }
    this.#full = true;
    this.#value = value;
  }

  // The put at the end of a modify. It cannot block when every user follows take-then-put;
  // if someone broke that protocol and filled the MVar meanwhile, wait like `put` does.
  #putBack(value: T): Promise<void> | undefined {
    if (!this.#full) {
      this.#putNow(value);
      return undefined;
    }
    return this.put(value);
  }
}
