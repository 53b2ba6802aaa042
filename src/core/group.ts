/**
 * Task groups (nurseries) and the combinators built on them.
 *
 * Guarantees, and who keeps them:
 * 1. `spawn` registers the child before it returns; after `close()` it throws — so a shutdown
 *    that closes the group and then waits can never miss a child (no child can start after
 *    the shutdown's check).
 * 2. `wait()` returns only when every child is done, including children spawned while waiting.
 * 3. Fail-fast: the first ordinary error of a child cancels its siblings and is what `wait()`
 *    throws. Supervise: errors go to `onError` and the group lives on.
 * 4. `race`: the losers are cancelled *and awaited* before it returns.
 */
import { now } from './clock.ts';
import {
  CancelScope,
  type Ctx,
  cleanupMsOption,
  current,
  raise,
  runIn,
  type TaskLike,
  UNINTERRUPTIBLE,
} from './context.ts';
import { report } from './diagnostics.ts';
import {
  ArgumentError,
  GroupClosedError,
  isCancellation,
  QuiesceError,
  type Result,
} from './errors.ts';
import { spawnIn, type Task } from './task.ts';

/** Options for a task group. */
export interface TaskGroupOptions {
  /** A name for diagnostics. */
  name?: string;
  /**
   * How long a child's cleanup may run once a cancellation is delivered in it, in ms (see
   * `spawn`). Default: inherited from the creating scope (5000 at the top).
   */
  cleanupTimeoutMs?: number;
  /**
   * `'fail-fast'` (default): a child's error cancels the others and is rethrown by `wait()`.
   * `'supervise'`: a child's error goes to `onError`; the group and its siblings live on.
   */
  policy?: 'fail-fast' | 'supervise';
  /** Where a supervised child's error goes. Default: a `QUIESCE_HANDLER_ERROR` diagnostic. */
  onError?: (error: unknown, task: Task<unknown>) => void;
  /**
   * Cancelling the scope that created the group does not reach the children; only
   * `group.cancel()` does. For servers that drain on their own terms. Default: false.
   */
  shield?: boolean;
}

let groupIds = 1;

/**
 * A set of child tasks with one lifetime. Children are children of the task that created the
 * group, so they never outlive it; `await using` closes the group and waits for them.
 * @example
 * await using group = new TaskGroup({ policy: 'supervise' });
 * group.spawn(() => serveConnection(conn));
 */
export class TaskGroup implements AsyncDisposable {
  readonly name: string;
  readonly #policy: 'fail-fast' | 'supervise';
  readonly #onError: TaskGroupOptions['onError'];
  /** @internal */
  readonly scope: CancelScope;
  // Children belong to the task that created the group, whoever calls spawn, so a child that
  // spawns a sibling does not become its parent (and does not outlive-check it).
  readonly #owner: TaskLike | null;
  readonly #ctx: Ctx;
  // Created on the first spawn: most groups of a server's requests never spawn a child.
  #tasks: Set<Task<unknown>> | null = null;
  #closed = false;
  /** @internal `withTaskGroup`'s body runs in the group's scope, which must stay linked. */
  bodyRunning = false;
  #failed = false;
  #error: unknown;
  #idle: (() => void) | null = null;
  /** @internal names a child spawned without a name, on first read of its name. */
  nameChild: ((t: Task<unknown>) => string) | null = null;
  /**
   * @internal runs in each child once its body settled, before its children are settled and
   * it finishes; the child's outcome becomes what it resolves to. For work every child does
   * last (a server closing its connection), without a reaction and a promise more per child.
   */
  afterBody: ((t: Task<unknown>, r: Result<unknown>) => PromiseLike<Result<unknown>>) | null = null;

  constructor(options?: TaskGroupOptions) {
    const policy = options?.policy ?? 'fail-fast';
    if (policy !== 'fail-fast' && policy !== 'supervise') {
      throw new ArgumentError(
        `TaskGroup: policy must be 'fail-fast' or 'supervise', got ${policy}`,
      );
    }
    this.name = options?.name ?? `group-${groupIds++}`;
    this.#policy = policy;
    this.#onError = options?.onError;
    const ctx = current();
    this.scope = new CancelScope(ctx.scope, options?.shield === true);
    const ms = cleanupMsOption('TaskGroup', options?.cleanupTimeoutMs);
    if (ms !== undefined) this.scope.cleanupMs = ms;
    this.#owner = ctx.task;
    this.#ctx = ctx;
  }

  /** How many children are running. */
  get size(): number {
    return this.#tasks === null ? 0 : this.#tasks.size;
  }

