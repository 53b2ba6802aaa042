/**
 * Cancel scopes, deadlines and the checkpoints that deliver them.
 *
 * Guarantees, and who keeps them:
 * 1. A scope catches only its own cancellation (`scoped` compares the error's origin), so
 *    nested timeouts each catch their own and an outer cancellation always passes through.
 * 2. Exactly one of value and expiry wins: if `fn` returns, its value is returned even when
 *    the deadline passed meanwhile; if it raised the scope's own cancellation, the expiry wins.
 * 3. No timer outlives the call: a scope's deadline is removed in `finally`, and deadlines live
 *    in the shared structure of `clock.ts` (no host timer per call).
 * 4. Cleanup inside `fn` has completed when the call returns: it returns when `fn` settles.
 */
import { addDeadline, type Deadline, now, removeDeadline } from './clock.ts';
import {
  block,
  CancelScope,
  carried,
  checkpointNow,
  cleanupMsOption,
  current,
  runIn,
  signalOf,
} from './context.ts';
import { report } from './diagnostics.ts';
import { ArgumentError, Cancelled, TimeoutError } from './errors.ts';

/** Options for `cancelScope`. */
export interface CancelScopeOptions {
  /** Relative deadline in ms; `< 0` or `Infinity` means none. */
  timeoutMs?: number;
  /** Absolute deadline on the library clock (`now()` ms). */
  deadline?: number;
  /** Cancellation from outside does not reach inside (its own deadline still does). */
  shield?: boolean;
  /**
   * How long cleanup inside may run once a cancellation is delivered here, in ms, before
   * every checkpoint raises again. Default: inherited (5000 at the top). 0: no window.
   */
  cleanupTimeoutMs?: number;
}

/** The handle `cancelScope` gives its body, and what it returns. */
export interface ScopeHandle {
  /**
   * Cancels the scope's body; idempotent. `{ force: true }`: no cleanup window (a window
   * already open closes at once), so every checkpoint inside raises from now on.
   */
  cancel(reason?: unknown, options?: { force?: boolean }): void;
  /** True if this scope caught its own cancellation (set when the call returns). */
  readonly cancelledCaught: boolean;
  /** True once `cancel` was called or the deadline expired. */
  readonly cancelCalled: boolean;
  /** The absolute deadline, `Infinity` if none. */
  readonly deadline: number;
  /** The scope's AbortSignal, for foreign APIs. */
  readonly signal: AbortSignal;
}

class Handle implements ScopeHandle {
  cancelledCaught = false;
  scope!: CancelScope;
  readonly deadline: number;
  /** The scope's cleanup window, if set (else inherited). */
  cleanupMs: number | undefined = undefined;
  /** The deadline is hard: its expiry opens no cleanup window (`boundedCleanup`). */
  hard = false;
  constructor(deadline: number) {
    this.deadline = deadline;
  }
  cancel(reason?: unknown, options?: { force?: boolean }): void {
    this.scope.cancel(
      { kind: 'cancel', reason, by: current().task?.name, at: now() },
      options?.force === true,
    );
  }
  get cancelCalled(): boolean {
    return this.scope.cause !== null;
  }
  get signal(): AbortSignal {
    return this.scope.signal();
  }
}

function badMs(name: string, ms: unknown): ArgumentError {
  return new ArgumentError(`${name}: ms must be a number, got ${String(ms)}`);
}

function validMs(name: string, ms: unknown): number {
  if (typeof ms !== 'number' || Number.isNaN(ms)) throw badMs(name, ms);
  return ms;
}

/** @internal what `scoped` returns when the scope caught its own cancellation. */
export const CAUGHT: unique symbol = Symbol('quiesce.caught');

/**
 * @internal runs `fn(arg)` in a new child scope with an absolute `deadline` (Infinity for
 * none); returns its value, or `CAUGHT` when the scope caught its own cancellation. One async
 * frame, no handle, no result object: this is the hot path of `timeout`.
 */
export async function scoped<A, T>(
  deadline: number,
  shield: boolean,
  fn: (a: A) => T | PromiseLike<T>,
  arg: A,
  handle?: Handle,
  caughtIsUndefined?: boolean,
): Promise<T | typeof CAUGHT> {
  const ctx = current();
  const scope = new CancelScope(ctx.scope, shield);
  let hard = false;
  if (handle) {
    handle.scope = scope;
    if (handle.cleanupMs !== undefined) scope.cleanupMs = handle.cleanupMs;
    hard = handle.hard;
  }
  let d: Deadline | null = null;
  if (deadline !== Number.POSITIVE_INFINITY) {
    const fire = () => scope.cancel({ kind: 'deadline', deadline, at: now() }, hard);
    // Only a handle's caller can pass a deadline already past (the timeout family checks
    // before calling): skipping the clock read here keeps the hot path at one `now()`.
    if (handle && deadline <= now()) fire();
    else d = addDeadline(deadline, fire);
  }
  try {
    return await runIn({ task: ctx.task, scope, mask: ctx.mask }, fn, arg);
  } catch (e) {
    if (e instanceof Cancelled && e.origin === scope) {
      // An outer cancellation delivered in here whose cleanup this expiry cut is not ours to
      // end: it propagates (a cleanup error never hides a pending cancellation).
      if (scope.windows !== null) {
        const outer = carried(scope);
        if (outer) throw outer;
      }
      return caughtIsUndefined ? (undefined as T) : CAUGHT;
    }
    throw e;
  } finally {
    if (d) removeDeadline(d);
    scope.close();
  }
}

