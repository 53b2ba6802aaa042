/**
 * The cancellation tree and the wait protocol every blocking primitive is built on.
 *
 * Guarantees, and who keeps them:
 * 1. Delivered once, then a bounded cleanup window: the first checkpoint that raises a
 *    cancellation opens a window (`openWindow`) on the scopes from where it landed up to the
 *    cancelled scope; inside it that cancellation does not raise again, so cleanup can block.
 *    The window closes at its deadline (the scope's `cleanupMs`) or when the cancellation is
 *    forced; from then on every checkpoint raises again (`pendingCancel` reads a cached
 *    field, `raising`, never a flag that is cleared). A stronger cancellation — an enclosing
 *    scope cancelled later — raises at once: a window suspends only its own origin.
 * 2. Exactly one scope owns a raised cancellation — the outermost cancelled scope below the
 *    nearest shield whose cancellation is not in an open window here (`raising`), so nested
 *    timeouts each catch only their own, also inside cleanup.
 * 3. O(1) registration: a scope joins its parent's child set and leaves it at `close()`;
 *    a blocked waiter joins its scope's waiter set and leaves it when it settles.
 * 4. Commit protocol: a waiter settles once. `commit` after an abort returns false, so the
 *    producer keeps its value; an abort after a commit is a no-op, so a handed-over value is
 *    always returned to the waiter — "cancelled means it did not happen".
 * 5. At most one AbortController per scope, created on first use; no `AbortSignal.any`.
 * 6. Nothing starves the event loop: `checkpoint()` and a re-raised cancellation yield to the
 *    macrotask queue once the current synchronous stretch has run longer than `LONG_MS`
 *    (`longStretch` reads the clock only every few calls, so a checkpoint stays as cheap as
 *    an `await`).
 */
import { AsyncLocalStorage, AsyncResource } from 'node:async_hooks';
import { addDeadline, type Deadline, now, removeDeadline } from './clock.ts';
import { report } from './diagnostics.ts';
import { ArgumentError, type CancelCause, Cancelled, describeCause } from './errors.ts';

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
  /** @internal The task's root scope. */
  readonly scope: CancelScope;
  /** @internal The scope whose cancellation was last raised inside this task (for the
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

/** How long cleanup may run after a cancellation is delivered, unless a scope says otherwise. */
export const DEFAULT_CLEANUP_MS = 5000;

/** Checks a `cleanupTimeoutMs` option: a number >= 0 (0: no window), `Infinity`, or absent. */
export function cleanupMsOption(where: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || Number.isNaN(v) || v < 0) {
    throw new ArgumentError(
      `${where}: cleanupTimeoutMs must be a number >= 0 (or Infinity), got ${String(v)}`,
    );
  }
  return v;
}

/**
 * A cleanup window: opened when `origin`'s cancellation is delivered, it suspends that
 * cancellation in the scopes it covers until `deadline` (or a forced cancel).
 */
export class Window {
  readonly origin: CancelScope;
  readonly ms: number;
  readonly task: string | undefined;
  open = true;
  /** Covered scopes that are not closed yet; the deadline is dropped when it reaches 0. */
  live = 0;
  readonly scopes: CancelScope[] = [];
  timer: Deadline | null = null;
  constructor(origin: CancelScope, ms: number, task: string | undefined) {
    this.origin = origin;
    this.ms = ms;
    this.task = task;
  }
}

interface ScopeExtra {
  windows: WindowList | null;
  cleanupMs: number | undefined;
  forced: boolean;
  ownWindows: Window[] | null;
  controller: AbortController | null;
}

// The bits of CancelScope#bits.
const SHIELD = 1;
const CLOSED = 2;

/** A scope's windows, innermost first: an immutable list shared with scopes born inside. */
export interface WindowList {
  readonly win: Window;
  readonly outer: WindowList | null;
}

// How many windows are open anywhere: while 0, `raising === cancelledBy` everywhere and
// cancellation keeps its O(1) fast paths.
let openWindows = 0;

/**
 * A node of the cancellation tree. Cancelling it cancels every scope below it except behind a
 * shield. Created by `cancelScope`, `timeout`, task groups and `spawn` (a task's root scope).
 */
