/**
 * `serveHttp`: a `node:http` server whose requests are cancellable and whose shutdown is one
 * budget split into phases — the HTTP counterpart of net's `serve`.
 *
 * Guarantees, and who keeps them:
 * 1. Every request runs in its own cancel scope inside the server's task (a scope, not a
 *    task: a task per request cost two thirds of the throughput): `currentSignal()` and every
 *    checkpoint in the handler see it cancelled when the client goes away before the response
 *    ends (`res` 'close' before `writableEnded`), at `requestTimeoutMs`, and at the drain
 *    deadline; its `finally`/`bracket` cleanup runs in the cleanup window, which is the
 *    cancel grace (`RequestLife`). Tasks a handler spawns are cancelled with its scope.
 * 2. Shutdown = propagation (readiness fails, serving goes on; ends early once new connections
 *    stop, if `propagationQuietMs` is set), drain (drain.js: `Connection: close`, no-race idle
 *    closes, graceful closes), cancel grace (requests cancelled, then sockets destroyed).
 *    The phases are checked against the budget at start-up (`resolveBudget`).
 * 3. Cancelling the task that started the server is a graceful shutdown: requests are
 *    shielded from that cancellation and drained with the configured phases (`#run`).
 * 4. `shutdown()` resolves only when every socket and the listener are closed and every
 *    handler has settled: handlers still running then are cancelled, and one that ignores its
 *    cancellation is let go, and counted, one cancel grace later (`#stop`).
 * 5. Readiness and liveness probes (opt-in paths) answer as Kubernetes expects: readiness 503
 *    while not ready (starting, or `setReady(false)`) and from the shutdown request on,
 *    liveness 200 until the server stops (`#probe`).
 */
import http from 'node:http';
import type https from 'node:https';
import type { AddressInfo } from 'node:net';
import {
  ArgumentError,
  type CancelCause,
  isCancellation,
  now,
  spawn,
  type Task,
  TaskGroup,
} from '../core/index.ts';
import {
  addDeadline,
  CancelScope,
  type Ctx,
  current,
  type Deadline,
  removeDeadline,
  report,
  runIn,
  runnerIn,
} from '../core/internal.ts';
import type { Listener } from '../net/index.ts';
import {
  attachDrain,
  type DrainHandle,
  type DrainOptions,
  type DrainReport,
  setAfterResponseClose,
} from './drain.js';
import { ShutdownBudgetError } from './errors.ts';

/** What handles a request: a plain `(req, res)` listener, an Express app, Koa's `app.callback()`, … */
export type RequestListener = (req: http.IncomingMessage, res: http.ServerResponse) => unknown;

/** Where to serve: a TCP port, a quiesce/net `Listener` (unix path, inherited fd), or a node server as it is. */
export type ServeTarget =
  | { port: number; host?: string; backlog?: number }
  | { listener: Listener }
  | http.Server
  | https.Server;

/** The environment variable a shutdown budget is read from when the option is not given. */
export const SHUTDOWN_BUDGET_ENV = 'QUIESCE_SHUTDOWN_BUDGET_SECONDS';