function call<T>(fn: () => T | PromiseLike<T>): T | PromiseLike<T> {
  return fn();
}

async function callAsync<T>(fn: () => T | PromiseLike<T>): Promise<T> {
  return await fn();
}

/**
 * Runs `fn` in a new cancel scope — the general form of `timeout`. The body gets a handle to
 * cancel the scope; a cancellation of this scope (by the handle or its deadline) ends the body
 * at its next checkpoint and `cancelScope` returns normally with `cancelledCaught: true`.
 * **Cancellation**: not a checkpoint itself; outer cancellations pass through unless `shield`.
 * @example
 * const { value, cancelledCaught } = await cancelScope(async (scope) => {
 *   setTimeout(() => scope.cancel('enough'), 10);
 *   await sleep(1000);
 * });
 */
export async function cancelScope<T>(
  fn: (scope: ScopeHandle) => T | PromiseLike<T>,
  options?: CancelScopeOptions,
): Promise<{ value: T | undefined; cancelledCaught: boolean; scope: ScopeHandle }> {
  let deadline = Number.POSITIVE_INFINITY;
  if (options?.timeoutMs !== undefined) {
    const ms = validMs('cancelScope', options.timeoutMs);
    if (ms >= 0) deadline = now() + ms;
  }
  if (options?.deadline !== undefined) {
    deadline = Math.min(deadline, validMs('cancelScope deadline', options.deadline));
  }
  const handle = new Handle(deadline);
  handle.cleanupMs = cleanupMsOption('cancelScope', options?.cleanupTimeoutMs);
  const v = await scoped(deadline, options?.shield === true, fn, handle, handle);
  handle.cancelledCaught = v === CAUGHT;
  return {
    value: v === CAUGHT ? undefined : v,
    cancelledCaught: handle.cancelledCaught,
    scope: handle,
  };
}

/**
 * Runs `fn` in the current task with a time limit; returns its value, or `undefined` if the
 * time ran out. `ms < 0` (or `Infinity`): no limit. `ms === 0`: returns `undefined` at once
 * without running `fn`. The expiry is a cancellation unique to this call: only this call
 * catches it. Cleanup inside `fn` has finished when it returns; no timer outlives it.
 * **Cancellation**: not a checkpoint itself; an outer cancellation passes through.
 * Reference: `timeout ms fn = cancelScope(fn, { timeoutMs: ms })` keeping only the value.
 * @example
 * const body = await timeout(500, () => conn.readLine());
 * if (body === undefined) console.log('too slow');
 */
export function timeout<T>(ms: number, fn: () => T | PromiseLike<T>): Promise<T | undefined> {
  if (typeof ms !== 'number' || Number.isNaN(ms)) return Promise.reject(badMs('timeout', ms));
  if (ms === 0) return Promise.resolve(undefined);
  if (ms < 0 || ms === Number.POSITIVE_INFINITY) return callAsync(fn);
  // `undefined` stands for CAUGHT: the hot path allocates no second async frame.
  return scoped(now() + ms, false, call<T>, fn, undefined, true) as Promise<T | undefined>;
}

/**
 * `timeout` that throws `TimeoutError` (an ordinary error) instead of returning `undefined`.
 * @example
 * const row = await timeoutOrThrow(100, () => db.query(sql));
 */
export async function timeoutOrThrow<T>(ms: number, fn: () => T | PromiseLike<T>): Promise<T> {
  validMs('timeoutOrThrow', ms);
  if (ms === 0) throw new TimeoutError(0);
  if (ms < 0 || ms === Number.POSITIVE_INFINITY) return fn();
  const v = await scoped(now() + ms, false, call<T>, fn);
  if (v === CAUGHT) throw new TimeoutError(ms);
  return v;
}

/**
 * `timeout` with an absolute deadline on the library clock (`now()`); a deadline already past
 * returns `undefined` at once without running `fn`.
 */
export async function timeoutAt<T>(
  deadline: number,
  fn: () => T | PromiseLike<T>,
): Promise<T | undefined> {
  validMs('timeoutAt', deadline);
  if (deadline <= now()) return undefined;
  const v = await scoped(deadline, false, call<T>, fn);
  return v === CAUGHT ? undefined : v;
}

