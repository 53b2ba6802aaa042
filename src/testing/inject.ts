import { AssertionError } from 'node:assert';
import { type Result, spawn, type Task } from '../core/index.ts';
import {
  type CancelScope,
  type Ctx,
  hooks,
  hostTimerActive,
  liveTaskCount,
  MASKED,
  pendingDeadlines,
  type TaskLike,
  UNINTERRUPTIBLE,
} from '../core/internal.ts';
import { flush } from './test-clock.ts';

/** What a leak check compares: live tasks, pending deadlines, and the host's active resources. */
export interface ResourceSnapshot {
  tasks: number;
  deadlines: number;
  hostTimer: boolean;
  resources: Record<string, number>;
}

/** Counts what could leak right now (see `assertNoLeaks`). */
export function snapshotResources(): ResourceSnapshot {
  const resources: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1;
  return {
    tasks: liveTaskCount(),
    deadlines: pendingDeadlines(),
    hostTimer: hostTimerActive(),
    resources,
  };
}

function diff(before: ResourceSnapshot, after: ResourceSnapshot): string[] {
  const out: string[] = [];
  if (after.tasks > before.tasks) out.push(`${after.tasks - before.tasks} task(s) still alive`);
  if (after.deadlines > before.deadlines) {
    out.push(`${after.deadlines - before.deadlines} deadline(s) still pending`);
  }
  if (after.hostTimer && !before.hostTimer) out.push('the shared host timer is still armed');
  for (const [k, n] of Object.entries(after.resources)) {
    const m = before.resources[k] ?? 0;
    if (n > m) out.push(`${n - m} more ${k}`);
  }
  return out;
}

/**
 * Throws an AssertionError naming what leaked since `before` (tasks, deadlines, host timers,
 * sockets, …). Waits up to `graceMs` of real time for resources that close asynchronously.
 * @example
 * const before = snapshotResources();
 * await scenario();
 * await assertNoLeaks(before);
 */
export async function assertNoLeaks(before: ResourceSnapshot, graceMs = 500): Promise<void> {
  const until = Date.now() + graceMs;
  for (;;) {
    await flush();
    const leaks = diff(before, snapshotResources());
    if (leaks.length === 0) return;
    if (Date.now() >= until) throw new AssertionError({ message: `leaked: ${leaks.join(', ')}` });
    await new Promise((r) => setTimeout(r, 10));
  }
}

function inTree(t: TaskLike | null, root: Task<unknown> | undefined): boolean {
  for (let x = t; x; x = x.parent) if (x === root) return true;
  return false;
}

/**
 * Whether a cancellation of `root` would land at a checkpoint in `ctx`: the code is not
 * shielded from `root`'s scope, and its mask lets this kind of checkpoint raise.
 */
function deliverable(ctx: Ctx, blocking: boolean, root: Task<unknown>): boolean {
  if (ctx.mask === UNINTERRUPTIBLE || (ctx.mask === MASKED && !blocking)) return false;
  for (let s: CancelScope | null = ctx.scope; s && s !== root.scope; s = s.parent) {
    if (s.shield) return false;
  }
  return true;
}

async function runCounting<T>(
  scenario: () => T | PromiseLike<T>,
  onCheckpoint: (n: number, root: Task<unknown>) => void,
  onlyDeliverable = false,
): Promise<{ count: number; outcome: Result<T> }> {
  let root: Task<T> | undefined;
  let count = 0;
  // An operation that first checks without blocking and then blocks, in one synchronous
  // stretch (select, a read that finds nothing), is one checkpoint: a cancellation injected at
  // the check is seen by the block too, so counting both would only add a redundant rerun.
  let polled: TaskLike | null = null;
  const prev = hooks.checkpoint;
  hooks.checkpoint = (ctx: Ctx, blocking: boolean) => {
    prev?.(ctx, blocking);
    const r = root as Task<unknown> | undefined;
    if (!r || !inTree(ctx.task, r)) return;
    if (blocking && polled !== null && polled === ctx.task) {
      polled = null;
      return;
    }
    if (onlyDeliverable && !deliverable(ctx, blocking, r)) return;
    if (!blocking) {
      polled = ctx.task;
      queueMicrotask(() => {
        polled = null;
      });
    }
    onCheckpoint(++count, r);
  };
  try {
    root = spawn(
      async () => {
        // Lets `root` be assigned before the scenario's first checkpoint.
        await null;
        return scenario();
      },
      { name: 'scenario' },
    );
    const outcome = await root.result();
    return { count, outcome };
  } finally {
    hooks.checkpoint = prev;
  }
}