/** Options for `serveHttp`. */
export interface ServeHttpOptions extends DrainOptions {
  /** A name for diagnostics and the task tree. Default: `http-<n>`. */
  name?: string;
  /**
   * The whole shutdown, propagation + drain + cancel grace, in ms. Default: from
   * `QUIESCE_SHUTDOWN_BUDGET_SECONDS` (seconds) when set, else none (the drain then takes
   * `drainTimeoutMs`). With a budget, `drainTimeoutMs` defaults to what is left of it.
   */
  shutdownBudgetMs?: number;
  /** Phase 1: readiness fails while serving goes on, so load balancers stop sending. Default: 0. */
  propagationMs?: number;
  /** Phase 1 ends early once no new connection arrived for this long. Default: none (the whole `propagationMs`). */
  propagationQuietMs?: number;
  /** Phase 2: how long in-flight requests may take. Default: 30000, or the budget's rest. */
  drainTimeoutMs?: number;
  /** Phase 3: after the drain deadline cancels requests, how long their cleanup may take before sockets are destroyed. Default: 2000. */
  cancelGraceMs?: number;
  /** A deadline per request, from its start: the request is cancelled then. Default: none. */
  requestTimeoutMs?: number;
  /** Path answering the readiness probe (`/readyz`, say). Default: none. */
  readinessPath?: string;
  /** Path answering the liveness probe (`/livez`, say). Default: none. */
  livenessPath?: string;
  /** Whether readiness passes from the start; `false` until `setReady(true)`. Default: true. */
  startReady?: boolean;
  /** Sets the node server's `keepAliveTimeout` (ms). Default: node's (5000), or left as it is for an adopted server. */
  keepAliveTimeoutMs?: number;
  /** The idle timeout of the load balancer in front: a warning if `keepAliveTimeout` is not above it. Default: none. */
  loadBalancerIdleTimeoutMs?: number;
  /**
   * Where a handler's error goes (a thrown or rejected listener). Default: a
   * `QUIESCE_HANDLER_ERROR` diagnostic. A 500 is sent when no header was written yet.
   */
  onError?: (error: unknown, req: http.IncomingMessage) => unknown;
}

/** Options for `server.shutdown`. */
export interface HttpShutdownOptions {
  /** The drain phase's deadline. Default: the server's `drainTimeoutMs`. */
  drainTimeoutMs?: number;
}

/** What a stopped server reports: the drain engine's report plus the phases. */
export interface HttpShutdownReport extends DrainReport {
  /** Time spent in the propagation phase. */
  readonly propagationMs: number;
  /** Requests still running at the drain deadline, and cancelled there. */
  readonly requestsCancelled: number;
  /** Handlers whose promise had not settled when their socket was gone (their cancellation ignored). */
  readonly handlersAbandoned: number;
  /** From the shutdown request to the last socket closed, all phases, in ms. */
  readonly totalMs: number;
}

/** The shutdown phases as resolved at start-up. */
export interface ShutdownPhases {
  readonly budgetMs: number | undefined;
  readonly propagationMs: number;
  readonly drainTimeoutMs: number;
  readonly cancelGraceMs: number;
}

/** Where a server is in its life. */
export type HttpServerState = 'serving' | 'propagating' | 'draining' | 'stopped';

let serverIds = 1;

function msOption(name: string, v: unknown, dflt: number, min = 0): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || Number.isNaN(v) || v < min) {
    throw new ArgumentError(`serveHttp: ${name} must be a number >= ${min}, got ${String(v)}`);
  }
  return v;
}

/**
 * Resolves the phases of one shutdown budget (option, else the environment), or throws
 * `ShutdownBudgetError` naming the phases that do not fit.
 * **Cancellation**: synchronous.
 * @example
 * resolveBudget({ shutdownBudgetMs: 30_000, propagationMs: 5000 }, {});
 * // { budgetMs: 30000, propagationMs: 5000, drainTimeoutMs: 23000, cancelGraceMs: 2000 }
 */
export function resolveBudget(
  o: Pick<
    ServeHttpOptions,
    'shutdownBudgetMs' | 'propagationMs' | 'drainTimeoutMs' | 'cancelGraceMs'
  >,
  env: Record<string, string | undefined> = process.env,
): ShutdownPhases {
  let budgetMs = o.shutdownBudgetMs;
  if (budgetMs === undefined && env[SHUTDOWN_BUDGET_ENV] !== undefined) {
    const raw = env[SHUTDOWN_BUDGET_ENV]!;
    const s = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(s) || s <= 0) {
      throw new ShutdownBudgetError(
        `${SHUTDOWN_BUDGET_ENV} must be a number of seconds > 0 (Kubernetes' terminationGracePeriodSeconds), got '${raw}'`,
      );
    }
    budgetMs = s * 1000;
  } else if (budgetMs !== undefined) {
    msOption('shutdownBudgetMs', budgetMs, 0);
  }
  const propagationMs = msOption('propagationMs', o.propagationMs, 0);
  const cancelGraceMs = msOption('cancelGraceMs', o.cancelGraceMs, 2000);
  if (budgetMs === undefined) {
    return {
      budgetMs,
      propagationMs,
      drainTimeoutMs: msOption('drainTimeoutMs', o.drainTimeoutMs, 30_000),
      cancelGraceMs,
    };
  }
  const rest = budgetMs - propagationMs - cancelGraceMs;
  const drainTimeoutMs = msOption('drainTimeoutMs', o.drainTimeoutMs, rest);
  if (rest <= 0 || drainTimeoutMs > rest) {
    throw new ShutdownBudgetError(
      `the shutdown budget of ${budgetMs} ms cannot hold propagationMs ${propagationMs} + ` +
        `drainTimeoutMs ${o.drainTimeoutMs ?? '(the rest)'} + cancelGraceMs ${cancelGraceMs}: ` +
        'shorten a phase or raise the budget',
    );
  }
  return { budgetMs, propagationMs, drainTimeoutMs, cancelGraceMs };
}

