/**
 * `Event<T>`: set once, wake every waiter.
 *
 * Guarantees, and who keeps them:
 * 1. Set once: the first `set(value)` wins and its value is the one every waiter gets; later
 *    calls return false and change nothing. An event is never cleared.
 * 2. No waiter misses it: every waiter blocked before `set` is committed by it, and every
 *    `wait` after it returns at once (`set`, `wait`).
 * 3. Waiting is a checkpoint: a cancelled wait leaves nothing registered and consumes nothing,
 *    so many tasks can wait and any of them can give up (`wait`, `waitEvent`).
 * 4. `set` never blocks and never throws, so it is safe in cleanup and in event handlers.
 */
import { block, pendingCancellation, rejectCancelled, type Waiter } from '../core/internal.ts';
import type { SelectEvent } from './select.ts';

/**
 * A one-shot event carrying a value: `set(value)` once, `wait()` from any number of tasks.
 * For "the server is draining", "the reload finished with this result", "the process exited".
 * The name shadows the global DOM-style `Event` in a module that imports it.
 * @example
 * const exited = new Event<number>();
 * child.once('exit', (code) => exited.set(code ?? 1));
 * const code = await exited.wait();
 */
export class Event<T = void> {
  #set = false;
  #value: T | undefined = undefined;
  // Allocated on the first blocked wait; null again once set (the waiters are all committed).
  #waiters: Set<Waiter<T>> | null = null;

  /** True once `set` was called. */
  get isSet(): boolean {
    return this.#set;
  }

  /** The value `set` was given, or undefined before it. */
  get value(): T | undefined {
    return this.#value;
  }

  /**
   * Sets the event and wakes every waiter with `value`; returns false (and changes nothing) if
   * it was already set.
   * **Cancellation**: not a checkpoint; never blocks, never throws.
   * @example
   * if (!done.set(result)) console.log('someone else finished first');
   */
  set(value: T): boolean {
    if (this.#set) return false;
    this.#set = true;
    this.#value = value;
    const ws = this.#waiters;
    this.#waiters = null;
    if (ws) for (const w of ws) w.commit(value);
    return true;
  }

  /**
   * Waits until the event is set and returns its value.
   * **Cancellation**: a checkpoint. Once set it does not block (so under `mask` it cannot be
   * interrupted); before, it blocks and is interruptible under `mask`. A cancelled wait leaves
   * no trace.
   * @example
   * await ready.wait();
   */
  wait(): Promise<T> {
    if (this.#set) {
      const e = pendingCancellation();
      return e === null ? Promise.resolve(this.#value as T) : rejectCancelled(e);
    }
    return block<T>((w) => this.#register(w));
  }

  /**
   * The event "it is set" for `select`; its value is the event's.
   * **Cancellation**: as `select`.
   * @example
   * const r = await select(stopped.waitEvent(), after(1000));
   */
  waitEvent(): SelectEvent<T> {
    return {
      poll: () => (this.#set ? { value: this.#value as T } : undefined),
      register: (w) => this.#register(w),
    };
  }

  #register(w: Waiter<T>): () => void {
    if (this.#set) {
      w.commit(this.#value as T);
      return noop;
    }
    const ws = (this.#waiters ??= new Set());
    ws.add(w);
    return () => {
      ws.delete(w);
    };
  }
}

function noop(): void {}