export class CancelScope {
  /** Re-pointed when the parent closes while this scope lives on (see `close`). */
  parent: CancelScope | null;
  // `shield` and `closed`, as bits of one field: every task and timeout has a scope.
  #bits: number;
  /** Own cause, set by the first `cancel` of this very scope. */
  cause: CancelCause | null = null;
  // Invariant: cancelledBy === (outermost scope s on the path from here up to and including
  // the nearest shield such that s.cause !== null), or null if there is none.
  cancelledBy: CancelScope | null;
  // Invariant: raising === (outermost scope s on that same path such that s.cause !== null
  // and no open window of `windows` has origin s), or null. It is what checkpoints raise.
  raising: CancelScope | null;
  // What few scopes need, allocated on first use: spawn and timeout stay as cheap as before.
  #extra: ScopeExtra | null = null;
  // Children form an intrusive doubly linked list (first/next/prev): O(1) join and leave
  // without hashing, which is the hot path of every timeout and spawn.
  // Invariant: c is reachable from parent.firstChild iff c.parent === parent && !c.closed.
  firstChild: CancelScope | null = null;
  next: CancelScope | null = null;
  prev: CancelScope | null = null;
  /** Blocked interruptible waiters in this very scope: an intrusive list (see firstChild). */
  firstWaiter: BlockWaiter<any> | null = null;

  constructor(parent: CancelScope | null, shield = false) {
    this.parent = parent;
    this.#bits = shield ? SHIELD : 0;
    this.cancelledBy = parent && !shield ? parent.cancelledBy : null;
    this.raising = this.cancelledBy;
    if (parent) {
      const head = parent.firstChild;
      this.next = head;
      if (head) head.prev = this;
      parent.firstChild = this;
      // Born inside cleanup: the windows in force around it cover it too (a `timeout` or a
      // task group used in a `finally` runs as cleanup, not as cancelled code).
      if (parent.windows !== null && !shield) {
        this.windows = parent.windows;
        for (let l: WindowList | null = parent.windows; l; l = l.outer) {
          if (l.win.open) {
            l.win.scopes.push(this);
            l.win.live++;
          }
        }
        this.raising = raisingAt(this);
      }
    }
  }

