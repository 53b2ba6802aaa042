/**
 * `serve`: the accept loop as a supervised task group, and its graceful shutdown — with no
 * window in which a connection accepted around the shutdown request is lost.
 *
 * Guarantees, and who keeps them:
 * 1. No accepted connection is missed by a shutdown: each one becomes a task of the server's
 *    group synchronously in the accept callback, and the listener is closed only once a loop
 *    turn passed without a new connection, so the connections in the kernel's accept queue
 *    when the shutdown was requested are accepted and served, not reset
 *    (`#accept`, `#acceptUntilQuiet`).
 * 2. A connection is closed when its handler settles, whatever happens — return, throw, or
 *    cancellation — gracefully (FIN, drain, close), so a healthy peer never sees a reset.
 * 3. A handler's error is reported (`onError`) and never stops the server or its siblings.
 * 4. Shutdown: stop accepting, tell handlers (`draining`), wait for in-flight connections up to
 *    `drainTimeoutMs`, then cancel the rest — so their `finally` and `bracket` cleanups run —
 *    and resolve only when every connection socket and the listener are closed.
 * 5. Cancelling the task that started the server is a graceful shutdown: the connections are
 *    shielded from that cancellation and drained with the configured deadline.
 * 6. At `maxConnections` new connections wait, unread, for a slot: they are never dropped.
 */
import { AsyncResource } from 'node:async_hooks';
import type net from 'node:net';
import {
  ArgumentError,
  isCancellation,
  type Result,
  spawn,
  type Task,
  TaskGroup,
} from '../core/index.ts';
import { addDeadline, current, now, removeDeadline, report, runIn } from '../core/internal.ts';
import { Semaphore } from '../sync/semaphore.ts';
import { Connection } from './connection.ts';
import { DrainFlag } from './drain.ts';
import { IdleTimeoutError, ListenerInUseError } from './errors.ts';
import { describeError, observeHookResult } from './hooks.ts';
import type { AcceptErrorInfo, Listener } from './listener.ts';

/** A connection handler: talk to the peer, then return (the connection is closed for you). */
export type Handler = (conn: Connection) => unknown;

/** Options for `serve`. */
export interface ServeOptions {
  /** A name for diagnostics and the task tree. Default: `server-<n>`. */
  name?: string;
  /** Handlers running at once; beyond it connections wait, unread, for a slot. Default: Infinity. */
  maxConnections?: number;
  /**
   * The longest a blocking read or write may wait on the peer, from its call (bytes trickling
   * in do not extend it); then it throws `IdleTimeoutError` and the connection is closed.
   * Default: 120000. `Infinity` disables it.
   */
  idleTimeoutMs?: number;
  /** Drain deadline when the server is shut down by cancellation or `shutdown()` without one. Default: 30000. */
  drainTimeoutMs?: number;
  /** `gracefulClose` time limit after a handler settles. Default: 2000. */
  closeTimeoutMs?: number;
  /** `gracefulClose` discard cap after a handler settles. Default: 65536. */
  closeMaxBytes?: number;
  /**
   * Where handler errors go. Default: a `QUIESCE_HANDLER_ERROR` diagnostic (`onDiagnostic`).
   * It may be async; if it throws or rejects, that is a `QUIESCE_HANDLER_ERROR` diagnostic.
   */
  onError?: (error: unknown, conn: Connection) => unknown;
  /**
   * Where accept errors (EMFILE, …) go, with backoff. Default: a `QUIESCE_ACCEPT_ERROR` warning.
   * It may be async; a rejection is a `QUIESCE_HANDLER_ERROR` diagnostic.
   */
  onAcceptError?: (info: AcceptErrorInfo) => unknown;
}

/** Options for `server.shutdown`. */
export interface ShutdownOptions {
  /** How long in-flight connections may take before they are cancelled. Default: the server's `drainTimeoutMs`. */
  drainTimeoutMs?: number;
}