/**
 * A running HTTP server whose requests run in cancel scopes of their own. Made by `serveHttp`.
 * `await using server = await serveHttp(...)` shuts it down gracefully at scope exit.
 */
export class HttpServer implements AsyncDisposable {
  readonly name: string;
  /** The node server (created, or the one adopted). */
  readonly server: http.Server | https.Server;
  /** The shutdown phases, as checked at start-up. */
  readonly phases: ShutdownPhases;
  readonly #app: RequestListener | null;
  readonly #listener: Listener | null;
  readonly #drainer: DrainHandle;
  readonly #o: ServeHttpOptions;
  #state: HttpServerState = 'serving';
  #ready: boolean;
  #task!: Task<HttpShutdownReport>;
  #group!: TaskGroup;
  #groupCtx!: Ctx;
  // Requests whose scope is open: from the 'request' event to its response's close (and its
  // handler's promise settling, or being abandoned). Invariant: #running === number of
  // requests counted in #spawnRequest whose RequestLife has not ended.
  #running = 0;
  #idleWaiter: (() => void) | null = null;
  #stopRequested = false;
  #drainMs: number;
  #wakeStop: (() => void) | null = null;
  #cutPropagation: (() => void) | null = null;
  #adopted: RequestListener | null = null;
  // Handlers whose response is closed but whose promise has not settled, waiting for the end
  // of the drain to be let go. Invariant: empty, and never added to, once #released.
  readonly #parked = new Set<RequestLife>();
  #released = false;
  #abandoned = 0;
  #cancelledAtDeadline = 0;
  readonly #onRequest: (req: http.IncomingMessage, res: http.ServerResponse) => void;
  // Set for a server that listened here (listenHere): enters a request's context.
  #enter: (<A, R>(ctx: Ctx, fn: (a: A) => R, a: A) => R) | null = null;

