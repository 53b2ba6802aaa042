/**
 * Tasks: async functions with an identity, a parent, and a cancellation scope.
 *
 * Guarantees, and who keeps them:
 * 1. No task outlives its parent: when a body settles, its running children are cancelled and
 *    awaited before its own outcome is delivered (`endBody`).
 * 2. `cancel()` returns only when the task is done, finalizers and adopted promises included;
 *    it is idempotent and a no-op on a finished task.
 * 3. A waiter never receives a cancellation it could mistake for its own: a task that ended
 *    cancelled is reported to `wait()` as an ordinary `TaskCancelledError`.
 * 4. A child is registered with its parent synchronously inside `spawn`, before `spawn`
 *    returns — there is no window in which a parent can miss a child.
 */
import { now } from './clock.ts';
import {
  block,
  blockResult,
  CancelScope,
  type Ctx,
  cleanupMsOption,
  current,
  pendingCancellation,
  rejectCancelled,
  runIn,
  type TaskLike,
  type Waiter,
} from './context.ts';
import { report } from './diagnostics.ts';
import {
  ArgumentError,
  type CancelCause,
  isCancellation,
  type Result,
  TaskCancelledError,
  TaskFinishedError,
} from './errors.ts';

let nextId = 1;
// Live tasks form intrusive sibling lists (firstKid/nextSib/prevSib), rooted here for tasks
// without a parent: O(1) join and leave on every spawn, no hashing.
// Invariant: t is reachable from (t.parent?.firstKid ?? roots.firstKid) iff !t.done.
const roots = { firstKid: null as Task<unknown> | null };

/** What few tasks need (waiters, a `joined()` promise, adopted promises), made on first use. */
interface TaskRare {
  waiters: Waiter<Result<any>>[] | null;
  done: Promise<void> | null;
  resolveDone: (() => void) | null;
  adopted: Set<Promise<unknown>> | null;
}
// The bits of Task#bits.
const ENDED_CANCELLED = 1;
const OBSERVED = 2;

/** Options for `spawn`. */
export interface SpawnOptions {
  /** A name for diagnostics and the task-tree dump. Default: `task-<id>`. */
  name?: string;
  /**
   * How long the task's cleanup may run once a cancellation is delivered in it, in ms: until
   * then its `finally`, `catch` and release clauses can block (write, flush, `timeout`);
   * after it every checkpoint raises again. Default: inherited from the spawning scope (5000
   * at the top). 0: no window (every checkpoint raises at once).
   */
  cleanupTimeoutMs?: number;
}

/** Options for `task.cancel`. */
export interface CancelOptions {
  /**
   * A forced cancellation: no cleanup window — every checkpoint in the task raises from now
   * on, and a window already open closes at once. For a second Ctrl-C, or an overdue task.
   */
  force?: boolean;
}

/**
 * A running or finished task. Create one with `spawn`; `await using` cancels it at scope exit.
 */