/** What a finished server reports. */
export interface ShutdownReport {
  /**
   * Connections open when the shutdown began whose handler finished on its own (a connection
   * only closing at the deadline, its handler done, counts here).
   */
  readonly drained: number;
  /** Connections whose handler was still running, or waiting for a slot, at the drain deadline. */
  readonly cancelled: number;
  /** Whether the drain deadline was reached. */
  readonly deadlineReached: boolean;
  /** From the shutdown request to the last socket closed, in ms. */
  readonly durationMs: number;
}

/** Counters of a running server. */
export interface ServerStats {
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Connections accepted and not yet closed (running or waiting for a slot). */
  readonly open: number;
  /** Connections waiting for a slot under `maxConnections`. */
  readonly waiting: number;
  /** Handlers that returned normally. */
  readonly completed: number;
  /** Handlers that threw (reported through `onError`). */
  readonly failed: number;
  /** Handlers that hit the idle limit. */
  readonly idleTimeouts: number;
}

let serverIds = 1;
/** A handler's outcome when it returned (anything it throws is an outcome too). */
const RETURNED: unique symbol = Symbol('returned');
/** A connection task's outcome once its handler returned or failed (errors are reported). */
const SETTLED: Result<unknown> = { ok: true, value: undefined };

function noop(): void {}
// Upper bound of the accept linger at shutdown (see #acceptUntilQuiet): long enough for a full
// kernel backlog at one accept per loop turn, short enough that a flood cannot hold it open.
const ACCEPT_LINGER_MS = 1000;

/**
 * A running server: accepts on a listener and runs a handler per connection. Made by `serve`.
 * `await using server = serve(...)` shuts it down gracefully at scope exit.
 */
export class Server implements AsyncDisposable {
  readonly name: string;
  readonly listener: Listener;
  readonly #handler: Handler;
  readonly #drain = new DrainFlag();
  readonly #slots: Semaphore | null;
  readonly #idleMs: number;
  readonly #drainMs: number;
  readonly #closeMs: number;
  readonly #closeMax: number;
  readonly #onError: ServeOptions['onError'];
  #task!: Task<ShutdownReport>;
  #group!: TaskGroup;
  #groupCtx!: ReturnType<typeof current>;
  #stopAt = Number.POSITIVE_INFINITY;
  #stopRequested = false;
  #wakeStop: (() => void) | null = null;
  #retimeDrain: (() => void) | null = null;
  #accepted = 0;
  #completed = 0;
  #failed = 0;
  #idleTimeouts = 0;
  // Connections whose handler has not settled yet (running, or waiting for a slot). Not the
  // group's size: a connection whose handler returned may still be in its bounded
  // gracefulClose, and cancelling it at the drain deadline cancels nothing of the handler's.
  #busy = 0;
  // Made once per server, not per connection: the connection is the task's `arg`.
  readonly #serveOneFn = (conn: Connection) => this.#serveOne(conn);

  /** @internal use `serve`. */
  constructor(listener: Listener, handler: Handler, o: ServeOptions) {
    this.name = o.name ?? `server-${serverIds++}`;
    this.listener = listener;
    this.#handler = handler;
    this.#slots =
      o.maxConnections === Number.POSITIVE_INFINITY ? null : new Semaphore(o.maxConnections!);
    this.#idleMs = o.idleTimeoutMs!;
    this.#drainMs = o.drainTimeoutMs!;
    this.#closeMs = o.closeTimeoutMs!;
    this.#closeMax = o.closeMaxBytes!;
    this.#onError = o.onError;
    if (o.onAcceptError) listener.onAcceptError = o.onAcceptError;
  }

  /** True once the server began shutting down (it may still be finishing connections). */
  get draining(): boolean {
    return this.#drain.isSet;
  }

  /** Aborted when the server begins shutting down. */
  get drainSignal(): AbortSignal {
    return this.#drain.signal;
  }

  /** True once the server has stopped: every connection and the listener are closed. */
  get stopped(): boolean {
    return this.#task.done;
  }

  /** Connections open right now (handlers running or waiting for a slot). */
  get connections(): number {
    return this.#group?.size ?? 0;
  }

  /** Counters since the start. */
  get stats(): ServerStats {
    return {
      accepted: this.#accepted,
      open: this.connections,
      waiting: this.#slots?.waiting ?? 0,
      completed: this.#completed,
      failed: this.#failed,
      idleTimeouts: this.#idleTimeouts,
    };
  }

