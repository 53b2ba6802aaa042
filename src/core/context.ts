/**
 * The cancellation tree and the wait protocol every blocking primitive is built on.
 *
 * Guarantees, and who keeps them:
 * 1. Level-triggered cancellation: once a scope is cancelled every checkpoint inside it raises
 *    again (`pendingCancel` reads a cached bit, never a flag that is cleared).
 * 2. Exactly one scope owns a raised cancellation — the outermost cancelled scope below the
 *    nearest shield (`CancelScope.cancelledBy`), so nested timeouts each catch only their own.
 * 3. O(1) registration: a scope joins its parent's child set and leaves it at `close()`;
 *    a blocked waiter joins its scope's waiter set and leaves it when it settles.
 * 4. Commit protocol: a waiter settles once. `commit` after an abort returns false, so the
 *    producer keeps its value; an abort after a commit is a no-op, so a handed-over value is
 *    always returned to the waiter — "cancelled means it did not happen".
 * 5. At most one AbortController per scope, created on first use; no `AbortSignal.any`.
 */
import { AsyncLocalStorage, AsyncResource } from 'node:async_hooks';
import { now } from './clock.ts';
import { type CancelCause, Cancelled } from './errors.ts';

/** Masking levels, ordered: a nested mask can only raise the level, never lower it. */
export const UNMASKED = 0;
/** `mask`: only operations that actually block can raise a pending cancellation. */
export const MASKED = 1;
/** `uninterruptibleMask`: nothing raises a pending cancellation. */
export const UNINTERRUPTIBLE = 2;
/** One of the three masking levels. */
export type MaskLevel = 0 | 1 | 2;

/** The smallest part of a task that the context tracks: what `currentTask` returns. */
export interface TaskLike {
  readonly id: number;
  readonly name: string;
  readonly parent: TaskLike | null;
  /** The scope whose cancellation was last raised inside this task (for the
   * swallowed-cancellation warning), or null. */
  raisedFor: object | null;
}

/** The ambient state of running code; immutable, a new one per scope or mask change. */
export interface Ctx {
  readonly task: TaskLike | null;
  readonly scope: CancelScope;
  readonly mask: MaskLevel;
}

/** The interface every blocking primitive hands a value through (see guarantee 4). */
export interface Waiter<T> {
  /** True until the waiter is committed or aborted. */
  readonly pending: boolean;
  /** Hands `value` over; false (and nothing happened) if the waiter already settled. */
  commit(value: T): boolean;
  /** Settles the waiter with an error; false if it already settled. */
  fail(error: unknown): boolean;
}

const neverSignal = new AbortController().signal;

/**
 * A node of the cancellation tree. Cancelling it cancels every scope below it except behind a
 * shield. Created by `cancelScope`, `timeout`, task groups and `spawn` (a task's root scope).
 */
export class CancelScope {
  /** Re-pointed when the parent closes while this scope lives on (see `close`). */
  parent: CancelScope | null;
  readonly shield: boolean;
  /** Own cause, set by the first `cancel` of this very scope. */
  cause: CancelCause | null = null;
  // Invariant: cancelledBy === (outermost scope s on the path from here up to and including
  // the nearest shield such that s.cause !== null), or null if there is none.
  cancelledBy: CancelScope | null;
  closed = false;
  // Children form an intrusive doubly linked list (first/next/prev): O(1) join and leave
  // without hashing, which is the hot path of every timeout and spawn.
  // Invariant: c is reachable from parent.firstChild iff c.parent === parent && !c.closed.
  firstChild: CancelScope | null = null;
  next: CancelScope | null = null;
  prev: CancelScope | null = null;
  /** Blocked interruptible waiters in this very scope: an intrusive list (see firstChild). */
  firstWaiter: BlockWaiter<any> | null = null;
  controller: AbortController | null = null;

  constructor(parent: CancelScope | null, shield = false) {
    this.parent = parent;
    this.shield = shield;
    this.cancelledBy = parent && !shield ? parent.cancelledBy : null;
    if (parent) {
      const head = parent.firstChild;
      this.next = head;
      if (head) head.prev = this;
      parent.firstChild = this;
    }
  }

  /** Requests cancellation of this scope and everything below it; idempotent, synchronous. */
  cancel(cause: CancelCause): void {
    if (this.cause) return;
    this.cause = cause;
    if (this.cancelledBy) return; // an outer scope already owns the cancellation here
    propagate(this, this);
  }