/**
 * Asserts that `fn` passes through at least one checkpoint where a cancellation would land
 * (trio's `assert_checkpoints`): one that is masked or shielded away does not count, as an
 * operation that claims to be cancellable must give cancellation a place to land.
 * Returns the number of such checkpoints.
 * @example
 * await assertCheckpoints(() => chan.read());
 */
export async function assertCheckpoints(fn: () => unknown): Promise<number> {
  const { count, outcome } = await runCounting(fn, () => {}, true);
  if (!outcome.ok) throw outcome.error;
  if (count === 0) {
    throw new AssertionError({
      message: 'expected at least one checkpoint where a cancellation could land',
    });
  }
  return count;
}

/** Options for `injectCancellation`. */
export interface InjectionOptions<S> {
  /** Builds fresh state for one run (shared structures, counters). */
  setup: () => S | PromiseLike<S>;
  /** The code under test; it runs as a task, which the harness cancels. */
  scenario: (state: S) => unknown;
  /** Checked after every run; `k` is the checkpoint cancelled at, 0 for the clean run. */
  invariant: (state: S, outcome: Result<unknown>, k: number) => unknown;
  /** Refuse scenarios with more checkpoints than this. Default 2,000. */
  maxCheckpoints?: number;
  /** Real ms to wait for asynchronously closing resources before calling a leak. Default 500. */
  leakGraceMs?: number;
  /**
   * Inject forced cancellations (`task.cancel(reason, { force: true })`): no cleanup window,
   * every checkpoint after the injected one raises too. Default false: the injected
   * cancellation is delivered once and the scenario's cleanup runs in its window, as after an
   * ordinary `cancel()`. Run both to cover both rules.
   */
  force?: boolean;
}

/**
 * The cancellation-injection harness: runs `scenario` once to count its checkpoints (N), then
 * N more times, cancelling the scenario's task at checkpoint 1, 2, … N — delivered once, so
 * the scenario's cleanup runs in its cleanup window (`force: true`: level-triggered, no
 * window). After every run it
 * calls `invariant(state, outcome, k)` and checks that no task, deadline, timer or handle
 * leaked. Returns N.
 * @example
 * await injectCancellation({
 *   setup: () => new MVar(0),
 *   scenario: (mv) => mv.modify_(async (x) => { await sleep(1); return x + 1; }),
 *   invariant: (mv) => assert.ok(mv.isFull),
 * });
 */
export async function injectCancellation<S>(
  options: InjectionOptions<S>,
): Promise<{ checkpoints: number }> {
  const max = options.maxCheckpoints ?? 2000;
  const grace = options.leakGraceMs ?? 500;
  const before = snapshotResources();
  let state = await options.setup();
  const clean = await runCounting(
    () => options.scenario(state),
    () => {},
  );
  await options.invariant(state, clean.outcome, 0);
  await assertNoLeaks(before, grace);
  const n = clean.count;
  if (n > max) throw new AssertionError({ message: `scenario has ${n} checkpoints (max ${max})` });
  for (let k = 1; k <= n; k++) {
    state = await options.setup();
    const run = await runCounting(
      () => options.scenario(state),
      (i, root) => {
        if (i === k) {
          root.scope.cancel(
            { kind: 'cancel', reason: `injected at checkpoint ${k}`, at: 0 },
            options.force === true,
          );
        }
      },
    );
    try {
      await options.invariant(state, run.outcome, k);
      await assertNoLeaks(before, grace);
    } catch (e) {
      if (e instanceof Error) e.message = `cancelled at checkpoint ${k} of ${n}: ${e.message}`;
      throw e;
    }
  }
  return { checkpoints: n };
}