  /** @internal use `serveHttp`. */
  constructor(
    server: http.Server | https.Server,
    app: RequestListener | null,
    listener: Listener | null,
    phases: ShutdownPhases,
    o: ServeHttpOptions,
  ) {
    this.name = o.name ?? `http-${serverIds++}`;
    this.server = server;
    this.#app = app;
    this.#listener = listener;
    this.phases = phases;
    this.#drainMs = phases.drainTimeoutMs;
    this.#o = o;
    this.#ready = o.startReady ?? true;
    this.#drainer = attachDrain(server, {
      minIdleMs: o.minIdleMs,
      lingerMs: o.lingerMs,
      lingerMaxBytes: o.lingerMaxBytes,
      onUpgraded: o.onUpgraded,
    });
    setAfterResponseClose(server, afterResponseClose);
    const probes = o.readinessPath !== undefined || o.livenessPath !== undefined;
    this.#onRequest = probes
      ? (req, res) => {
          if (!this.#probe(req, res)) this.#spawnRequest(req, res);
        }
      : (req, res) => this.#spawnRequest(req, res);
  }

  /** The bound TCP port (undefined for a unix socket). */
  get port(): number | undefined {
    if (this.#listener) return this.#listener.port;
    const a = this.server.address();
    return a !== null && typeof a === 'object' ? (a as AddressInfo).port : undefined;
  }

  /** `'serving'`, then `'propagating'` and `'draining'` during a shutdown, then `'stopped'`. */
  get state(): HttpServerState {
    return this.#state;
  }

  /** True once a shutdown was requested. */
  get draining(): boolean {
    return this.#state !== 'serving';
  }

  /** Aborted when the drain phase begins (end SSE streams and long polls on it). */
  get drainSignal(): AbortSignal {
    return this.#drainer.drainSignal;
  }

  /** Whether the readiness probe passes now. */
  get ready(): boolean {
    return this.#ready && this.#state === 'serving';
  }

  /** Marks the server ready or not for the readiness probe (a shutdown makes it fail for good). */
  setReady(ready: boolean): void {
    this.#ready = ready;
  }

  /** Connections by state, and counts since the start (the drain engine's stats), plus requests running. */
  stats(): ReturnType<DrainHandle['stats']> & { readonly requestsRunning: number } {
    return { ...this.#drainer.stats(), requestsRunning: this.#running };
  }

  /** @internal starts the server task and takes the requests. */
  start(): void {
    this.#task = spawn(() => this.#run(), { name: this.name });
    const s = this.server;
    if (this.#app) {
      s.on('request', this.#onRequest);
    } else {
      // An adopted server keeps its own request listeners; they run inside request scopes.
      const own = s.listeners('request') as RequestListener[];
      s.removeAllListeners('request');
      const app: RequestListener = (req, res) => {
        for (const l of own) l.call(s, req, res);
      };
      this.#adopted = app;
      s.on('request', this.#onRequest);
    }
    if (this.#listener) {
      const accept = (socket: import('node:net').Socket) => {
        s.emit('connection', socket);
        socket.resume();
      };
      // Once per connection, so that its requests start in the requests' context.
      this.#listener.attach((socket) => runIn(this.#groupCtx, accept, socket));
    }
  }

  async #run(): Promise<HttpShutdownReport> {
    const ctx = current();
    // Requests live behind a shield: cancelling the task that started the server must drain
    // them (guarantee 3), not cut them off. The group is the parent scope of every request's
    // scope; its cleanup window is the cancel grace.
    this.#group = new TaskGroup({
      name: `${this.name}/requests`,
      shield: true,
      cleanupTimeoutMs: this.phases.cancelGraceMs,
    });
    this.#groupCtx = { task: ctx.task, scope: this.#group.scope, mask: ctx.mask };
    const signal = ctx.scope.signal();
    const onAbort = () => this.#requestStop(this.#drainMs);
    try {
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

  #requestStop(drainMs: number): void {
    if (this.#stopRequested) {
      // A second request: no more waiting for propagation, and maybe an earlier deadline.
      this.#cutPropagation?.();
      if (drainMs < this.#drainMs) this.#drainMs = drainMs;
      if (this.#state === 'draining') void this.#drainer.drain({ deadlineMs: drainMs });
      return;
    }
    this.#stopRequested = true;
    this.#state = 'propagating'; // readiness fails from the request on
    this.#drainMs = drainMs;
    this.#wakeStop?.();
  }

  /**
   * Starts a request's life (guarantee 1): a scope of its own, a child of the requests' scope
   * (so tasks the handler spawns are cancelled with it), open from the request until its
   * response closes and its handler's promise settles. No async frame: this runs per request.
   */
  #spawnRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.#running++;
    const g = this.#groupCtx;
    const life = new RequestLife(this, new CancelScope(g.scope), req, res);
    const ms = this.#o.requestTimeoutMs;
    if (ms !== undefined && ms !== Number.POSITIVE_INFINITY) life.setDeadline(now() + ms);
    // The handler's context: the caller's frame (node:http emits in the context the
    // connection was accepted in) with the request's scope.
    const ctx: Ctx = { task: g.task, scope: life.scope, mask: g.mask };
    if (this.#enter !== null) this.#enter(ctx, runHandler, life);
    else runIn(ctx, runHandler, life);
  }

  /** @internal runs `fn` in the requests' context (listening there makes it the requests'). */
  inRequestContext<T>(fn: () => T): T {
    return runIn(this.#groupCtx, call, fn) as T;
  }

  /**
   * @internal listens in the requests' context, and makes the runner that enters a request
   * there: a server listening in a frame emits every request in that very frame, so one
   * AsyncResource serves them all (a server adopted, or fed by a net Listener, emits in
   * frames of its own and pays a `runIn` per request).
   */
  listenHere(listen: () => Promise<void>): Promise<void> {
    return this.inRequestContext(() => {
      this.#enter = runnerIn();
      return listen();
    });
  }

  /** @internal calls the handler inside the request's scope. */
  handle(life: RequestLife): void {
    const { req, res } = life;
    let r: unknown;
    try {
      r = (this.#app ?? this.#adopted!)(req, res);
    } catch (e) {
      this.#failed(e, req, res, current());
      return;
    }
    if (!isThenable(r)) return;
    life.pending = true;
    r.then(
      () => life.settled(),
      (e: unknown) => {
        if (!life.abandoned) this.#failed(e, req, res, current());
        life.settled();
      },
    );
  }

  /**
   * @internal a request whose response closed while its handler's promise is pending: it
   * waits for the end of the drain to be let go (the handler ignored its cancellation).
   */
  park(life: RequestLife): void {
    if (this.#released) life.letGo();
    else {
      life.parked = true;
      this.#parked.add(life);
    }
  }

  /** @internal a request's life ended. */
  ended(life: RequestLife): void {
    if (life.parked) this.#parked.delete(life);
    if (life.abandoned) this.#abandoned++;
    if (--this.#running === 0 && this.#idleWaiter) this.#idleWaiter();
  }

  #failed(e: unknown, req: http.IncomingMessage, res: http.ServerResponse, ctx: Ctx): void {
    if (isCancellation(e)) {
      // Cancelled and nothing sent: say so, and do not keep the connection.
      if (!res.headersSent && !res.destroyed) {
        res.shouldKeepAlive = false;
        res.statusCode = 503;
        res.end();
      } else if (!res.writableEnded) {
        res.destroy();
      }
      return;
    }
    if (!res.headersSent && !res.destroyed) {
      res.statusCode = 500;
      res.end();
    } else if (!res.writableEnded) {
      res.destroy();
    }
    const onError = this.#o.onError;
    try {
      if (onError) {
        const r = onError(e, req);
        if (isThenable(r)) Promise.resolve(r).catch((err) => this.#reportError(err, req, ctx));
      } else {
        this.#reportError(e, req, ctx);
      }
    } catch (err) {
      this.#reportError(err, req, ctx);
    }
  }

  #reportError(error: unknown, req: http.IncomingMessage, ctx: Ctx): void {
    report({
      code: 'QUIESCE_HANDLER_ERROR',
      message: `handler of ${this.name} failed on ${req.method} ${req.url}`,
      task: ctx.task?.name,
      error,
    });
  }

  /** Answers a probe path; false when `req` is not one. */
  #probe(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    const url = req.url ?? '';
    const path = url.includes('?') ? url.slice(0, url.indexOf('?')) : url;
    let ok: boolean;
    if (path === this.#o.readinessPath) ok = this.ready;
    else if (path === this.#o.livenessPath) ok = this.#state !== 'stopped';
    else return false;
    const body = ok ? 'ok\n' : this.#state === 'serving' ? 'not ready\n' : 'draining\n';
    res.writeHead(ok ? 200 : 503, {
      'content-type': 'text/plain; charset=utf-8',
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(body),
    });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  }

  /** Phase 1: readiness fails; serving goes on until `propagationMs`, or until quiet. */
  async #propagate(): Promise<void> {
    const total = this.phases.propagationMs;
    if (total <= 0) return;
    const quiet = this.#o.propagationQuietMs;
    const end = now() + total;
    await new Promise<void>((resolve) => {
      let d: Deadline | null = null;
      let seen = this.#drainer.stats().accepted;
      const finish = () => {
        if (d) removeDeadline(d);
        d = null;
        this.#cutPropagation = null;
        resolve();
      };
      const arm = () => {
        const left = end - now();
        if (left <= 0) return finish();
        const step = quiet === undefined ? left : Math.min(left, quiet);
        d = addDeadline(now() + step, () => {
          d = null;
          const accepted = this.#drainer.stats().accepted;
          if (quiet !== undefined && accepted === seen) return finish();
          seen = accepted;
          arm();
        });
      };
      this.#cutPropagation = finish;
      arm();
    });
  }

  async #stop(): Promise<HttpShutdownReport> {
    const t0 = now();
    this.#state = 'propagating';
    await this.#propagate();
    const propagationMs = now() - t0;
    this.#state = 'draining';
    const listener = this.#listener;
    const group = this.#group;
    const drained = this.#drainer.drain({
      deadlineMs: this.#drainMs,
      graceMs: this.phases.cancelGraceMs,
      closeListener: listener === null,
      listenerClosed: listener ? this.#closeListener(listener) : undefined,
      onDeadline: () => {
        this.#cancelledAtDeadline = this.#running;
        const scope: CancelScope = group.scope;
        scope.cancel({ kind: 'shutdown', reason: 'drain deadline', at: now() });
      },
    });
    const d = await drained;
    // Every socket is closed, so every response is. Handlers still running after their
    // response are cancelled now (the drain may have ended before its deadline) and get one
    // more cancel grace; then the ones that ignore their cancellation are let go (guarantee 4).
    if (this.#running > 0) {
      group.scope.cancel({ kind: 'shutdown', reason: 'server stopped', at: now() });
      await new Promise<void>((resolve) => {
        const d = addDeadline(now() + this.phases.cancelGraceMs, () => {
          this.#idleWaiter = null;
          resolve();
        });
        this.#idleWaiter = () => {
          removeDeadline(d);
          this.#idleWaiter = null;
          resolve();
        };
      });
    }
    this.#released = true;
    for (const life of [...this.#parked]) life.letGo();
    this.#parked.clear();
    if (this.#running > 0) await new Promise<void>((r) => (this.#idleWaiter = r));
    group.close();
    this.#state = 'stopped';
    this.server.off('request', this.#onRequest);
    return {
      ...d,
      propagationMs,
      requestsCancelled: this.#cancelledAtDeadline,
      handlersAbandoned: this.#abandoned,
      totalMs: now() - t0,
    };
  }

  /** For a net `Listener`: keep accepting until the kernel's queue is quiet, then close. */
  async #closeListener(listener: Listener): Promise<void> {
    const until = performance.now() + 1000;
    await nextTurn();
    let seen: number;
    do {
      seen = this.#drainer.stats().accepted;
      await nextTurn();
    } while (seen !== this.#drainer.stats().accepted && performance.now() < until);
    await listener.close();
  }

  /**
   * Shuts the server down gracefully — propagation, drain, cancel grace — and returns its
   * report once every socket is closed. The first call starts it; a later call skips what is
   * left of the propagation and may bring the drain deadline forward.
   * **Cancellation**: the request is made at once and stands; the wait is a blocking
   * checkpoint (a cancelled caller stops waiting while the server finishes on its own).
   * @example
   * const report = await server.shutdown({ drainTimeoutMs: 10_000 });
   */
  shutdown(options?: HttpShutdownOptions): Promise<HttpShutdownReport> {
    const ms = options?.drainTimeoutMs ?? this.#drainMs;
    if (typeof ms !== 'number' || Number.isNaN(ms)) {
      throw new ArgumentError('shutdown: drainTimeoutMs must be a number');
    }
    this.#requestStop(ms);
    return this.#task.wait();
  }

  /**
   * Waits until the server has stopped and returns its report.
   * **Cancellation**: a blocking checkpoint; when the caller is the task that started the
   * server, its cancellation is also the server's graceful shutdown.
   * @example
   * await run(async () => { const s = await serveHttp(app, { port: 8080 }); await s.wait(); });
   */
  wait(): Promise<HttpShutdownReport> {
    return this.#task.wait();
  }

  /** Shuts down gracefully with the configured phases (`await using`). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }
}

const kLife = Symbol('quiesce.http.request');

/** The drain engine's hook at a response's close: its request's life learns of it. */
function afterResponseClose(res: http.ServerResponse): void {
  const life = (res as unknown as { [kLife]?: RequestLife })[kLife];
  if (life !== undefined) life.onClose();
}

/**
 * One request, from its 'request' event to the end of its scope.
 * Invariant: the scope is closed exactly when closed && (!pending || abandoned).
 */
class RequestLife {
  readonly server: HttpServer;
  readonly scope: CancelScope;
  readonly req: http.IncomingMessage;
  readonly res: http.ServerResponse;
  pending = false;
  closed = false;
  abandoned = false;
  /** In the server's parked set (only then is there something to delete at the end). */
  parked = false;
  #deadline: Deadline | null = null;

  constructor(
    server: HttpServer,
    scope: CancelScope,
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ) {
    this.server = server;
    this.scope = scope;
    this.req = req;
    this.res = res;
    // No 'close' listener of its own: the drain engine's calls afterResponseClose, which
    // finds the life here. A property per response costs less than a second listener (a
    // listener array per response, cloned at the emit, and a closure).
    (res as unknown as { [kLife]: RequestLife })[kLife] = this;
  }

  setDeadline(at: number): void {
    this.#deadline = addDeadline(at, () => {
      this.#deadline = null;
      this.scope.cancel({
        kind: 'deadline',
        reason: 'requestTimeoutMs',
        deadline: at,
        at: now(),
      });
    });
  }

  onClose(): void {
    if (this.closed) return;
    // The client went away before the response ended: cancel the handler.
    if (!this.res.writableEnded) this.scope.cancel(CLIENT_GONE());
    this.closed = true;
    if (this.pending) this.server.park(this);
    else this.#end();
  }

  settled(): void {
    if (!this.pending) return;
    this.pending = false;
    if (this.closed) this.#end();
  }

  letGo(): void {
    if (!this.pending) return;
    this.abandoned = true;
    this.pending = false;
    this.#end();
  }

  #end(): void {
    if (this.#deadline) removeDeadline(this.#deadline);
    this.#deadline = null;
    this.scope.close();
    this.server.ended(this);
  }
}

function CLIENT_GONE(): CancelCause {
  return { kind: 'cancel', reason: 'client gone', at: now() };
}

function runHandler(life: RequestLife): void {
  life.server.handle(life);
}

function call<T>(fn: () => T): T {
  return fn();
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    v !== null &&
    (typeof v === 'object' || typeof v === 'function') &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}

function nextTurn(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}

function isNodeServer(t: unknown): t is http.Server {
  return (
    t !== null &&
    typeof t === 'object' &&
    typeof (t as http.Server).listen === 'function' &&
    typeof (t as http.Server).on === 'function' &&
    'keepAliveTimeout' in (t as object)
  );
}

/**
 * Serves HTTP: every request runs `app(req, res)` in a cancel scope of its own, and the server shuts down
 * without losing a request (propagation, drain, cancel grace). Resolves once it listens; the
 * server runs as a child task of the caller until `shutdown()` or the caller's cancellation.
 * `app` is any node request listener — an Express app, `koa.callback()`, Hono's
 * `getRequestListener(app.fetch)`, Fastify's `routing` — or `null` with an adopted server, to
 * keep its own request listeners.
 * **Cancellation**: not a checkpoint. Cancelling the calling task shuts the server down
 * gracefully (guarantee 3).
 * @example
 * await run(async () => {
 *   const server = await serveHttp((req, res) => res.end('hello\n'), { port: 8080 });
 *   await server.wait(); // SIGTERM: fail readiness, drain, exit 143
 * });
 */
export async function serveHttp(
  app: RequestListener | null,
  target: ServeTarget,
  options?: ServeHttpOptions,
): Promise<HttpServer> {
  if (app !== null && typeof app !== 'function') {
    throw new ArgumentError(
      'serveHttp(app, target): app must be a request listener (req, res) => …, or null to keep an adopted server’s own',
    );
  }
  const o = options ?? {};
  const phases = resolveBudget(o);
  msOption('requestTimeoutMs', o.requestTimeoutMs, 0, 1);
  if (o.propagationQuietMs !== undefined)
    msOption('propagationQuietMs', o.propagationQuietMs, 0, 1);
  for (const p of ['readinessPath', 'livenessPath'] as const) {
    const v = o[p];
    if (v !== undefined && (typeof v !== 'string' || !v.startsWith('/'))) {
      throw new ArgumentError(`serveHttp: ${p} must be a path starting with '/', got ${String(v)}`);
    }
  }
  if (o.onError !== undefined && typeof o.onError !== 'function') {
    throw new ArgumentError(`serveHttp: onError must be a function, got ${String(o.onError)}`);
  }
  let server: http.Server | https.Server;
  let listener: Listener | null = null;
  let listen: (() => Promise<void>) | null = null;
  if (isNodeServer(target)) {
    server = target;
    if (app !== null && server.listenerCount('request') > 0) {
      throw new ArgumentError(
        'serveHttp(app, server): the server already has a request listener; pass null as app to keep it',
      );
    }
    if (!server.listening) {
      throw new ArgumentError(
        'serveHttp(app, server): an adopted server must already listen (or pass { port } instead)',
      );
    }
  } else if (target !== null && typeof target === 'object' && 'listener' in target) {
    listener = target.listener;
    if (!listener || typeof listener.attach !== 'function') {
      throw new ArgumentError(
        'serveHttp(app, { listener }): listener must come from quiesce/net listen()',
      );
    }
    if (listener.taken || listener.closed) {
      throw new ArgumentError(
        'serveHttp(app, { listener }): this listener is closed or already served',
      );
    }
    if (app === null) throw new ArgumentError('serveHttp(null, { listener }): app is required');
    server = http.createServer();
  } else if (target !== null && typeof target === 'object' && 'port' in target) {
    const { port, host, backlog } = target;
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new ArgumentError(`serveHttp: port must be an integer 0-65535, got ${String(port)}`);
    }
    if (app === null) throw new ArgumentError('serveHttp(null, { port }): app is required');
    server = http.createServer();
    listen = () =>
      new Promise<void>((resolve, reject) => {
        const onError = (e: NodeJS.ErrnoException) => {
          reject(
            new ArgumentError(
              `serveHttp: cannot listen on ${host ?? '*'}:${port}: ${e.code ?? e.message}${
                e.code === 'EADDRINUSE' ? ' (another process listens there)' : ''
              }`,
            ),
          );
        };
        server.once('error', onError);
        server.listen({ port, host, backlog }, () => {
          server.off('error', onError);
          resolve();
        });
      });
  } else {
    throw new ArgumentError(
      'serveHttp(app, target): target must be { port, host? }, { listener }, or an http/https Server',
    );
  }
  if (o.keepAliveTimeoutMs !== undefined) {
    server.keepAliveTimeout = msOption('keepAliveTimeoutMs', o.keepAliveTimeoutMs, 5000);
  }
  const lb = o.loadBalancerIdleTimeoutMs;
  if (lb !== undefined) {
    msOption('loadBalancerIdleTimeoutMs', lb, 0);
    if (server.keepAliveTimeout !== 0 && server.keepAliveTimeout <= lb) {
      process.emitWarning(
        `keepAliveTimeout (${server.keepAliveTimeout} ms) is not above the load balancer's idle timeout (${lb} ms): ` +
          `the server may close a connection just as the load balancer reuses it (a 502). ` +
          `Set keepAliveTimeoutMs to ${lb + 1000} or more.`,
        { code: 'QUIESCE_KEEPALIVE_TIMEOUT', type: 'QuiesceWarning' },
      );
    }
  }
  const s = new HttpServer(server, app, listener, phases, o);
  s.start();
  if (listen) {
    try {
      await s.listenHere(listen);
    } catch (e) {
      await s.shutdown({ drainTimeoutMs: 0 }).catch(() => {});
      throw e;
    }
  }
  return s;
}