  /**
   * Leaves the tree: the scope can be collected and no longer receives propagation. Scopes
   * still linked below it (a task or group created inside a `timeout` that has returned) are
   * handed to its parent, so a cancellation from above still reaches them.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const p = this.parent;
    if (!p) return;
    if (this.prev) this.prev.next = this.next;
    else if (p.firstChild === this) p.firstChild = this.next;
    if (this.next) this.next.prev = this.prev;
    this.next = this.prev = null;
    for (let c = this.firstChild; c; ) {
      const n: CancelScope | null = c.next;
      c.parent = p;
      c.prev = null;
      c.next = p.firstChild;
      if (p.firstChild) p.firstChild.prev = c;
      p.firstChild = c;
      c = n;
    }
    this.firstChild = null;
  }

  /** The scope's AbortSignal, created on first use and aborted when the scope is cancelled. */
  signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.cancelledBy) this.controller.abort(raise(this.cancelledBy));
    }
    return this.controller.signal;
  }
}

function propagate(s: CancelScope, origin: CancelScope): void {
  s.cancelledBy = origin;
  if (s.firstWaiter) {
    const ws: BlockWaiter<any>[] = [];
    for (let w: BlockWaiter<any> | null = s.firstWaiter; w; w = w.next) ws.push(w);
    for (const w of ws) w.interrupt(origin);
  }
  if (s.controller && !s.controller.signal.aborted) s.controller.abort(raise(origin));
  if (s.firstChild === null) return;
  // Snapshot first: a waiter's unregister may close scopes while we walk (cancel is rare, so
  // the array costs nothing on a hot path).
  const kids: CancelScope[] = [];
  for (let c: CancelScope | null = s.firstChild; c; c = c.next) kids.push(c);
  for (const c of kids) if (!c.shield && !c.closed) propagate(c, origin);
}

/** Builds the error a checkpoint throws for a cancellation owned by `origin`. */
export function raise(origin: CancelScope, ctx?: Ctx): Cancelled {
  if (ctx?.task) ctx.task.raisedFor = origin;
  return new Cancelled(origin, origin.cause ?? { kind: 'cancel', at: now() });
}

const storage = new AsyncLocalStorage<Ctx>();
/** The scope of code outside any task: never cancelled, parent of every root task's scope. */
export const rootScope = new CancelScope(null);
const rootCtx: Ctx = { task: null, scope: rootScope, mask: UNMASKED };

/** The context of the running code (the root context outside any task). */
export function current(): Ctx {
  return storage.getStore() ?? rootCtx;
}

function enterAndCall<A, R>(ctx: Ctx, fn: (a: A) => R, a: A): R {
  storage.enterWith(ctx);
  return fn(a);
}

const manualDestroy = { requireManualDestroy: true };

/**
 * Runs `fn(a)` with `ctx` as the current context, restoring the caller's afterwards.
 * Why not `storage.run`: with Node 24's AsyncContextFrame it copies the context frame twice
 * (enter and restore). An AsyncResource captures the caller's frame and restores it by
 * exchange, so only the entering copy is paid (~25% cheaper on spawn and timeout). Other
 * AsyncLocalStorage stores of the caller are kept: the new frame is a copy of the caller's.
 */
export function runIn<A, R>(ctx: Ctx, fn: (a: A) => R, a: A): R {
  return new AsyncResource('quiesce', manualDestroy).runInAsyncScope(
    enterAndCall,
    null,
    ctx,
    fn,
    a,
  ) as R;
}

/** Test hook called at every checkpoint (see `quiesce/testing`); null in production. */
export const hooks: { checkpoint: ((ctx: Ctx, blocking: boolean) => void) | null } = {
  checkpoint: null,
};

/**
 * The scope whose cancellation a checkpoint in `ctx` must raise, or null. `blocking` says
 * whether the operation is about to block: under `mask` only those are interruptible.
 */
export function pendingCancel(ctx: Ctx, blocking: boolean): CancelScope | null {
  const origin = ctx.scope.cancelledBy;
  if (origin === null) return null;
  if (ctx.mask === UNMASKED || (ctx.mask === MASKED && blocking)) return origin;
  return null;
}

/**
 * The check a non-blocking operation makes before it acts: throws the pending cancellation
 * when unmasked; does nothing under a mask (it cannot block, so it cannot be interrupted).
 */
export function pollCancel(): void {
  const e = pendingCancellation();
  if (e) throw e;
}

/**
 * `pollCancel` as a value: the cancellation a non-blocking operation must report, or null.
 * For operations that return a promise, so a pending cancellation comes back as a rejection
 * rather than a synchronous throw. Runs the checkpoint hook once.
 */
