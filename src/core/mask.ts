/**
 * Masking and the resource combinators built on it.
 *
 * Guarantees, and who keeps them:
 * 1. Inside `mask`, a pending cancellation is raised only by an operation that actually
 *    blocks; inside `uninterruptibleMask`, by nothing (`pendingCancel` in context.ts).
 * 2. `restore(g)` runs `g` in the masking state that was in force outside the `mask`, whatever
 *    scope it is called from, and delivers a pending cancellation on entry when that state is
 *    unmasked — so `g` never starts in a cancelled scope (`restoreTo`).
 * 5. `bracket` (and what is built on it) called unmasked in a cancelled scope raises before
 *    `acquire`: it runs nothing. In a cleanup window it runs normally.
 * 3. `bracket`: if `acquire` returns, `release` runs exactly once, whatever `use` does.
 * 4. A cleanup error never hides a cancellation: when the body was cancelled and cleanup
 *    throws too, the cancellation propagates and the cleanup error is reported.
 */
import {
  type Ctx,
  current,
  hooks,
  MASKED,
  type MaskLevel,
  pendingCancel,
  pendingCancellation,
  raise,
  rejectCancelled,
  runIn,
  UNINTERRUPTIBLE,
  UNMASKED,
} from './context.ts';
import { report } from './diagnostics.ts';
import { isCancellation, type Result } from './errors.ts';
import { spawn, type Task } from './task.ts';

/** Runs a function in the masking state outside the enclosing `mask`. */
export type Restore = <R>(g: () => R | PromiseLike<R>) => Promise<R>;

/** What `getMaskingState` returns (Haskell's `MaskingState`). */
export type MaskingState = 'unmasked' | 'maskedInterruptible' | 'maskedUninterruptible';

const names: MaskingState[] = ['unmasked', 'maskedInterruptible', 'maskedUninterruptible'];

/**
 * The masking state of the running code.
 * @example
 * await mask(async () => getMaskingState()); // 'maskedInterruptible'
 */
export function getMaskingState(): MaskingState {
  return names[current().mask];
}

async function call<R>(g: () => R | PromiseLike<R>): Promise<R> {
  return await g();
}

function restoreTo(outer: MaskLevel): Restore {
  return (g) => {
    const c = current();
    const ctx: Ctx = { task: c.task, scope: c.scope, mask: outer };
    if (outer === UNMASKED) {
      // Entering unmasked code is a checkpoint: a cancellation that arrived while masked is
      // delivered here, before `g` runs (so `modify` in a cancelled scope changes nothing).
      if (hooks.checkpoint) hooks.checkpoint(ctx, false);
      const origin = pendingCancel(ctx, false);
      if (origin) return rejectCancelled(raise(origin, ctx));
    }
    return runIn(ctx, call, g);
  };
}

function withMask<R>(level: MaskLevel, fn: (restore: Restore) => R): R {
  const ctx = current();
  const inner = (ctx.mask > level ? ctx.mask : level) as MaskLevel;
  return runIn({ task: ctx.task, scope: ctx.scope, mask: inner }, fn, restoreTo(ctx.mask));
}

/**
 * Runs `fn` with cancellation deferred: inside, only an operation that actually blocks can
 * raise a pending cancellation (a take from a full MVar cannot). `restore(g)` runs `g` in the
 * outer state. Tasks spawned inside are born masked.
 * **Cancellation**: not a checkpoint.
 * @example
 * // Haskell's modifyMVar_, safe at every point:
 * await mask(async (restore) => {
 *   const a = await mv.take();
 *   let b;
 *   try { b = await restore(() => f(a)); } catch (e) { mv.tryPut(a); throw e; }
 *   mv.tryPut(b);
 * });
 */
export function mask<T>(fn: (restore: Restore) => T | PromiseLike<T>): Promise<T> {
  return withMask(MASKED, (restore) => call(() => fn(restore)));
}