export class Task<T> implements TaskLike, AsyncDisposable {
  readonly id: number;
  #name: string | undefined;
  readonly parent: Task<unknown> | null;
  /** @internal the task's root scope. */
  readonly scope: CancelScope;
  /** @internal */
  raisedFor: object | null = null;
  // `endedCancelled` and `#observed`, as bits of one field: every idle connection has a task.
  #bits = 0;
  /** @internal the body itself ended by a cancellation (not by someone else's error). */
  get endedCancelled(): boolean {
    return (this.#bits & ENDED_CANCELLED) !== 0;
  }
  set endedCancelled(v: boolean) {
    this.#bits = v ? this.#bits | ENDED_CANCELLED : this.#bits & ~ENDED_CANCELLED;
  }
  /** @internal the body, until it starts. */
  body: ((arg?: any) => T | PromiseLike<T>) | null = null;
  /**
   * @internal what the body is called with (`spawnIn`'s `arg`): code running in the task
   * finds it through `currentTask()` instead of a closure.
   */
  arg: unknown = undefined;
  /** @internal first running child (intrusive list, see `roots`). */
  firstKid: Task<unknown> | null = null;
  /** @internal */
  nextSib: Task<unknown> | null = null;
  /** @internal */
  prevSib: Task<unknown> | null = null;
  #outcome: Result<T> | null = null;
  get #observed(): boolean {
    return (this.#bits & OBSERVED) !== 0;
  }
  set #observed(v: boolean) {
    this.#bits = v ? this.#bits | OBSERVED : this.#bits & ~OBSERVED;
  }
  #rare: TaskRare | null = null;
  #r(): TaskRare {
    return (this.#rare ??= { waiters: null, done: null, resolveDone: null, adopted: null });
  }
  /** @internal foreign promises adopted by this task, awaited before it finishes. */
  get adopted(): Set<Promise<unknown>> | null {
    return this.#rare === null ? null : this.#rare.adopted;
  }
  set adopted(v: Set<Promise<unknown>> | null) {
    if (v !== null || this.#rare !== null) this.#r().adopted = v;
  }
  /** @internal the group told when this task is done (a microtask after it is). */
  group: {
    childDone(t: Task<unknown>): void;
    nameChild?: ((t: Task<unknown>) => string) | null;
    afterBody?: ((t: Task<unknown>, r: Result<unknown>) => PromiseLike<Result<unknown>>) | null;
  } | null = null;

  /** @internal use `spawn`. */
  constructor(
    parent: Task<unknown> | null,
    parentScope: CancelScope,
    name: string | undefined,
    cleanupMs: number | undefined,
  ) {
    this.id = nextId++;
    this.#name = name;
    this.parent = parent;
    this.scope = new CancelScope(parentScope);
    if (cleanupMs !== undefined) this.scope.cleanupMs = cleanupMs;
    const list: { firstKid: Task<unknown> | null } = parent ?? roots;
    const head = list.firstKid;
    this.nextSib = head;
    if (head) head.prevSib = this as Task<unknown>;
    list.firstKid = this as Task<unknown>;
  }

  /** The name given to `spawn`, or `task-<id>` (built on first read: spawn stays cheap). */
  get name(): string {
    if (this.#name === undefined) this.#name = this.group?.nameChild?.(this) ?? `task-${this.id}`;
    return this.#name;
  }

  /** The running children, in no particular order (a fresh array: for diagnostics). */
  get children(): Task<unknown>[] {
    const out: Task<unknown>[] = [];
    for (let k = this.firstKid; k; k = k.nextSib) out.push(k);
    return out;
  }

  /** @internal how many waiters (wait, result, cancel, select) are registered. */
  get waiting(): number {
    return this.#rare?.waiters?.length ?? 0;
  }

  /** True once the task, its children and its finalizers are all done. */
  get done(): boolean {
    return this.#outcome !== null;
  }

  /**
   * The task's value; rethrows its error; throws `TaskCancelledError` if it was cancelled.
   * **Cancellation**: a checkpoint; blocks until the task is done; interruptible under `mask`.
   * Being cancelled while waiting leaves the task running.
   */
  wait(): Promise<T> {
    this.#observed = true;
    const r = this.#outcome;
    if (r) {
      const e = pendingCancellation();
      if (e) return rejectCancelled(e);
      return r.ok ? Promise.resolve(r.value) : Promise.reject(r.error);
    }
    return blockResult<T>((w) => this.#addWaiter(w));
  }

  /**
   * The task's outcome as `{ ok, value }` or `{ ok: false, error }`: never throws the task's
   * error (a cancelled task gives a `TaskCancelledError`). It does raise the *caller's* own
   * cancellation, like every checkpoint — swallowing that would break the caller's scope.
   * **Cancellation**: a checkpoint; blocks until the task is done.
   */
  result(): Promise<Result<T>> {
    this.#observed = true;
    if (this.#outcome) {
      const e = pendingCancellation();
      return e ? rejectCancelled(e) : Promise.resolve(this.#outcome);
    }
    return block<Result<T>>((w) => this.#addWaiter(w));
  }

  #addWaiter(w: Waiter<Result<T>>): () => void {
    const ws: Waiter<Result<T>>[] = (this.#r().waiters ??= []);
    ws.push(w);
    // An interrupted waiter leaves the list at once, so waits that time out do not pile up.
    return () => {
      const i = ws.indexOf(w);
      if (i >= 0) ws.splice(i, 1);
    };
  }

  /**
   * Requests cancellation and waits until the task is done, finalizers included (like
   * Haskell's synchronous `throwTo` followed by `waitCatch`). A no-op on a finished task;
   * idempotent; any number of cancellers may wait. The cancellation is delivered once, at
   * the task's next checkpoint; its cleanup then runs normally for up to its
   * `cleanupTimeoutMs` (default 5000), after which every checkpoint raises again.
   * `{ force: true }` skips (or ends) that window.
   * **Cancellation**: the wait is a checkpoint; if the caller is itself cancelled while
   * waiting it stops waiting (the request stands).
   * @example
   * await task.cancel('shutting down');
   * await task.cancel('overdue', { force: true }); // cleanup too is cut at its next checkpoint
   */
  async cancel(reason?: unknown, options?: CancelOptions): Promise<void> {
    if (this.#outcome) return;
    const by = current().task?.name;
    this.scope.cancel({ kind: 'cancel', reason, by, at: now() }, options?.force === true);
    await block<unknown>((w) => this.#addWaiter(w));
  }

  /**
   * Cancels the task and waits for it, finalizers included: `await using t = spawn(...)`.
   * Unlike `cancel()` the wait is not a checkpoint — leaving a `using` block in a cancelled
   * scope must still wait for the child (Haskell's `withAsync` uses `uninterruptibleCancel`).
   */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#outcome) return;
    this.scope.cancel({ kind: 'cancel', reason: 'disposed', by: current().task?.name, at: now() });
    await this.joined();
  }

  /** @internal resolves when the task is done; never rejects; not a checkpoint. */
  joined(): Promise<void> {
    if (this.#outcome) return Promise.resolve();
    const rare = this.#r();
    rare.done ??= new Promise<void>((r) => {
      rare.resolveDone = r;
    });
    return rare.done;
  }

  /** @internal the outcome as waiters see it (a cancellation is a TaskCancelledError), or null while running. */
  get outcome(): Result<T> | null {
    return this.#outcome;
  }

  /** @internal */
  finish(raw: Result<T>): void {
    this.endedCancelled = !raw.ok && isCancellation(raw.error);
    const r: Result<T> =
      !raw.ok && isCancellation(raw.error)
        ? { ok: false, error: new TaskCancelledError(this.name, raw.error.cancelCause) }
        : raw;
    // Swallowed: the cancellation that reaches the task's own scope was raised inside it, and
    // the body still returned normally.
    if (raw.ok && this.scope.cancelledBy && this.raisedFor === this.scope.cancelledBy) {
      report({
        code: 'QUIESCE_SWALLOWED_CANCELLATION',
        message: `task ${this.name} was cancelled but swallowed the cancellation and finished normally`,
        task: this.name,
      });
    }
    this.#outcome = r;
    this.scope.close();
    const list: { firstKid: Task<unknown> | null } = this.parent ?? roots;
    if (this.prevSib) this.prevSib.nextSib = this.nextSib;
    else if (list.firstKid === (this as Task<unknown>)) list.firstKid = this.nextSib;
    if (this.nextSib) this.nextSib.prevSib = this.prevSib;
    this.nextSib = this.prevSib = null;
    const rare = this.#rare;
    const ws: Waiter<Result<T>>[] | null = rare === null ? null : rare.waiters;
    if (rare !== null) rare.waiters = null;
    if (ws) for (const w of ws) w.commit(r);
    // Queued where a reaction to `joined()` would be: the group learns of it in the same
    // microtask turn as before, without a promise and two closures held per idle child.
    const g = this.group;
    if (g) queueMicrotask(() => g.childDone(this as Task<unknown>));
    this.#rare?.resolveDone?.();
    if (!r.ok && !this.endedCancelled && !this.#observed && !ws) {
      this.#reportIfUnobserved(r.error);
    }
  }

  #reportIfUnobserved(error: unknown): void {
    // Give whoever holds the task one turn of the loop to look at the outcome.
    setImmediate(() => {
      if (this.#observed) return;
      report({
        code: 'QUIESCE_UNOBSERVED_TASK_ERROR',
        message: `task ${this.name} failed and nobody waited for it`,
        task: this.name,
        error,
      });
    });
  }

  /** @internal marks the outcome as looked at (groups and joins do). */
  observe(): void {
    this.#observed = true;
  }

  /** @internal registers a waiter for the outcome (used by `select`). */
  onDone(w: Waiter<Result<T>>): () => void {
    this.#observed = true;
    if (this.#outcome) {
      w.commit(this.#outcome);
      return () => {};
    }
    return this.#addWaiter(w);
  }
}

/**
 * Starts `t`'s body in `t`'s context. Not an async function: an idle task then holds no
 * suspended frame of its own, only one reaction on its body's promise. The reaction's
 * callbacks are shared: they run in the context current when `then` was called (the task's,
 * as `runIn` entered it), so `current().task` is `t` there.
 */
function runTask<T>(t: Task<T>): void {
  const fn = t.body!;
  t.body = null;
  let v: T | PromiseLike<T>;
  try {
    v = t.arg === undefined ? fn() : fn(t.arg);
  } catch (error) {
    endBody(t, { ok: false, error });
    return;
  }
  Promise.resolve(v).then(bodyReturned, bodyThrew);
}

function bodyReturned(value: unknown): void {
  endBody(current().task as Task<unknown>, { ok: true, value });
}

function bodyThrew(error: unknown): void {
  endBody(current().task as Task<unknown>, { ok: false, error });
}

function endBody<T>(t: Task<T>, r: Result<T>): void {
  const after = t.group?.afterBody;
  if (after) {
    after(t as Task<unknown>, r).then(
      (r2) => settleBody(t, r2 as Result<T>),
      (error: unknown) => settleBody(t, { ok: false, error }),
    );
  } else {
    settleBody(t, r);
  }
}

function settleBody<T>(t: Task<T>, r: Result<T>): void {
  if (t.firstKid || t.adopted?.size) settleChildren(t).then(() => t.finish(r));
  else t.finish(r);
}

/** Cancels a finished body's children and adopted work, and waits for all of it. */
async function settleChildren(t: Task<unknown>): Promise<void> {
  while (t.firstKid || t.adopted?.size) {
    if (t.firstKid) {
      const cause: CancelCause = { kind: 'parent', by: t.name, at: now() };
      const kids = t.children;
      for (const c of kids) c.scope.cancel(cause);
      await Promise.all(kids.map((c) => c.joined()));
    }
    if (t.adopted?.size) await Promise.all([...t.adopted]);
  }
}

/**
 * Starts `fn` as a task, a child of the current task (or a root task outside any task).
 * The child is registered before `spawn` returns, inherits the current masking state (so a
 * task spawned inside `mask` is born masked), and its scope is a child of the current scope.
 * **Cancellation**: not a checkpoint; never blocks.
 * @example
 * const t = spawn(async () => { await sleep(10); return 42; });
 * console.log(await t.wait()); // 42
 */
export function spawn<T>(fn: () => T | PromiseLike<T>, options?: SpawnOptions): Task<T> {
  if (typeof fn !== 'function') throw new ArgumentError('spawn(fn): fn must be a function');
  const ctx = current();
  const ms = options?.cleanupTimeoutMs;
  return spawnIn(
    ctx,
    ctx.scope,
    fn,
    options?.name,
    ms === undefined ? undefined : cleanupMsOption('spawn', ms),
  );
}

/** @internal spawns with an explicit parent scope (task groups use their own scope). */
export function spawnIn<T>(
  ctx: Ctx,
  parentScope: CancelScope,
  fn: (arg: any) => T | PromiseLike<T>,
  name: string | undefined,
  cleanupMs?: number,
  group?: Task<T>['group'],
  arg?: unknown,
): Task<T> {
  const parent = ctx.task as Task<unknown> | null;
  // A callback that captured a finished task's context (a timer, an event handler) must not
  // start a child the finished parent can no longer wait for.
  if (parent?.done) throw new TaskFinishedError(parent.name);
  const t = new Task<T>(parent, parentScope, name, cleanupMs);
  t.body = fn;
  t.arg = arg;
  if (group) t.group = group;
  runIn({ task: t, scope: t.scope, mask: ctx.mask }, runTask<T>, t);
  return t;
}

/** The task running the current code, or null outside any task. */
export function currentTask(): Task<unknown> | null {
  return current().task as Task<unknown> | null;
}

/** Options for `adopt`. */
export interface AdoptOptions {
  /**
   * What the owning task does with the promise if it finishes first (say, cancelled):
   * `'wait'` (default) keeps it from finishing until the promise settles; `'abandon'` lets it
   * finish at once and reports a `QUIESCE_ABANDONED_PROMISE` diagnostic.
   */
  onExit?: 'wait' | 'abandon';
}

/**
 * Awaits a foreign promise as a checkpoint: a cancellation interrupts the wait at once, while
 * the promise itself is tracked so the task (and so `cancel()`) does not finish before it has
 * settled — unless `onExit: 'abandon'`, which is reported.
 * **Cancellation**: a blocking checkpoint. Pass `currentSignal()` to the foreign API as well
 * so it can stop its own work.
 * @example
 * const res = await adopt(fetch(url, { signal: currentSignal() }));
 */
export function adopt<T>(promise: PromiseLike<T>, options?: AdoptOptions): Promise<T> {
  const task = currentTask();
  let isSettled = false;
  const settled = Promise.resolve(promise).then(
    (value): Result<T> => {
      isSettled = true;
      return { ok: true, value };
    },
    (error): Result<T> => {
      isSettled = true;
      return { ok: false, error };
    },
  );
  if (task && options?.onExit === 'abandon') {
    task.joined().then(() => {
      if (isSettled) return;
      report({
        code: 'QUIESCE_ABANDONED_PROMISE',
        message: `task ${task.name} finished and abandoned a pending promise`,
        task: task.name,
      });
    });
  } else if (task) {
    const tracked: Promise<void> = settled.then(() => {
      task.adopted?.delete(tracked);
    });
    (task.adopted ??= new Set()).add(tracked);
  }
  return block<Result<T>>((w) => {
    settled.then((r) => w.commit(r));
  }).then((r) => {
    if (r.ok) return r.value;
    throw r.error;
  });
}

/**
 * A text dump of every live task, indented by parentage, with each task's state.
 * @example
 * console.error(dumpTasks());
 */
export function dumpTasks(): string {
  const lines: string[] = [];
  const walk = (t: Task<unknown>, depth: number) => {
    const c = t.scope.cancelledBy?.cause ?? t.scope.cause;
    const state = c ? `cancelling (${c.kind}${c.by ? ` by ${c.by}` : ''})` : 'running';
    lines.push(`${'  '.repeat(depth)}#${t.id} ${t.name} ${state}`);
    for (let k = t.firstKid; k; k = k.nextSib) walk(k, depth + 1);
  };
  for (let t = roots.firstKid; t; t = t.nextSib) walk(t, 0);
  return lines.join('\n');
}

/** How many tasks are alive, for leak checks. */
export function liveTaskCount(): number {
  let n = 0;
  const walk = (t: Task<unknown>) => {
    n++;
    for (let k = t.firstKid; k; k = k.nextSib) walk(k);
  };
  for (let t = roots.firstKid; t; t = t.nextSib) walk(t);
  return n;
}