export function pendingCancellation(): Cancelled | null {
  const ctx = current();
  if (hooks.checkpoint) hooks.checkpoint(ctx, false);
  const origin = pendingCancel(ctx, false);
  return origin ? raise(origin, ctx) : null;
}

/** The signal foreign APIs get in `ctx`: never aborted when uninterruptible. */
export function signalOf(ctx: Ctx): AbortSignal {
  return ctx.mask === UNINTERRUPTIBLE ? neverSignal : ctx.scope.signal();
}

const PENDING = 0;
const COMMITTED = 1;
const ABORTED = 2;

class BlockWaiter<T> implements Waiter<T> {
  state = PENDING;
  /** Commit a `Result` and settle with its value or error (used by `blockResult`). */
  unwrap = false;
  scope: CancelScope | null = null;
  next: BlockWaiter<any> | null = null;
  prev: BlockWaiter<any> | null = null;
  ctx: Ctx | null = null;
  unregister: (() => void) | void = undefined;
  resolve!: (v: T) => void;
  reject!: (e: unknown) => void;

  get pending(): boolean {
    return this.state === PENDING;
  }

  commit(value: T): boolean {
    if (this.state !== PENDING) return false;
    this.state = COMMITTED;
    this.leave();
    if (this.unwrap) {
      const r = value as { ok: boolean; value?: unknown; error?: unknown };
      if (r.ok) this.resolve(r.value as T);
      else this.reject(r.error);
    } else {
      this.resolve(value);
    }
    return true;
  }

  fail(error: unknown): boolean {
    if (this.state !== PENDING) return false;
    this.state = ABORTED;
    this.leave();
    this.reject(error);
    return true;
  }

  /** Joins `scope`'s waiter list (O(1)). */
  join(scope: CancelScope): void {
    this.scope = scope;
    const head = scope.firstWaiter;
    this.next = head;
    if (head) head.prev = this;
    scope.firstWaiter = this;
  }

  /** Leaves its scope's waiter list, if in one (O(1)). */
  leave(): void {
    const s = this.scope;
    if (!s) return;
    this.scope = null;
    if (this.prev) this.prev.next = this.next;
    else if (s.firstWaiter === this) s.firstWaiter = this.next;
    if (this.next) this.next.prev = this.prev;
    this.next = this.prev = null;
  }

  interrupt(origin: CancelScope): void {
    if (this.state !== PENDING) return;
    this.state = ABORTED;
    this.leave();
    // Settle first: a throwing unregister must not leave the waiter hanging.
    this.reject(raise(origin, this.ctx ?? undefined));
    if (this.unregister) this.unregister();
  }
}

/**
 * Blocks the current code until a producer commits a value through the waiter that `register`
 * receives. `register` enqueues the waiter wherever producers will find it and returns how to
 * take it out again; that is called if the wait is interrupted before a commit.
 *
 * **Cancellation**: a checkpoint that blocks, so interruptible under `mask` and not under
 * `uninterruptibleMask`. A pending cancellation is raised before `register` runs; one that
 * arrives later aborts the waiter, unregisters it and raises — unless a value was already
 * committed, which is then returned.
 */
export function block<T>(register: (w: Waiter<T>) => (() => void) | void): Promise<T> {
  return blockWith(register, false);
}

/**
 * `block` for producers that hand over an outcome: the waiter is committed a
 * `{ ok, value } | { ok: false, error }` and the promise settles with the value or the error.
 */
export function blockResult<T>(
  register: (
    w: Waiter<{ ok: true; value: T } | { ok: false; error: unknown }>,
  ) => (() => void) | void,
): Promise<T> {
  return blockWith(register as (w: Waiter<T>) => (() => void) | void, true);
}

function blockWith<T>(
  register: (w: Waiter<T>) => (() => void) | void,
  unwrap: boolean,
): Promise<T> {
  const ctx = current();
  if (hooks.checkpoint) hooks.checkpoint(ctx, true);
  const origin = pendingCancel(ctx, true);
  if (origin) return Promise.reject(raise(origin, ctx));
  const w = new BlockWaiter<T>();
  w.unwrap = unwrap;
  w.ctx = ctx;
  const p = new Promise<T>((res, rej) => {
    w.resolve = res;
    w.reject = rej;
  });
  w.unregister = register(w);
  if (w.state === PENDING && ctx.mask !== UNINTERRUPTIBLE) {
    w.join(ctx.scope);
  }
  return p;
}
