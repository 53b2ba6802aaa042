/**
 * Event-poll: wait on several events and commit exactly one of them.
 *
 * Guarantees, and who keeps them:
 * 1. Exactly one event fires per `select`: all cases share one waiter, so the first commit
 *    wins and every later commit returns false — the producer keeps its item (`select`).
 * 2. The losers leave no trace: nothing of theirs is consumed, and every registration (wait
 *    queue entry, deadline, abort listener) is removed before `select` returns or throws.
 * 3. A timer, an abort or a closed channel is a *result*, never an exception; only the
 *    caller's own cancellation raises, as at every checkpoint.
 * 4. When several events are ready at the call, the first in argument order wins.
 * 5. Timers live in core's shared deadline structure, so a virtual test clock drives them and
 *    none outlives the call (`after`, `deadlineAt`).
 */
import { ArgumentError, type Result, type Task } from '../core/index.ts';
import {
  addDeadline,
  block,
  now,
  pendingCancellation,
  rejectCancelled,
  removeDeadline,
  type Waiter,
} from '../core/internal.ts';

export type { Waiter } from '../core/internal.ts';

/**
 * Something `select` can wait for. Every blocking operation of `quiesce/sync` is one of these
 * plus a fast path, and any other part (say, `conn.readEvent()` in `quiesce/net`) can provide
 * its own. The contract, which keeps `select`'s guarantees:
 *
 * - `poll()` completes the event now if it can without blocking, consuming what it returns
 *   (an item, a permit) and nothing else; `undefined` means "not ready" and changes nothing.
 * - `register(w)` enqueues `w` where the producer will find it and returns `unregister`, which
 *   must be idempotent and harmless after a commit. When the event happens the producer calls
 *   `w.commit(value)`; if that returns false the waiter is gone (another case won, or the
 *   caller was cancelled) and the producer must keep `value` and try its next waiter.
 *   `register` may commit synchronously if the event is already ready; it must then not leave
 *   `w` enqueued. `w.fail(error)` is for a broken source only — an expected end (a timeout, a
 *   closed channel) is a value.
 *
 * @example
 * // An event that fires when an EventEmitter emits 'ready':
 * const ready: SelectEvent<void> = {
 *   poll: () => (isReady ? { value: undefined } : undefined),
 *   register(w) {
 *     const on = () => { w.commit(undefined); };
 *     emitter.once('ready', on);
 *     return () => emitter.off('ready', on);
 *   },
 * };
 */
export interface SelectEvent<T> {
  /** Completes now if possible, consuming only what it returns; `undefined`: not ready. */
  poll(): { value: T } | undefined;
  /** Enqueues `w`; returns how to take it out again (idempotent). */
  register(w: Waiter<T>): () => void;
}

/** The value type of an event. */
export type EventValue<E> = E extends SelectEvent<infer V> ? V : never;

/**
 * What `select(e0, e1, …)` returns: which event fired (`index`, and the `event` object itself)
 * and its value. A union discriminated by `index`, so `if (r.index === 0)` narrows `r.value`.
 */
export type Selected<E extends readonly SelectEvent<any>[]> = {
  [K in keyof E]: {
    index: K extends `${infer N extends number}` ? N : number;
    event: E[K];
    value: EventValue<E[K]>;
  };
}[number];

/**
 * Waits until one of `events` happens and commits exactly that one; returns which (`index`,
 * `event`) and its value. The others are left exactly as they were: no item taken, no permit
 * held, no timer or listener left behind. When several are ready at once, the first wins.
 *
 * **Cancellation**: a checkpoint. If an event is ready it does not block, so under `mask` it
 * cannot be interrupted; otherwise it blocks and is interruptible under `mask`. A cancellation
 * raises and nothing was consumed; once an event committed its value is returned even if a
 * cancellation arrives afterwards. Timers and aborts are results, not exceptions.
 *
 * Reference: `select(a, b) = a.poll() ?? b.poll() ?? block(w => a.register(w) + b.register(w))`
 * with one shared claim.
 * @example
 * const r = await select(chan.readEvent(), after(1000));
 * if (r.index === 1) console.log('nothing for a second');
 * else if (!r.value.done) console.log('got', r.value.value);
 */