/** `timeoutAt` that throws `TimeoutError` when the deadline passes. */
export async function timeoutAtOrThrow<T>(
  deadline: number,
  fn: () => T | PromiseLike<T>,
): Promise<T> {
  validMs('timeoutAtOrThrow', deadline);
  if (deadline <= now()) throw new TimeoutError();
  const v = await scoped(deadline, false, call<T>, fn);
  if (v === CAUGHT) throw new TimeoutError();
  return v;
}

/**
 * Bounded cleanup: runs `fn` shielded from outside cancellation — forced and stronger ones
 * included — but with its own hard deadline (Trio's `move_on_after(ms, shield=True)`).
 * Returns `fn`'s value, or `undefined` if it overran; an overrun is reported as
 * `QUIESCE_CLEANUP_OVERRUN`. Plain cleanup can already block in its cleanup window; this is
 * for the step that must survive a forced cancel. An outer cancellation is not hidden: it
 * raises again at the first checkpoint after it once its own window is over.
 * **Cancellation**: inside, only the deadline cancels (and it opens no further window).
 * @example
 * finally { await boundedCleanup(2000, () => conn.gracefulClose()); }
 */
export async function boundedCleanup<T>(
  ms: number,
  fn: () => T | PromiseLike<T>,
): Promise<T | undefined> {
  validMs('boundedCleanup', ms);
  const deadline = ms < 0 ? Number.POSITIVE_INFINITY : now() + ms;
  // Its deadline is a hard one: the overrun is cut without a further cleanup window.
  const handle = new Handle(deadline);
  handle.hard = true;
  const v = await scoped(deadline, true, call<T>, fn, handle);
  if (v === CAUGHT) {
    report({
      code: 'QUIESCE_CLEANUP_OVERRUN',
      message: `cleanup overran its ${ms} ms budget and was cancelled`,
      task: current().task?.name,
    });
    return undefined;
  }
  return v;
}

/**
 * An explicit checkpoint: raises the pending cancellation if the current code is unmasked and
 * inside a cancelled scope (outside its cleanup window); otherwise lets other work run for one
 * microtask turn — or one turn of the event loop once the current synchronous stretch has run
 * for a few ms, so timers, signals and I/O are never starved by a loop of checkpoints.
 * **Cancellation**: a non-blocking checkpoint, so it never raises under `mask`.
 * @example
 * for (const row of rows) { await checkpoint(); process(row); }
 */
export function checkpoint(): Promise<void> {
  return checkpointNow();
}

/**
 * Waits `ms` milliseconds on the library clock. `sleep(Infinity)` waits until cancelled.
 * **Cancellation**: a blocking checkpoint (interruptible under `mask`).
 * @example
 * await sleep(100);
 */
export function sleep(ms: number): Promise<void> {
  validMs('sleep', ms);
  if (ms <= 0) return checkpoint();
  if (ms === Number.POSITIVE_INFINITY) return block<void>(() => {});
  return block<void>((w) => {
    const d = addDeadline(now() + ms, () => w.commit());
    return () => removeDeadline(d);
  });
}

/** Waits until the absolute clock time `deadline` (see `sleep`). */
export function sleepUntil(deadline: number): Promise<void> {
  validMs('sleepUntil', deadline);
  return sleep(deadline - now());
}

/**
 * The current scope's AbortSignal, for foreign APIs (`fetch`, `timers/promises`, streams): it
 * aborts, with the `Cancelled` error as reason, when the scope is cancelled. One lazily created
 * controller per scope. Under `uninterruptibleMask` it is a signal that never aborts.
 * @example
 * const res = await adopt(fetch(url, { signal: currentSignal() }));
 */
export function currentSignal(): AbortSignal {
  return signalOf(current());
}

/**
 * Runs `fn` under an external AbortSignal: when `signal` aborts, the scope running `fn` is
 * cancelled (so every `finally` runs) and `withSignal` rejects with `signal.reason`. The
 * listener is removed when `fn` settles.
 * **Cancellation**: outer cancellations pass through unchanged.
 * @example
 * app.get('/report', (req, res) => withSignal(req.signal, () => buildReport()));
 */
export async function withSignal<T>(signal: AbortSignal, fn: () => T | PromiseLike<T>): Promise<T> {
  if (!(signal instanceof AbortSignal)) {
    throw new ArgumentError('withSignal(signal, fn): signal must be an AbortSignal');
  }
  if (signal.aborted) throw signal.reason;
  let scope: CancelScope | null = null;
  const onAbort = () => scope?.cancel({ kind: 'signal', reason: signal.reason, at: now() });
  signal.addEventListener('abort', onAbort, { once: true });
  const handle = new Handle(Number.POSITIVE_INFINITY);
  try {
    const v = await scoped(
      Number.POSITIVE_INFINITY,
      false,
      (h: Handle) => {
        scope = h.scope;
        return fn();
      },
      handle,
      handle,
    );
    if (v === CAUGHT) throw signal.reason;
    return v;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