/**
 * Like `mask`, but even blocking operations cannot raise a cancellation. Treat every use with
 * suspicion: a block inside it cannot be cancelled at all. Prefer `boundedCleanup`.
 * **Cancellation**: not a checkpoint; nothing inside is interruptible.
 */
export function uninterruptibleMask<T>(fn: (restore: Restore) => T | PromiseLike<T>): Promise<T> {
  return withMask(UNINTERRUPTIBLE, (restore) => call(() => fn(restore)));
}

async function cleanupAfter(error: unknown, cleanup: () => unknown): Promise<never> {
  try {
    await cleanup();
  } catch (cleanupError) {
    if (isCancellation(error)) {
      report({
        code: 'QUIESCE_SUPPRESSED_ERROR',
        message: 'a cleanup failed while a cancellation was propagating',
        task: current().task?.name,
        error: cleanupError,
      });
    } else {
      throw new SuppressedError(cleanupError, error, 'cleanup failed after an error');
    }
  }
  throw error;
}

/**
 * Acquires a resource, uses it and releases it: `acquire` and `release` run masked, `use` in
 * the caller's state; if `acquire` returns, `release` runs exactly once.
 * Reference: `mask(async (restore) => { a = await acquire(); r = await restore(() => use(a))
 * onException release(a); await release(a); return r })`.
 * **Cancellation**: `acquire` should block at most once (a cancellation at a second blocking
 * point would leave the first resource unreleased: nest brackets). Called unmasked in a
 * cancelled scope it raises before `acquire`. When `use` was cancelled, `release` runs in
 * the cleanup window: it can block and use `timeout`; only a stronger cancellation or the
 * window's end interrupts it (`boundedCleanup` inside it survives even those).
 * @example
 * const n = await bracket(() => open(path), (fh) => fh.close(), (fh) => countLines(fh));
 */
export function bracket<A, R>(
  acquire: () => A | PromiseLike<A>,
  release: (a: A) => unknown,
  use: (a: A) => R | PromiseLike<R>,
): Promise<R> {
  const e = pendingCancellation();
  if (e) return rejectCancelled(e);
  return mask(async (restore) => {
    const a = await acquire();
    let r: R;
    try {
      r = await restore(() => use(a));
    } catch (e) {
      return cleanupAfter(e, () => release(a));
    }
    await release(a);
    return r;
  });
}

/**
 * Runs `fn`, then `finalizer` (masked) whether `fn` returned or threw (Haskell's `finally`).
 * @example
 * await andFinally(() => serve(conn), () => conn.destroy());
 */
export function andFinally<R>(fn: () => R | PromiseLike<R>, finalizer: () => unknown): Promise<R> {
  return bracket(
    () => undefined,
    () => finalizer(),
    () => fn(),
  );
}

/**
 * Runs `fn`; if it throws (cancellation included), runs `handler` masked and rethrows.
 * @example
 * await onException(() => writeAll(file), () => rm(file.path));
 */
export function onException<R>(fn: () => R | PromiseLike<R>, handler: () => unknown): Promise<R> {
  return mask(async (restore) => {
    try {
      return await restore(fn);
    } catch (e) {
      return cleanupAfter(e, handler);
    }
  });
}

/**
 * Spawns `action` as a task that runs `finalizer` with its outcome whatever happens, even if
 * it is cancelled before its first line: the task is born masked and only `action` runs in the
 * caller's state (Haskell's `forkFinally`).
 * **Cancellation**: `finalizer` runs masked.
 * @example
 * forkFinally(() => handle(conn), () => conn.destroy());
 */
export function forkFinally<T>(
  action: () => T | PromiseLike<T>,
  finalizer: (r: Result<T>) => unknown,
): Task<T> {
  return withMask(MASKED, (restore) =>
    spawn(async () => {
      let r: Result<T>;
      try {
        r = { ok: true, value: await restore(action) };
      } catch (error) {
        r = { ok: false, error };
      }
      await finalizer(r);
      if (r.ok) return r.value;
      throw r.error;
    }),
  );
}