export function select<const E extends readonly SelectEvent<any>[]>(
  ...events: E
): Promise<Selected<E>> {
  if (events.length === 0) {
    return Promise.reject(new ArgumentError('select(...events): give at least one event'));
  }
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    if (typeof e?.poll !== 'function' || typeof e.register !== 'function') {
      return Promise.reject(
        new ArgumentError(`select(...events): argument ${i} is not a SelectEvent`),
      );
    }
  }
  const cancelled = pendingCancellation();
  if (cancelled !== null) return rejectCancelled(cancelled);
  try {
    for (let i = 0; i < events.length; i++) {
      const r = events[i].poll();
      if (r) return Promise.resolve({ index: i, event: events[i], value: r.value } as Selected<E>);
    }
  } catch (e) {
    return Promise.reject(e); // a broken event; nothing of the others was touched
  }
  return block<Selected<E>>((w) => {
    const n = events.length;
    const unregs: ((() => void) | undefined)[] = new Array(n).fill(undefined);
    let winner = -1;
    // Invariant once winner >= 0: unregs[j] === undefined for every j (all losers removed).
    const dropOthers = (keep: number) => {
      for (let j = 0; j < n; j++) {
        const u = unregs[j];
        if (u === undefined) continue;
        unregs[j] = undefined;
        if (j !== keep) u();
      }
    };
    for (let i = 0; i < n && winner < 0; i++) {
      const event = events[i];
      const sub: Waiter<unknown> = {
        get pending() {
          return w.pending;
        },
        commit(value) {
          if (!w.commit({ index: i, event, value } as Selected<E>)) return false;
          winner = i;
          dropOthers(i);
          return true;
        },
        fail(error) {
          if (!w.fail(error)) return false;
          winner = i;
          dropOthers(i);
          return true;
        },
      };
      let u: () => void;
      try {
        u = event.register(sub);
      } catch (e) {
        // A broken event: undo what the others registered and fail the select with its error.
        dropOthers(-1);
        w.fail(e);
        break;
      }
      if (winner < 0) unregs[i] = u;
      else if (winner !== i) u();
    }
    return () => dropOthers(-1);
  });
}

const ready: { value: undefined } = { value: undefined };

/**
 * An event that fires `ms` milliseconds after it was created (on the library clock, so a test
 * clock drives it). Create it once before a loop to get one overall deadline for the loop, or
 * inside the loop for a per-iteration timeout. `after(Infinity)` never fires.
 * **Cancellation**: not a checkpoint (it only describes an event); the `select` is.
 * @example
 * const r = await select(queue.getEvent(), after(50));
 * if (r.index === 1) console.log('queue idle for 50 ms');
 */
export function after(ms: number): SelectEvent<void> {
  if (typeof ms !== 'number' || Number.isNaN(ms)) {
    throw new ArgumentError(`after(ms): ms must be a number, got ${String(ms)}`);
  }
  return deadlineAt(ms === Number.POSITIVE_INFINITY ? ms : now() + ms);
}

/**
 * An event that fires when the library clock (`now()` from `quiesce`) reaches `at` (absolute
 * ms); a time already past is ready at once.
 * **Cancellation**: not a checkpoint; the `select` is.
 * @example
 * const end = now() + 5000;
 * for (;;) { const r = await select(chan.readEvent(), deadlineAt(end)); if (r.index === 1) break; }
 */
export function deadlineAt(at: number): SelectEvent<void> {
  if (typeof at !== 'number' || Number.isNaN(at)) {
    throw new ArgumentError(`deadlineAt(at): at must be a number, got ${String(at)}`);
  }
  return {
    poll: () => (now() >= at ? ready : undefined),
    register(w) {
      if (at === Number.POSITIVE_INFINITY) return noop;
      const d = addDeadline(at, () => {
        w.commit(undefined);
      });
      return () => removeDeadline(d);
    },
  };
}

/**
 * An event that fires when `signal` aborts; its value is `signal.reason`. The listener is
 * removed when the `select` ends, whichever event won.
 * **Cancellation**: not a checkpoint; the `select` is.
 * @example
 * const r = await select(chan.readEvent(), aborted(req.signal));
 * if (r.index === 1) return; // the client went away
 */
export function aborted(signal: AbortSignal): SelectEvent<unknown> {
  if (!(signal instanceof AbortSignal)) {
    throw new ArgumentError('aborted(signal): signal must be an AbortSignal');
  }
  return {
    poll: () => (signal.aborted ? { value: signal.reason } : undefined),
    register(w) {
      const onAbort = () => {
        w.commit(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      return () => signal.removeEventListener('abort', onAbort);
    },
  };
}

/**
 * An event that fires when `task` is done; its value is the task's outcome, as
 * `task.result()` gives it (`{ ok, value }` or `{ ok: false, error }` — a cancelled task gives
 * a `TaskCancelledError`). Waiting this way marks the task's outcome as observed.
 * **Cancellation**: not a checkpoint; the `select` is. Losing the select leaves the task
 * running, untouched.
 * @example
 * const r = await select(taskDone(job), after(1000));
 * if (r.index === 1) await job.cancel('too slow');
 */
export function taskDone<T>(task: Task<T>): SelectEvent<Result<T>> {
  if (typeof (task as { onDone?: unknown })?.onDone !== 'function') {
    throw new ArgumentError('taskDone(task): task must be a Task returned by spawn');
  }
  return {
    poll() {
      if (!task.done) return undefined;
      let out: { value: Result<T> } | undefined;
      // A finished task commits synchronously inside onDone and keeps nothing registered.
      task.onDone({
        pending: true,
        commit(value) {
          out = { value };
          return true;
        },
        fail: () => false,
      });
      return out;
    },
    register: (w) => task.onDone(w),
  };
}

function noop(): void {}