  #x(): ScopeExtra {
    return (this.#extra ??= {
      windows: null,
      cleanupMs: undefined,
      forced: false,
      ownWindows: null,
      controller: null,
    });
  }

  /** Whether cancellation from above stops here. */
  get shield(): boolean {
    return (this.#bits & SHIELD) !== 0;
  }

  /** True once `close()` ran. */
  get closed(): boolean {
    return (this.#bits & CLOSED) !== 0;
  }

  /** The scope's AbortController, once `signal()` made one. */
  get controller(): AbortController | null {
    return this.#extra === null ? null : this.#extra.controller;
  }

  set controller(c: AbortController | null) {
    if (c !== null || this.#extra !== null) this.#x().controller = c;
  }

  /** The cleanup windows in force here (see `openWindow`), or null. */
  get windows(): WindowList | null {
    return this.#extra === null ? null : this.#extra.windows;
  }

  set windows(l: WindowList | null) {
    this.#x().windows = l;
  }

  /** Cleanup window length for cancellations delivered here, in ms: set here or inherited. */
  get cleanupMs(): number {
    for (let s: CancelScope | null = this; s; s = s.parent) {
      const ms = s.#extra?.cleanupMs;
      if (ms !== undefined) return ms;
    }
    return DEFAULT_CLEANUP_MS;
  }

  set cleanupMs(ms: number) {
    this.#x().cleanupMs = ms;
  }

  /** A forced cancel: delivered without a cleanup window. */
  get forced(): boolean {
    return this.#extra?.forced === true;
  }

  /** The windows opened for this scope's own cancellation (for a forced cancel to close). */
  get ownWindows(): Window[] {
    const x = this.#x();
    return (x.ownWindows ??= []);
  }

  /**
   * Requests cancellation of this scope and everything below it; idempotent, synchronous.
   * `force`: no cleanup window — every checkpoint below raises from now on, and windows
   * already open for this scope close at once.
   */
  cancel(cause: CancelCause, force = false): void {
    if (force && !this.forced) {
      const x = this.#x();
      x.forced = true;
      if (x.ownWindows) for (const w of [...x.ownWindows]) closeWindow(w, false);
    }
    if (this.cause) return;
    this.cause = cause;
    if (this.cancelledBy) {
      // An outer scope already owns the cancellation here — unless it is in a cleanup window,
      // where this one (a `timeout` inside cleanup, say) must raise.
      if (openWindows > 0) refresh(this);
      return;
    }
    propagate(this, this);
  }

  /**
   * Leaves the tree: the scope can be collected and no longer receives propagation. Scopes
   * still linked below it (a task or group created inside a `timeout` that has returned) are
   * handed to its parent, so a cancellation from above still reaches them.
   */
  close(): void {
    if (this.closed) return;
    this.#bits |= CLOSED;
    for (let l = this.windows; l; l = l.outer) {
      const w = l.win;
      if (w.open && --w.live === 0) retireWindow(w);
    }
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
    // Inside a cleanup window a foreign API gets a live signal again, so cleanup can fetch,
    // write and flush; it aborts when the window closes.
    if (!this.controller || (this.controller.signal.aborted && this.raising === null)) {
      this.controller = new AbortController();
      if (this.raising) this.controller.abort(raise(this.raising));
    }
    return this.controller.signal;
  }
}

function propagate(s: CancelScope, origin: CancelScope): void {
  s.cancelledBy = origin;
  update(s);
  if (s.firstChild === null) return;
  // Snapshot first: a waiter's unregister may close scopes while we walk (cancel is rare, so
  // the array costs nothing on a hot path).
  const kids: CancelScope[] = [];
  for (let c: CancelScope | null = s.firstChild; c; c = c.next) kids.push(c);
  for (const c of kids) if (!c.shield && !c.closed) propagate(c, origin);
}

/** Recomputes `raising` below `s` (a cancellation inside an outer one's window). */
function refresh(s: CancelScope): void {
  update(s);
  const kids: CancelScope[] = [];
  for (let c: CancelScope | null = s.firstChild; c; c = c.next) kids.push(c);
  for (const c of kids) if (!c.shield && !c.closed) refresh(c);
}

function suppressed(l: WindowList | null, o: CancelScope): boolean {
  for (; l; l = l.outer) if (l.win.open && l.win.origin === o) return true;
  return false;
}

function hasWindowFor(l: WindowList | null, o: CancelScope): boolean {
  for (; l; l = l.outer) if (l.win.origin === o) return true;
  return false;
}

/** `raising` by its invariant (walks up to the nearest shield; only used near windows). */
function raisingAt(s: CancelScope): CancelScope | null {
  const l = s.windows;
  if (l === null) return s.cancelledBy;
  let best: CancelScope | null = null;
  for (let p: CancelScope | null = s; p; p = p.parent) {
    if (p.cause !== null && !suppressed(l, p)) best = p;
    if (p.shield) break;
  }
  return best;
}

/** Re-establishes `s.raising`; a newly raising cancellation interrupts its blocked waiters. */
function update(s: CancelScope): void {
  const r = s.windows !== null ? raisingAt(s) : s.cancelledBy;
  if (r === s.raising) return;
  s.raising = r;
  if (r === null) return;
  if (s.firstWaiter) {
    const ws: BlockWaiter<any>[] = [];
    for (let w: BlockWaiter<any> | null = s.firstWaiter; w; w = w.next) ws.push(w);
    for (const w of ws) w.interrupt(r);
  }
  if (s.controller && !s.controller.signal.aborted) s.controller.abort(raise(r));
}

/**
 * Delivery of `origin`'s cancellation at `at`: the scopes from `at` up to `origin` enter a
 * cleanup window of `at.cleanupMs` — but no further than the delivering task's own scope, as
 * the error travels only through that task's frames (a parent learns of it at its own
 * checkpoint, and gets its own window). No window for a forced cancellation, and none where
 * a window for it already closed (after its window, a cancellation is level-triggered).
 */
function openWindow(origin: CancelScope, at: CancelScope, task: TaskLike | null): void {
  if (origin.forced || hasWindowFor(at.windows, origin)) return;
  const ms = at.cleanupMs;
  if (!(ms > 0)) return;
  const w = new Window(origin, ms, task?.name);
  openWindows++;
  origin.ownWindows.push(w);
  for (let s: CancelScope | null = at; s; s = s.parent) {
    if (hasWindowFor(s.windows, origin)) break;
    s.windows = { win: w, outer: s.windows };
    w.scopes.push(s);
    w.live++;
    update(s);
    if (s === origin || s.shield || s === task?.scope) break;
  }
  if (ms !== Number.POSITIVE_INFINITY) {
    w.timer = addDeadline(now() + ms, () => closeWindow(w, true));
  }
}

/** A window whose scopes all closed: its cleanup finished in time. */
function retireWindow(w: Window): void {
  w.open = false;
  openWindows--;
  if (w.timer) removeDeadline(w.timer);
  w.timer = null;
  const own = w.origin.ownWindows;
  const i = own.indexOf(w);
  if (i >= 0) own.splice(i, 1);
}

/** Ends a window: its cancellation raises again in every scope it covered. */
function closeWindow(w: Window, overran: boolean): void {
  if (!w.open) return;
  retireWindow(w);
  if (overran) {
    const c = w.origin.cause;
    report({
      code: 'QUIESCE_CLEANUP_OVERRUN',
      message: `cleanup${w.task ? ` of task ${w.task}` : ''} overran its ${w.ms} ms window after ${
        c ? describeCause(c) : 'a cancellation'
      } and is cancelled again`,
      task: w.task,
    });
  }
  for (const s of w.scopes) if (!s.closed) update(s);
}

/**
 * Builds the error a checkpoint throws for a cancellation owned by `origin`. With `ctx` it is
 * a delivery: the code in `ctx` receives it, so its cleanup window opens there.
 */
export function raise(origin: CancelScope, ctx?: Ctx): Cancelled {
  const e = new Cancelled(origin, origin.cause ?? { kind: 'cancel', at: now() });
  if (ctx) {
    if (ctx.task) ctx.task.raisedFor = origin;
    openWindow(origin, ctx.scope, ctx.task);
  }
  return e;
}

/**
 * The cancellation a scope that caught its own (`e.origin === scope`) must pass on instead of
 * returning: an outer cancellation that was delivered inside it and is still unfinished
 * (its cleanup was cut by this scope's own expiry). Null when there is none.
 */
export function carried(scope: CancelScope): Cancelled | null {
  for (let l = scope.windows; l; l = l.outer) {
    const o = l.win.origin;
    if (o !== scope && l.win.scopes[0] !== undefined && isBelowOrAt(l.win.scopes[0], scope)) {
      return new Cancelled(o, o.cause ?? { kind: 'cancel', at: now() });
    }
  }
  return null;
}

function isBelowOrAt(s: CancelScope, anc: CancelScope): boolean {
  for (let p: CancelScope | null = s; p; p = p.parent) if (p === anc) return true;
  return false;
}

// ---- no starvation ----------------------------------------------------------------------

/** A synchronous stretch longer than this (real ms) yields to the macrotask queue. */
export const LONG_MS = 4;
// The clock is read every `every` calls (1..64, adapted so reads are ~0.25-1 ms apart); the
// stretch start is forgotten by a macrotask (`endStretch`), which runs only once the current
// stretch has let the event loop turn.
let budget = 1;
let every = 1;
let stretchStart = -1;
let lastRead = 0;
let yields = 0;

function endStretch(): void {
  stretchStart = -1;
  budget = 1;
}

/** True when the current synchronous stretch has run longer than `LONG_MS` (cheap: see above). */
export function longStretch(): boolean {
  return --budget <= 0 && readStretch();
}

// The slow half of `longStretch`: reads the clock and re-arms the budget.
function readStretch(): boolean {
  const t = performance.now();
  if (stretchStart < 0) {
    stretchStart = lastRead = t;
    every = budget = 1;
    setImmediate(endStretch);
    return false;
  }
  const since = t - lastRead;
  lastRead = t;
  if (since < 0.25) every = every < 64 ? every * 2 : 64;
  else if (since > 1) every = 1;
  budget = every;
  return t - stretchStart > LONG_MS;
}

function resumed(): void {
  yields--;
}

/** Resolves after the event loop has turned once (timers, I/O and signals ran meanwhile). */
export function yieldTurn(): Promise<void> {
  yields++;
  return new Promise<void>((r) => setImmediate(r)).then(resumed);
}

/** How many yields are outstanding (the test clock's `flush` waits for them). */
export function pendingYields(): number {
  return yields;
}

const RESOLVED: Promise<void> = Promise.resolve();

function checkNow(): Promise<void> {
  const ctx = current();
  if (hooks.checkpoint) hooks.checkpoint(ctx, false);
  const origin = pendingCancel(ctx, false);
  return origin ? Promise.reject(raise(origin, ctx)) : RESOLVED;
}

/**
 * `checkpoint()` (see scope.ts for its contract). Not an async function: the common case
 * returns one shared resolved promise, so awaiting it costs what `await undefined` costs.
 * After a long stretch it first yields a turn of the event loop — a deadline that fires
 * meanwhile is raised right here (guarantee 6).
 */
export function checkpointNow(): Promise<void> {
  if (--budget <= 0 && readStretch()) return yieldTurn().then(checkNow);
  const ctx = current();
  if (hooks.checkpoint) hooks.checkpoint(ctx, false);
  const origin = pendingCancel(ctx, false);
  return origin ? rejectCancelled(raise(origin, ctx)) : RESOLVED;
}

/**
 * How a promise-returning operation reports a cancellation it must raise: a rejection, after
 * a turn of the event loop when the stretch has run long — so a loop that swallows every
 * cancellation cannot starve timers and signals.
 */
export function rejectCancelled(e: unknown): Promise<never> {
  if (!longStretch()) return Promise.reject(e);
  return yieldTurn().then(() => Promise.reject(e));
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

/**
 * `runIn` for many calls that all come from the context current now (a server's requests,
 * emitted in the context it listened in): the AsyncResource is made once, here, instead of
 * once per call. Each call's new frame is a copy of the frame current *now*, not of its
 * caller's, so it is `runIn` only for callers running in this frame.
 */
export function runnerIn(): <A, R>(ctx: Ctx, fn: (a: A) => R, a: A) => R {
  const r = new AsyncResource('quiesce', manualDestroy);
  return <A, R>(ctx: Ctx, fn: (a: A) => R, a: A): R =>
    r.runInAsyncScope(enterAndCall, null, ctx, fn, a) as R;
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
  const origin = ctx.scope.raising;
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

/**
 * True while the running code is cleaning up after a delivered cancellation (an open cleanup
 * window covers its scope): the time to finish, not to start waiting for news such as a
 * server's drain.
 */
export function inCleanup(): boolean {
  for (let l = current().scope.windows; l; l = l.outer) if (l.win.open) return true;
  return false;
}

/** The signal foreign APIs get in `ctx`: never aborted when uninterruptible. */
export function signalOf(ctx: Ctx): AbortSignal {
  return ctx.mask === UNINTERRUPTIBLE ? neverSignal : ctx.scope.signal();
}

const PENDING = 0;
const COMMITTED = 1;
const ABORTED = 2;

// Bits of BlockWaiter#bits above the state: commit a `Result` and settle with its value or
// error (`blockResult`); joined its context's scope's waiter list.
const STATE = 3;
const UNWRAP = 4;
const JOINED = 8;

class BlockWaiter<T> implements Waiter<T> {
  // The state (PENDING, COMMITTED, ABORTED) and the flags above, in one field: every blocked
  // read of every idle connection holds a waiter.
  bits = PENDING;
  next: BlockWaiter<any> | null = null;
  prev: BlockWaiter<any> | null = null;
  ctx: Ctx | null = null;
  unregister: (() => void) | void = undefined;
  resolve!: (v: T) => void;
  reject!: (e: unknown) => void;

  get pending(): boolean {
    return (this.bits & STATE) === PENDING;
  }

  #settle(state: number): void {
    this.bits = (this.bits & ~STATE) | state;
  }

  commit(value: T): boolean {
    if ((this.bits & STATE) !== PENDING) return false;
    this.#settle(COMMITTED);
    this.leave();
    if (this.bits & UNWRAP) {
      const r = value as { ok: boolean; value?: unknown; error?: unknown };
      if (r.ok) this.resolve(r.value as T);
      else this.reject(r.error);
    } else {
      this.resolve(value);
    }
    return true;
  }

  fail(error: unknown): boolean {
    if ((this.bits & STATE) !== PENDING) return false;
    this.#settle(ABORTED);
    this.leave();
    this.reject(error);
    return true;
  }

  /** Joins the waiter list of its context's scope (O(1)). */
  join(): void {
    this.bits |= JOINED;
    const scope = this.ctx!.scope;
    const head = scope.firstWaiter;
    this.next = head;
    if (head) head.prev = this;
    scope.firstWaiter = this;
  }

  /** Leaves its scope's waiter list, if in one (O(1)). */
  leave(): void {
    if ((this.bits & JOINED) === 0) return;
    this.bits &= ~JOINED;
    const s = this.ctx!.scope;
    if (this.prev) this.prev.next = this.next;
    else if (s.firstWaiter === this) s.firstWaiter = this.next;
    if (this.next) this.next.prev = this.prev;
    this.next = this.prev = null;
  }

  interrupt(origin: CancelScope): void {
    if ((this.bits & STATE) !== PENDING) return;
    this.#settle(ABORTED);
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
  if (origin) return rejectCancelled(raise(origin, ctx));
  const w = new BlockWaiter<T>();
  if (unwrap) w.bits = UNWRAP;
  w.ctx = ctx;
  const p = new Promise<T>((res, rej) => {
    w.resolve = res;
    w.reject = rej;
  });
  w.unregister = register(w);
  if (w.pending && ctx.mask !== UNINTERRUPTIBLE) w.join();
  return p;
}