  /** @internal starts the server task. */
  start(): void {
    this.#task = spawn(() => this.#run(), { name: this.name });
  }

  async #run(): Promise<ShutdownReport> {
    const ctx = current();
    // Connections live behind a shield: cancelling the task that started the server must
    // drain them (guarantee 5), not cut them off. The group's own scope still cancels them.
    this.#group = new TaskGroup({
      name: `${this.name}/connections`,
      policy: 'supervise',
      shield: true,
    });
    // Built when first asked for (diagnostics, the task tree): a name string per connection
    // would be kept by every idle connection.
    if (!this.#slots) this.#group.afterBody = (t, r) => this.#afterHandler(t, r);
    this.#group.nameChild = (t) => `${this.name}/conn-${(t.arg as Connection).id}`;
    this.#groupCtx = { task: ctx.task, scope: this.#group.scope, mask: ctx.mask };
    const signal = ctx.scope.signal();
    const onAbort = () => this.#requestStop(this.#drainMs);
    // Accept callbacks run in whatever context Node gives them; bound once to the group's
    // context, each runs there without a context frame of its own per connection.
    const accept = runIn(this.#groupCtx, bindToContext, (socket: net.Socket) =>
      this.#accept(socket),
    );
    try {
      this.listener.attach(accept);
      // Wait for a shutdown request or the cancellation of this task, without a checkpoint:
      // for a server, being cancelled *means* "shut down gracefully".
      await new Promise<void>((resolve) => {
        this.#wakeStop = resolve;
        if (this.#stopRequested) resolve();
        else if (signal.aborted) onAbort();
        else signal.addEventListener('abort', onAbort, { once: true });
      });
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    try {
      return await this.#stop();
    } finally {
      this.#group.dispose();
    }
  }

  #accept(socket: net.Socket): void {
    this.#accepted++;
    const conn = new Connection(socket, { idleTimeoutMs: this.#idleMs, drain: this.#drain });
    if (this.#group.closed) {
      // Unreachable while the listener is open (it is closed before the group); kept so a
      // late socket is closed rather than leaked.
      socket.destroy();
      return;
    }
    this.#spawnOne(conn);
  }

  #spawnOne(conn: Connection): void {
    this.#busy++; // from the accept on: a shutdown's count must not miss a task not yet started
    try {
      this.#group.spawnWith(this.#serveOneFn, conn);
    } catch (e) {
      this.#busy--;
      throw e;
    }
  }

  /**
   * A connection task's body. Without `maxConnections` it is the handler alone, and
   * `#afterHandler` (the group's `afterBody`) settles: an idle connection then holds no
   * suspended frame, closure or promise of ours.
   */
  #serveOne(conn: Connection): unknown {
    return this.#slots ? this.#serveInSlot(conn, this.#slots) : this.#handler(conn);
  }

  /** `#settle` for a task whose body was the handler; the task ends as `#settle` does. */
  #afterHandler(t: Task<unknown>, r: Result<unknown>): Promise<Result<unknown>> {
    return this.#settle(t.arg as Connection, r.ok ? RETURNED : r.error).then(
      () => SETTLED,
      (error: unknown) => ({ ok: false, error }),
    );
  }

  async #serveInSlot(conn: Connection, slots: Semaphore): Promise<void> {
    try {
      await slots.acquire();
    } catch (e) {
      return this.#settle(conn, e); // cancelled while waiting for a slot
    }
    let outcome: unknown = RETURNED;
    try {
      await this.#handler(conn);
    } catch (e) {
      outcome = e;
    }
    slots.release();
    return this.#settle(conn, outcome);
  }

  /**
   * How a handler ended (`RETURNED` or what it threw): counted, reported unless it is a
   * cancellation or the idle limit, then the connection is closed gracefully; a cancellation
   * is rethrown after the close, so the task ends cancelled.
   */
  #settle(conn: Connection, outcome: unknown): Promise<void> {
    const cancelled = outcome !== RETURNED && isCancellation(outcome);
    if (outcome === RETURNED) this.#completed++;
    else if (outcome instanceof IdleTimeoutError) this.#idleTimeouts++;
    else if (!cancelled) {
      this.#failed++;
      this.#reportError(outcome, conn);
    }
    this.#busy--;
    const closing = conn.gracefulClose({ timeoutMs: this.#closeMs, maxBytes: this.#closeMax });
    return cancelled
      ? closing.then(() => {
          throw outcome;
        })
      : closing.then(noop);
  }

  #reportError(error: unknown, conn: Connection): void {
    const task = current().task?.name;
    const onError = this.#onError;
    if (onError) {
      const hookFailed = (e: unknown) =>
        report({
          code: 'QUIESCE_HANDLER_ERROR',
          message: `onError of ${this.name} failed while reporting the error of connection ${
            conn.id
          } (${describeError(error)})`,
          task,
          error: e,
        });
      try {
        observeHookResult(onError(error, conn), hookFailed);
      } catch (e) {
        hookFailed(e);
      }
      return;
    }
    report({
      code: 'QUIESCE_HANDLER_ERROR',
      message: `handler of ${this.name} failed on connection ${conn.id}`,
      task,
      error,
    });
  }

  #requestStop(drainMs: number): void {
    const at = drainMs < 0 ? Number.POSITIVE_INFINITY : now() + drainMs;
    if (at < this.#stopAt) {
      this.#stopAt = at;
      this.#retimeDrain?.();
    }
    if (this.#stopRequested) return;
    this.#stopRequested = true;
    this.#drain.set();
    this.#wakeStop?.();
  }

  /**
   * Keeps accepting until one event-loop turn passes without a new connection (at most
   * ACCEPT_LINGER_MS). Closing a listening socket makes the kernel reset every connection
   * still in its accept queue, and libuv takes them one per loop turn, so closing at once would
   * reset a burst that completed its handshakes just before the shutdown (guarantee 1).
   * Connections accepted meanwhile are served, and see `draining` from their first line.
   */
  async #acceptUntilQuiet(): Promise<void> {
    const until = performance.now() + ACCEPT_LINGER_MS;
    // The first immediate only reaches the end of the current loop turn; every later one
    // comes after a poll phase, which is where libuv accepts.
    await nextTurn();
    let seen: number;
    do {
      seen = this.#accepted;
      await nextTurn();
    } while (seen !== this.#accepted && performance.now() < until);
  }

  async #stop(): Promise<ShutdownReport> {
    const t0 = now();
    await this.#acceptUntilQuiet();
    const closed = this.listener.close();
    this.#group.close();
    const inFlight = this.#group.size;
    const idle = this.#group.idle();
    const inTime = await new Promise<boolean>((resolve) => {
      let d: ReturnType<typeof addDeadline> | null = null;
      const arm = () => {
        if (d) removeDeadline(d);
        d = null;
        if (this.#stopAt !== Number.POSITIVE_INFINITY)
          d = addDeadline(this.#stopAt, () => resolve(false));
      };
      this.#retimeDrain = arm;
      arm();
      idle.then(() => {
        if (d) removeDeadline(d);
        resolve(true);
      });
    });
    this.#retimeDrain = null;
    let cancelled = 0;
    if (!inTime) {
      cancelled = this.#busy;
      this.#group.scope.cancel({ kind: 'shutdown', reason: 'drain deadline', at: now() });
      await this.#group.idle();
    }
    await closed;
    return {
      drained: Math.max(0, inFlight - cancelled),
      cancelled,
      deadlineReached: !inTime,
      durationMs: now() - t0,
    };
  }

  /**
   * Shuts the server down gracefully (guarantee 4) and returns its report. The first call
   * starts it; a later call with a shorter `drainTimeoutMs` brings the deadline forward.
   * Stop accepting means closing this process's listening socket: for a socket it bound itself,
   * new connections are then refused (clients retry); for an inherited one the parent keeps the
   * socket open, so they wait in the kernel queue for the next process.
   * **Cancellation**: the request is made at once and stands; the wait is a blocking checkpoint
   * (a cancelled caller stops waiting while the server finishes draining on its own). In a
   * cancelled scope, wrap it: `await boundedCleanup(ms, () => server.shutdown())`.
   * @example
   * const report = await server.shutdown({ drainTimeoutMs: 10_000 });
   */
  shutdown(options?: ShutdownOptions): Promise<ShutdownReport> {
    const ms = options?.drainTimeoutMs ?? this.#drainMs;
    if (typeof ms !== 'number' || Number.isNaN(ms)) {
      throw new ArgumentError('shutdown: drainTimeoutMs must be a number');
    }
    this.#requestStop(ms);
    return this.#task.wait();
  }

  /**
   * Waits until the server has stopped (after a `shutdown()` or the cancellation of the task
   * that started it) and returns its report.
   * **Cancellation**: a blocking checkpoint. When the caller is the task that started the
   * server (the usual `run(main)` shape), its cancellation also shuts the server down, and
   * that task does not finish before the drain is over.
   * @example
   * await run(async () => { await serve(listener, handler).wait(); });
   */
  wait(): Promise<ShutdownReport> {
    return this.#task.wait();
  }

  /** Shuts down gracefully with the default deadline (`await using`). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }
}

/** `fn`, bound to the context current now (for `runIn`). */
function bindToContext<A extends unknown[]>(fn: (...a: A) => void): (...a: A) => void {
  return AsyncResource.bind(fn);
}

function nextTurn(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}

function option(name: string, v: unknown, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || Number.isNaN(v) || v < min) {
    throw new ArgumentError(`serve: ${name} must be a number >= ${min}, got ${String(v)}`);
  }
  return v;
}

