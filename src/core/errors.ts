/**
 * Every error the library throws is a class with a stable `code` (listed in docs/errors.md and
 * never reused). Two families:
 * 1. Asynchronous: `Cancelled` alone. It arrives because someone else asked (a cancel, a
 *    deadline, a signal); `isCancellation` is true for it and only for it. Catch-alls must
 *    rethrow it — `rethrowCancellation(e)` does that in one line.
 * 2. Synchronous: everything else, including `TaskCancelledError` (what a *waiter* on a
 *    cancelled task receives, so it can never be mistaken for the waiter's own cancellation)
 *    and `TimeoutError` (what the throwing timeout twins raise after their scope caught its own
 *    expiry).
 */

const kCancellation = Symbol.for('quiesce.cancellation');

/** Why a scope was cancelled: recorded once, at the first request. */
export interface CancelCause {
  /** What asked: `'cancel'` (an explicit call), `'deadline'`, `'signal'`, `'parent'`, `'shutdown'`. */
  readonly kind: 'cancel' | 'deadline' | 'signal' | 'parent' | 'shutdown';
  /** The reason given by whoever asked, if any. */
  readonly reason?: unknown;
  /** The name of the task that asked, when a task asked. */
  readonly by?: string;
  /** The deadline that expired (clock ms), for `kind: 'deadline'`. */
  readonly deadline?: number;
  /** When it was asked (clock ms). */
  readonly at: number;
}

/** Base class of every error the library throws; `code` is stable. */
export class QuiesceError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * The asynchronous error raised at a checkpoint inside a cancelled scope. Only the scope that
 * was cancelled catches it (a `timeout`, a `cancelScope`, a task boundary); everything else
 * must let it pass. `cancelCause` says who asked and why.
 */
export class Cancelled extends QuiesceError {
  readonly cancelCause: CancelCause;
  /** @internal the scope this cancellation belongs to; only that scope may catch it. */
  readonly origin: object;
  constructor(origin: object, cause: CancelCause) {
    super('ERR_CANCELLED', describeCause(cause));
    this.origin = origin;
    this.cancelCause = cause;
  }
  get [kCancellation](): true {
    return true;
  }
}

/** What `task.wait()` throws when the task ended by cancellation: an ordinary error. */
export class TaskCancelledError extends QuiesceError {
  readonly cancelCause: CancelCause;
  constructor(taskName: string, cause: CancelCause) {
    super('ERR_TASK_CANCELLED', `task ${taskName} was cancelled: ${describeCause(cause)}`);
    this.cancelCause = cause;
  }
}

/** `spawn` from the context of a task that has finished: the child could outlive it. */
export class TaskFinishedError extends QuiesceError {
  constructor(parent: string) {
    super(
      'ERR_TASK_FINISHED',
      `task ${parent} has finished, so it cannot start a child (a child never outlives its parent); spawn from a live task or a TaskGroup it owns`,
    );
  }
}

/** What the throwing timeout twins raise when the time ran out: an ordinary error. */
export class TimeoutError extends QuiesceError {
  constructor(ms?: number) {
    super('ERR_TIMEOUT', ms === undefined ? 'deadline expired' : `timed out after ${ms} ms`);
  }
}

/** `spawn` on a task group that no longer accepts children. */
export class GroupClosedError extends QuiesceError {
  constructor(name: string) {
    super('ERR_GROUP_CLOSED', `task group ${name} is closed and accepts no new task`);
  }
}

/** A user mistake in an argument: says which argument and what was expected. */
export class ArgumentError extends QuiesceError {
  constructor(message: string) {
    super('ERR_INVALID_ARGUMENT', message);
  }
}

/**
 * True for a cancellation (an asynchronous error) and for nothing else. Works across copies of
 * the library in one process.
 * @example
 * try { await work(); } catch (e) { if (isCancellation(e)) throw e; log(e); }
 */
export function isCancellation(e: unknown): e is Cancelled {
  return (
    typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[kCancellation] === true
  );
}

/**
 * Rethrows `e` if it is a cancellation; does nothing otherwise. The first line of every
 * catch-all (rule 3: never eat someone else's asynchronous exception).
 * @example
 * try { await work(); } catch (e) { rethrowCancellation(e); log(e); }
 */
export function rethrowCancellation(e: unknown): void {
  if (isCancellation(e)) throw e;
}

/** A settled outcome, as `task.result()` and `attempt` return it. */
export type Result<T> = { ok: true; value: T } | { ok: false; error: unknown };

/**
 * Runs `fn` and returns its outcome as a `Result`, catching only synchronous errors: a
 * cancellation passes through untouched.
 * **Cancellation**: not a checkpoint itself; rethrows any cancellation `fn` raises.
 * @example
 * const r = await attempt(() => readConfig());
 * if (!r.ok) useDefaults();
 */
export async function attempt<T>(fn: () => T | PromiseLike<T>): Promise<Result<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    rethrowCancellation(error);
    return { ok: false, error };
  }
}

/** @internal a one-line human description of a cause, for error messages. */
export function describeCause(c: CancelCause): string {
  switch (c.kind) {
    case 'deadline':
      return 'deadline expired';
    case 'parent':
      return 'its parent finished';
    case 'signal':
      return `signal ${String(c.reason ?? 'aborted')}`;
    default: {
      const why = c.reason === undefined ? '' : `: ${String(c.reason)}`;
      return `${c.kind === 'shutdown' ? 'shutdown' : 'cancelled'}${c.by ? ` by ${c.by}` : ''}${why}`;
    }
  }
}