  /** True once `close()` or `cancel()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The running children. */
  get tasks(): ReadonlySet<Task<unknown>> {
    return (this.#tasks ??= new Set());
  }

  /**
   * Starts `fn` as a child of the group, registered before this returns. Throws
   * `GroupClosedError` once the group is closed.
   * **Cancellation**: not a checkpoint; never blocks.
   */
  spawn<T>(
    fn: () => T | PromiseLike<T>,
    options?: { name?: string; cleanupTimeoutMs?: number },
  ): Task<T> {
    if (this.#closed) throw new GroupClosedError(this.name);
    if (typeof fn !== 'function') throw new ArgumentError('group.spawn(fn): fn must be a function');
    const ctx = current();
    const t = spawnIn(
      { task: this.#owner, scope: this.scope, mask: ctx.mask },
      this.scope,
      fn,
      options?.name,
      cleanupMsOption('group.spawn', options?.cleanupTimeoutMs),
      this,
    );
    (this.#tasks ??= new Set()).add(t);
    t.observe();
    return t;
  }

  /**
   * @internal `spawn` for a body that takes an argument: `fn(arg)` runs as the child, and
   * `arg` is the child's `arg` while it runs. One `fn` can then serve every child, where a
   * closure per child would be kept alive as long as the child.
   */
  spawnWith<A, T>(fn: (arg: A) => T | PromiseLike<T>, arg: A): Task<T> {
    if (this.#closed) throw new GroupClosedError(this.name);
    const t = spawnIn(
      { task: this.#owner, scope: this.scope, mask: current().mask },
      this.scope,
      fn,
      undefined,
      undefined,
      this,
      arg,
    );
    (this.#tasks ??= new Set()).add(t);
    t.observe();
    return t;
  }

  /**
   * @internal a child is done: called by the child a microtask after it finished, and run in
   * the context that created the group (a finished child's own context could spawn nothing).
   */
  childDone(t: Task<unknown>): void {
    runIn(this.#ctx, (c: Task<unknown>) => this.#childDone(c), t);
  }

  #childDone(t: Task<unknown>): void {
    this.#tasks!.delete(t);
    const r = t.outcome!;
    if (!r.ok && !t.endedCancelled) {
      if (this.#policy === 'fail-fast') {
        if (!this.#failed) {
          this.#failed = true;
          this.#error = r.error;
          this.scope.cancel({ kind: 'cancel', reason: r.error, by: t.name, at: now() });
        }
      } else if (this.#onError) {
        try {
          this.#onError(r.error, t);
        } catch (e) {
          report({
            code: 'QUIESCE_HANDLER_ERROR',
            message: `onError of ${this.name} threw`,
            error: e,
          });
        }
      } else {
        report({
          code: 'QUIESCE_HANDLER_ERROR',
          message: `task ${t.name} of group ${this.name} failed`,
          task: t.name,
          error: r.error,
        });
      }
    }
    if (this.#tasks!.size === 0) {
      // A closed, idle group can never run anything again: leave the scope tree.
      if (this.#closed && !this.bodyRunning) this.scope.close();
      if (this.#idle) {
        const f = this.#idle;
        this.#idle = null;
        f();
      }
    }
  }

  /** Refuses new children from now on; running ones go on. Idempotent. */
  close(): void {
    this.#closed = true;
    if (this.size === 0 && !this.bodyRunning) this.scope.close();
  }

  /** @internal waits until no child runs; not a checkpoint, never rejects. */
  idle(): Promise<void> {
    if (this.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const prev = this.#idle;
      this.#idle = () => {
        prev?.();
        resolve();
      };
    });
  }

  /**
   * Waits until every child is done (also those spawned meanwhile). Fail-fast groups then
   * throw the first child error.
   * **Cancellation**: not a checkpoint — it waits for the children, which a cancellation of
   * the caller cancels too when the group lives in the caller's scope.
   */
  async wait(): Promise<void> {
    await this.idle();
    if (this.#failed) throw this.#error;
  }

  /**
   * Closes the group, cancels every child and waits until all are done, cleanups included
   * (each bounded by its cleanup window; `{ force: true }`: no window).
   * Never throws the children's errors (supervised ones still go to `onError`).
   */
  async cancel(reason?: unknown, options?: { force?: boolean }): Promise<void> {
    this.#closed = true;
    this.scope.cancel(
      { kind: 'cancel', reason, by: current().task?.name, at: now() },
      options?.force === true,
    );
    await this.idle();
    if (!this.bodyRunning) this.scope.close();
  }

  /** @internal the first child failure of a fail-fast group, if any. */
  failure(): { error: unknown } | null {
    return this.#failed ? { error: this.#error } : null;
  }

  /**
   * @internal how a nursery ends: children may spawn siblings until the group is idle, then
   * it closes (in the same turn, so no spawn slips in between). A fail-fast failure is thrown
   * — unless the caller is itself being cancelled, which must never be hidden by a child's
   * error: then the cancellation is raised and the failure reported.
   */
  async settle(): Promise<void> {
    const ctx = current();
    for (;;) {
      await this.idle();
      if (this.size === 0) break;
    }
    this.dispose();
    if (!this.#failed) return;
    const origin = ctx.scope.raising;
    if (origin && ctx.mask !== UNINTERRUPTIBLE) {
      suppressed(this.#error, this.name);
      throw raise(origin, ctx);
    }
    throw this.#error;
  }

  /** @internal ends the group's scope once it is idle. */
  dispose(): void {
    this.#closed = true;
    this.scope.close();
  }

  /**
   * Waits for the children — which may still spawn siblings — then closes the group
   * (`await using`). Throws a fail-fast failure.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.settle();
  }
}

/**
 * Runs `fn` with a fresh task group and returns its value once every child is done (a
 * nursery; children may spawn siblings until then). In a fail-fast group a child's error
 * cancels `fn` and the siblings and is rethrown — unless the caller is itself being
 * cancelled, which a child's error never hides; if `fn` throws, the children are cancelled
 * and awaited before it propagates.
 * If the group is cancelled with `group.cancel()` while `fn` runs, it returns `undefined`.
 * @example
 * await withTaskGroup(async (g) => {
 *   for (const url of urls) g.spawn(() => download(url));
 * });
 */
export async function withTaskGroup<T>(
  fn: (group: TaskGroup) => T | PromiseLike<T>,
  options?: TaskGroupOptions,
): Promise<T | undefined> {
  const g = new TaskGroup(options);
  const ctx = current();
  let value: T;
  g.bodyRunning = true;
  try {
    value = await runIn({ task: ctx.task, scope: g.scope, mask: ctx.mask }, fn, g);
  } catch (e) {
    g.bodyRunning = false;
    await g.cancel();
    g.dispose();
    const own = isCancellation(e) && e.origin === g.scope;
    const failure = g.failure();
    if (own) {
      // Cancelled by a child's failure: that failure is what propagates.
      if (failure) throw failure.error;
      return undefined;
    }
    if (failure) suppressed(failure.error, g.name);
    throw e;
  }
  g.bodyRunning = false;
  await g.settle();
  return value;
}

function suppressed(error: unknown, group: string): void {
  report({
    code: 'QUIESCE_SUPPRESSED_ERROR',
    message: `a task of group ${group} failed while a cancellation was propagating`,
    error,
  });
}

type Fn<T> = () => T | PromiseLike<T>;

/**
 * A combinator whose children were all cancelled from outside has no result: the caller's own
 * cancellation is what must propagate (it blocked, so even under `mask` it is interruptible).
 */
function raiseCallerCancellation(what: string): never {
  const ctx = current();
  const origin = ctx.scope.raising ?? ctx.scope.cancelledBy;
  if (origin) throw raise(origin, ctx);
  throw new QuiesceError(
    'ERR_CANCELLED_CHILDREN',
    `${what}: its tasks were cancelled before any finished`,
  );
}

/**
 * Runs every function concurrently and returns the first outcome — value or error — after
 * cancelling the others and waiting until they are done.
 * @example
 * const answer = await race([() => askPrimary(q), () => sleep(50).then(() => askReplica(q))]);
 */
export async function race<T>(fns: readonly Fn<T>[]): Promise<T> {
  if (!Array.isArray(fns) || fns.length === 0) {
    throw new ArgumentError('race(fns): fns must be a non-empty array of functions');
  }
  let winner: { ok: true; value: T } | { ok: false; error: unknown } | null = null;
  await withTaskGroup(
    (g) => {
      for (const f of fns) {
        g.spawn(async () => {
          try {
            const value = await f();
            winner ??= { ok: true, value };
          } catch (error) {
            // A loser failing in its cleanup after the race was decided (or after the caller
            // was cancelled) is no outcome: it goes to onError, reported, never the result.
            if (isCancellation(error) || winner || current().scope.cancelledBy) throw error;
            winner = { ok: false, error };
          }
          g.scope.cancel({ kind: 'cancel', reason: 'race decided', at: now() });
        });
      }
    },
    { policy: 'supervise', onError: (e) => suppressed(e, 'race') },
  );
  if (!winner) raiseCallerCancellation('race');
  const w = winner as { ok: true; value: T } | { ok: false; error: unknown };
  if (w.ok) return w.value;
  throw w.error;
}

/**
 * Runs every function concurrently and returns all values in order; the first error cancels
 * the rest, waits for them, and is rethrown.
 * @example
 * const [user, orders] = await all([() => getUser(id), () => getOrders(id)]);
 */
export async function all<T extends readonly Fn<unknown>[]>(
  fns: T,
): Promise<{ -readonly [K in keyof T]: Awaited<ReturnType<T[K]>> }> {
  if (!Array.isArray(fns)) throw new ArgumentError('all(fns): fns must be an array of functions');
  const out = new Array(fns.length);
  let done = 0;
  await withTaskGroup((g) => {
    fns.forEach((f, i) => {
      g.spawn(async () => {
        out[i] = await f();
        done++;
      });
    });
  });
  if (done < fns.length) raiseCallerCancellation('all');
  return out as { -readonly [K in keyof T]: Awaited<ReturnType<T[K]>> };
}

/** Runs two functions concurrently and returns both values (`all` for a pair). */
export function concurrently<A, B>(a: Fn<A>, b: Fn<B>): Promise<[A, B]> {
  return all([a, b] as const) as Promise<[A, B]>;
}