/**
 * Serves `listener`: every accepted connection runs `handler(conn)` as a task of the server's
 * supervised group, and is closed gracefully when the handler settles. Returns at once; the
 * server runs as a child task of the caller until `shutdown()` or the caller's cancellation.
 * **Cancellation**: not a checkpoint; never blocks. Cancelling the calling task shuts the
 * server down gracefully (guarantee 5).
 * @example
 * await run(async () => {
 *   const listener = await listen({ host: '127.0.0.1', port: 8080 });
 *   const server = serve(listener, async (conn) => {
 *     await conn.write('Hello.\n');
 *     await conn.write('Goodbye.\n');
 *   });
 *   await server.wait(); // SIGTERM: drain, then exit 143
 * });
 */
export function serve(listener: Listener, handler: Handler, options?: ServeOptions): Server {
  if (typeof handler !== 'function') {
    throw new ArgumentError('serve(listener, handler): handler must be a function');
  }
  if (listener === null || typeof listener !== 'object' || typeof listener.attach !== 'function') {
    throw new ArgumentError('serve(listener, handler): listener must come from listen()');
  }
  if (listener.taken) throw new ListenerInUseError('this listener is already being served');
  if (listener.closed) throw new ListenerInUseError('this listener is closed');
  const max = options?.maxConnections;
  if (
    max !== undefined &&
    max !== Number.POSITIVE_INFINITY &&
    !(Number.isInteger(max) && max >= 1)
  ) {
    throw new ArgumentError(`serve: maxConnections must be an integer >= 1, got ${String(max)}`);
  }
  for (const hook of ['onError', 'onAcceptError'] as const) {
    const f = options?.[hook];
    if (f !== undefined && typeof f !== 'function') {
      throw new ArgumentError(`serve: ${hook} must be a function, got ${String(f)}`);
    }
  }
  const o: ServeOptions = {
    ...options,
    maxConnections: option('maxConnections', options?.maxConnections, Infinity, 1),
    idleTimeoutMs: option('idleTimeoutMs', options?.idleTimeoutMs, 120_000, 1),
    drainTimeoutMs: option('drainTimeoutMs', options?.drainTimeoutMs, 30_000, -Infinity),
    closeTimeoutMs: option('closeTimeoutMs', options?.closeTimeoutMs, 2000, 0),
    closeMaxBytes: option('closeMaxBytes', options?.closeMaxBytes, 65536, 0),
  };
  const server = new Server(listener, handler, o);
  server.start();
  return server;
}
