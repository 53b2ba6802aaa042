/**
 * The supervisor: keeps the listening sockets, runs worker generations over them, reloads
 * without dropping a connection, restarts crashed workers.
 *
 * Guarantees, and who keeps them:
 * 1. The sockets outlive every worker (listeners.ts): from `start` to the end of `stop` the
 *    ports accept connections into their queue, and only workers take them out.
 * 2. Reload (`reload`): generation N+1 starts on the same sockets; only once every one of its
 *    workers has said `READY=1` is generation N asked to drain (`drainSignal`, SIGKILL after
 *    `drainTimeoutMs`). If N+1 exits or stays silent past `readyTimeoutMs`, it is stopped, N
 *    keeps serving untouched, and the reload fails with `ReloadError`.
 * 3. One reload at a time. A request that arrives while one runs is coalesced into exactly
 *    one more reload, started after the running one ends; every request that waited for it
 *    gets its result. So a reload always starts after the request for it, and code changed
 *    before the request is always what the new generation runs.
 * 4. Every worker process is owned by a task (its keeper): a worker is never left running
 *    unwatched, and cancelling the keeper drains it with a bounded wait.
 * 5. A worker of the serving generation that exits on its own is restarted after a backoff
 *    (100 ms, doubling, at most 10 s); more than `maxRestarts` exits of one slot within
 *    `restartWindowMs` is a crash loop: that slot is given up, and when no worker of the
 *    serving generation is left, `wait()` throws `CrashLoopError`.
 * 6. `stop` drains every worker at once, then closes the sockets and the control channel. If
 *    the process exits without `stop` (a forced exit, e.g. a second SIGINT), every live worker
 *    gets SIGKILL, the control socket file and unix listener files are removed, and the log
 *    says so.
 */
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { dirname, join } from 'node:path';
import {
  all,
  ArgumentError,
  cancelScope,
  checkpoint,
  isCancellation,
  type Result,
  rethrowCancellation,
  sleep,
  TaskGroup,
  timeout,
} from '../core/index.ts';
import { now } from '../core/clock.ts';
import { block, pollCancel, type Waiter } from '../core/context.ts';
import { checkDistinct, type ListenSpec, parseListenSpec } from './address.ts';
import { resolveCommand } from './command.ts';
import {
  ControlServer,
  type ControlRequest,
  type ControlResponse,
  defaultControlPath,
} from './control.ts';
import {
  CrashLoopError,
  ReloadError,
  SupervisorStoppingError,
  WorkerNotReadyError,
} from './errors.ts';
import { closeLeakedFds } from './fds.ts';
import { bindListeners, type Listener, type ListenerSet, systemdListenFds } from './listeners.ts';
import { notifySystemd } from './notify.ts';
import { describeExit, WorkerProcess, type WorkerState } from './worker.ts';

/** Options of a supervisor. Durations are in milliseconds. */
export interface SupervisorOptions {
  /** The worker's program: a path, or a name looked up in `PATH`. */
  command: string;
  /** Its arguments. */
  args?: readonly string[];
  /** Sockets to bind, as `--listen` values or parsed specs. Handed to workers from fd 3. */
  listen?: readonly (string | ListenSpec)[];
  /** Take the sockets systemd passed to this process (`LISTEN_FDS`), before `listen`. Default true. */
  systemd?: boolean;
  /** Workers per generation, all sharing the sockets. Default 1. */
  workers?: number;
  /** How long a new worker may take to say `READY=1`. Default 30 000. */
  readyTimeoutMs?: number;
  /** How long a draining worker may take to exit before SIGKILL. Default 30 000. */
  drainTimeoutMs?: number;
  /**
   * Last resort for workers that cannot report readiness: treat a worker as ready this long
   * after it started. A guess, not a signal. Default: off (wait for `READY=1`).
   */
  assumeReadyAfterMs?: number;
  /**
   * Node workers that do not call `notifyReady()`: preload a hook (through `NODE_OPTIONS`) that
   * reports `READY=1` once the worker listens on every socket it was given. Default false.
   */
  readyOnListen?: boolean;
  /**
   * Where Node workers keep their compiled-code cache (`NODE_COMPILE_CACHE`), so that every
   * generation after the first starts with a fraction of the CPU and competes less with the
   * generation still serving. Default: `compile-cache` beside the default control socket (a
   * private directory); `false` leaves the environment alone. A `NODE_COMPILE_CACHE` already
   * in the environment wins. Other languages ignore the variable.
   */
  compileCache?: string | false;
  /** The signal that asks a worker to drain. Default `'SIGTERM'`. */
  drainSignal?: NodeJS.Signals;
  /** Restarts of one worker slot allowed within `restartWindowMs`. Default 5. */
  maxRestarts?: number;
  /** The crash-loop window. Default 60 000. */
  restartWindowMs?: number;
  /** Control socket path; `false` for none. Default: `defaultControlPath(name)`. */
  control?: string | false;
  /** Supervisor name, for the default control path. Default `'default'`. */
  name?: string;
  /** The environment workers start from (and `LISTEN_FDS` is read from). Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Working directory of the workers. Default: the supervisor's. */
  cwd?: string;
  /** Close descriptors this process inherited without close-on-exec (see fds.ts). Default true. */
  closeLeakedFds?: boolean;
  /** Where progress lines go. Default: stderr, prefixed `quiesce: `. */
  log?: (line: string) => void;
}

/** What a successful reload did. */
export interface ReloadResult {
  /** The generation now serving. */
  readonly generation: number;
  /** The generation it replaced (draining now), or null for the first start. */
  readonly previous: number | null;
  /** The new workers' process ids. */
  readonly pids: readonly number[];
  /** From the start of the new generation until all its workers were ready. */
  readonly readyMs: number;
}

/** One worker in `status()`. */
export interface WorkerStatus {
  readonly slot: number;
  readonly pid: number | null;
  readonly state: WorkerState | 'restarting' | 'crash-loop';
  readonly uptimeMs: number;
  /** Restarts of this slot after crashes. */
  readonly restarts: number;
  /** The worker's last `STATUS=` line, if it wrote one. */
  readonly status: string | null;
}

/** One generation in `status()`. */
export interface GenerationStatus {
  readonly id: number;
  readonly state: GenerationState;
  readonly workers: readonly WorkerStatus[];
}

/** A generation's lifecycle. */
export type GenerationState = 'starting' | 'serving' | 'draining' | 'failed';

/** A snapshot of the supervisor, as `quiesce status` shows it. */
export interface SupervisorStatus {
  readonly pid: number;
  readonly state: 'starting' | 'running' | 'stopping' | 'stopped';
  readonly command: readonly string[];
  readonly startedAt: string;
  readonly uptimeMs: number;
  readonly control: string | null;
  readonly listeners: readonly { name: string; address: string; fd: number }[];
  /** The serving generation, or null before the first one is ready. */
  readonly generation: number | null;
  readonly reloads: {
    readonly ok: number;
    readonly failed: number;
    readonly running: boolean;
    readonly queued: boolean;
    readonly lastError: string | null;
  };
  /** Live generations, newest first. */
  readonly generations: readonly GenerationStatus[];
}

interface Slot {
  readonly index: number;
  restarts: number;
  crashes: number[];
  state: 'running' | 'restarting' | 'crash-loop';
}

interface Member {
  readonly proc: WorkerProcess;
  readonly gen: Generation;
  readonly slot: Slot;
  retired: boolean;
  /** Stopped because it never got ready (counts as a crash, unlike a retirement). */
  startFailed: boolean;
  /** Its exit was dealt with (restart scheduled, or nothing to do); `#onExit` acts once. */
  exitHandled: boolean;
  retire: (reason: string) => void;
}

class Generation {
  readonly id: number;
  state: GenerationState = 'starting';
  readonly slots: Slot[];
  readonly members = new Set<Member>();
  constructor(id: number, workers: number) {
    this.id = id;
    this.slots = Array.from({ length: workers }, (_, index) => ({
      index,
      restarts: 0,
      crashes: [],
      state: 'running' as const,
    }));
  }
}

/** A reload request and everyone waiting for its result. */
class ReloadRun {
  outcome: Result<ReloadResult> | null = null;
  readonly #waiters = new Set<Waiter<Result<ReloadResult>>>();

  settle(r: Result<ReloadResult>): void {
    if (this.outcome) return;
    this.outcome = r;
    for (const w of this.#waiters) w.commit(r);
    this.#waiters.clear();
  }

  async wait(): Promise<ReloadResult> {
    let r: Result<ReloadResult>;
    if (this.outcome) {
      pollCancel();
      r = this.outcome;
    } else {
      r = await block<Result<ReloadResult>>((w) => {
        this.#waiters.add(w);
        return () => this.#waiters.delete(w);
      });
    }
    if (r.ok) return r.value;
    throw r.error;
  }
}

// The preload beside this module: .ts when running from source, .js when built.
const READY_ON_LISTEN = `--import=${
  new URL(`./ready-on-listen${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url)
    .href
}`;

/** The most workers a generation may have (`workers`, `--workers`). */
export const MAX_WORKERS = 1024;

/** `worker 4242`, or `worker` for one that never started. */
function who(p: WorkerProcess): string {
  return p.pid === undefined ? 'worker' : `worker ${p.pid}`;
}

/** The soft limit on open files (`ulimit -n`), or null where /proc does not say. */
function openFileLimit(): number | null {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * What to tell the user when a worker never said `READY=1`: the usual cause is a server that
 * does not know it has to (a plain Node server), or one that ran to its end.
 */
function readyHint(o: Normalized, how: 'silent' | 'exited'): string {
  const keep = how === 'exited' ? 'a worker must keep serving; ' : '';
  if (o.nodePreload) {
    return (
      ` (${keep}with --ready-on-listen, a Node worker is ready once it has called ` +
      'listen({ fd }) on every socket it was given, from fd 3)'
    );
  }
  const say = how === 'exited' ? 'it says it is ready' : 'a worker says it is ready';
  return (
    ` (${keep}${say} by writing READY=1 to the descriptor in $QUIESCE_READY_FD: ` +
    'notifyReady() in Node, or --ready-on-listen for an unmodified Node server)'
  );
}

const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 10_000;
const KILL_WAIT_MS = 5_000;

interface Normalized {
  command: string;
  args: string[];
  specs: ListenSpec[];
  systemd: boolean;
  workers: number;
  readyTimeoutMs: number;
  drainTimeoutMs: number;
  assumeReadyAfterMs: number | undefined;
  nodePreload: string | undefined;
  compileCache: string | undefined;
  drainSignal: NodeJS.Signals;
  maxRestarts: number;
  restartWindowMs: number;
  control: string | false;
  privateControlDir: boolean;
  env: NodeJS.ProcessEnv;
  cwd: string | undefined;
  closeLeakedFds: boolean;
  log: (line: string) => void;
}

function ms(name: string, v: unknown, dflt: number, min = 0): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) {
    throw new ArgumentError(`${name} must be a duration in ms (>= ${min}), got ${String(v)}`);
  }
  return v;
}

function int(name: string, v: unknown, dflt: number, min: number, max = Infinity): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    const range = max === Infinity ? `>= ${min}` : `from ${min} to ${max}`;
    throw new ArgumentError(`${name} must be an integer ${range}, got ${String(v)}`);
  }
  return v;
}

function normalize(o: SupervisorOptions): Normalized {
  if (!o || typeof o.command !== 'string' || o.command === '') {
    throw new ArgumentError('supervisor: command must be a non-empty string');
  }
  const env = o.env ?? process.env;
  const drainSignal = o.drainSignal ?? 'SIGTERM';
  if (!(drainSignal in osConstants.signals)) {
    throw new ArgumentError(`drainSignal: unknown signal ${String(drainSignal)}`);
  }
  const specs = (o.listen ?? []).map((s) => (typeof s === 'string' ? parseListenSpec(s) : s));
  checkDistinct(specs);
  const name = o.name ?? 'default';
  const control = o.control === false ? false : (o.control ?? defaultControlPath(name, env));
  return {
    command: o.command,
    args: [...(o.args ?? [])],
    specs,
    systemd: o.systemd !== false,
    workers: int('workers', o.workers, 1, 1, MAX_WORKERS),
    readyTimeoutMs: ms('readyTimeoutMs', o.readyTimeoutMs, 30_000, 1),
    drainTimeoutMs: ms('drainTimeoutMs', o.drainTimeoutMs, 30_000),
    assumeReadyAfterMs:
      o.assumeReadyAfterMs === undefined
        ? undefined
        : ms('assumeReadyAfterMs', o.assumeReadyAfterMs, 0),
    nodePreload: o.readyOnListen ? READY_ON_LISTEN : undefined,
    compileCache:
      o.compileCache === false
        ? undefined
        : (o.compileCache ?? join(dirname(defaultControlPath(name, env)), 'compile-cache')),
    drainSignal,
    maxRestarts: int('maxRestarts', o.maxRestarts, 5, 0),
    restartWindowMs: ms('restartWindowMs', o.restartWindowMs, 60_000, 1),
    control,
    privateControlDir: o.control === undefined,
    env,
    cwd: o.cwd,
    closeLeakedFds: o.closeLeakedFds !== false,
    log: o.log ?? ((line) => process.stderr.write(`quiesce: ${line}\n`)),
  };
}

/**
 * A running supervisor. `Supervisor.start` binds the sockets and brings up generation 1;
 * `reload`, `status` and `stop` are what the control socket and SIGHUP call.
 * `await using` stops it at scope exit.
 * @example
 * await using sup = await Supervisor.start({
 *   command: 'node', args: ['server.js'], listen: ['127.0.0.1:8080'], workers: 2,
 * });
 * await sup.reload();
 * await sup.wait();
 */
export class Supervisor implements AsyncDisposable {
  readonly #o: Normalized;
  #group: TaskGroup | null = null;
  #listeners: ListenerSet | null = null;
  #control: ControlServer | null = null;
  #command = '';
  #state: SupervisorStatus['state'] = 'starting';
  readonly #startedAt = now();
  readonly #startedWall = new Date();
  #nextGen = 0;
  #current: Generation | null = null;
  readonly #generations = new Set<Generation>();
  readonly #live = new Set<Member>();
  #running: ReloadRun | null = null;
  #queued: ReloadRun | null = null;
  #reloadsOk = 0;
  #reloadsFailed = 0;
  #lastReloadError: string | null = null;
  #stopping: Promise<void> | null = null;
  #failure: Error | null = null;
  readonly #doneWaiters = new Set<Waiter<void>>();
  #done = false;
  // A forced exit (a second SIGINT, process.exit without stop): no time to drain, but no
  // worker is left behind and no socket file either. Everything here is synchronous.
  readonly #exitHook = () => {
    let killed = 0;
    for (const m of this.#live) if (m.proc.kill('SIGKILL')) killed++;
    this.#control?.close();
    this.#listeners?.close();
    this.#o.log(
      `exiting at once, without draining: sent SIGKILL to ${killed} worker(s)` +
        (this.#control ? `; removed the control socket ${this.#control.path}` : ''),
    );
  };

  private constructor(o: Normalized) {
    this.#o = o;
  }

  /**
   * Binds the sockets, opens the control channel and starts generation 1, returning once all
   * its workers are ready. On failure (bad address, port in use, command not found, worker
   * not ready) everything started is stopped again and the error is thrown. A stop requested on
   * the control socket while it starts is not a failure: it resolves with the supervisor
   * already stopped (`wait()` returns at once).
   * **Cancellation**: a checkpoint throughout; a cancelled start stops what it started.
   * @example
   * const sup = await Supervisor.start({ command: 'python3', args: ['app.py'], listen: ['8080'] });
   */
  static async start(options: SupervisorOptions): Promise<Supervisor> {
    const sup = new Supervisor(normalize(options));
    try {
      await sup.#start();
    } catch (e) {
      // A stop asked for on the control socket during start-up makes the starting workers
      // exit before they are ready; that is the stop doing its job, not a failed start.
      const stopRequested = sup.#stopping !== null;
      sup.#stopping ??= sup.#stopAll(false);
      await sup.#stopping;
      if (stopRequested && !isCancellation(e)) return sup;
      throw e;
    }
    return sup;
  }

  async #start(): Promise<void> {
    const o = this.#o;
    if (o.closeLeakedFds) {
      const keep = new Set<number>();
      if (o.systemd) for (const { fd } of systemdListenFds(o.env, process.pid)) keep.add(fd);
      if (process.env.NODE_CHANNEL_FD) keep.add(Number(process.env.NODE_CHANNEL_FD));
      const closed = closeLeakedFds(keep);
      if (closed.length > 0) {
        o.log(`closed inherited descriptor(s) ${closed.join(', ')} so workers do not get them`);
      }
    }
    this.#command = resolveCommand(o.command, o.env, o.cwd);
    // During a reload both generations hold a readiness pipe per worker; a spawn past the
    // limit fails (the reload fails cleanly), but saying so now saves a puzzled operator.
    const limit = openFileLimit();
    const needed = 2 * o.workers + 32;
    if (limit !== null && needed > limit) {
      o.log(
        `warning: ${o.workers} workers need about ${needed} open files during a reload, ` +
          `but the limit is ${limit} (ulimit -n): reloads may fail`,
      );
    }
    this.#group = new TaskGroup({
      name: 'supervisor',
      policy: 'supervise',
      onError: (e, t) => o.log(`internal error in ${t.name}: ${(e as Error)?.message ?? e}`),
    });
    process.on('exit', this.#exitHook);
    // The control socket first: a second supervisor on the same path is refused before it
    // binds (and so takes away) anyone's ports.
    if (o.control !== false) {
      this.#control = await ControlServer.open(o.control, o.privateControlDir, (req) =>
        this.#answer(req),
      );
    }
    this.#listeners = await bindListeners(o.specs, { env: o.env, systemd: o.systemd });
    for (const l of this.#listeners.listeners) {
      const how = l.origin === 'systemd' ? 'from systemd' : 'listening';
      o.log(`${how} on ${l.address} as fd ${3 + this.#listeners.listeners.indexOf(l)} (${l.name})`);
    }
    await this.#reloadOnce();
    if (this.#stopping) return; // stopped during start-up: the stop owns the state
    this.#state = 'running';
    this.#notifySystemd(['--ready', `--status=serving generation ${this.#current?.id}`]);
  }

  /** The sockets workers get, in fd order (3, 4, …). */
  get listeners(): readonly Listener[] {
    return this.#listeners?.listeners ?? [];
  }

  /** The control socket path, or null when there is none. */
  get controlPath(): string | null {
    return this.#control?.path ?? null;
  }

  /**
   * Starts a new generation, waits until it is ready and drains the old one (guarantee 2).
   * Requests during a running reload are coalesced into one more reload (guarantee 3).
   * Returns when the new generation serves; the old one drains in the background.
   * Throws `ReloadError` when the new generation did not get ready (the old one still serves)
   * and `SupervisorStoppingError` during `stop`.
   * **Cancellation**: a checkpoint; cancelling the wait does not cancel the reload.
   * @example
   * try { await sup.reload(); } catch (e) { if (e.code === 'ERR_RELOAD_FAILED') alert(e); }
   */
  async reload(): Promise<ReloadResult> {
    // Everything up to run.wait() runs synchronously in the call, so requests are ordered.
    if (this.#stopping) {
      pollCancel();
      throw new SupervisorStoppingError('reload');
    }
    if (this.#state !== 'running') {
      pollCancel();
      throw new ReloadError(0, 'reload requested before the first generation was ready');
    }
    let run: ReloadRun;
    if (this.#running === null) {
      run = this.#running = new ReloadRun();
      this.#launch(run);
    } else {
      run = this.#queued ??= new ReloadRun();
    }
    return run.wait();
  }

  #launch(run: ReloadRun): void {
    this.#group!.spawn(
      async () => {
        try {
          run.settle({ ok: true, value: await this.#reloadOnce() });
        } catch (e) {
          run.settle({
            ok: false,
            error: isCancellation(e) ? new SupervisorStoppingError('reload') : e,
          });
          rethrowCancellation(e);
        } finally {
          this.#running = null;
          const next = this.#queued;
          this.#queued = null;
          if (next && !this.#stopping) {
            this.#running = next;
            this.#launch(next);
          } else if (next) {
            next.settle({ ok: false, error: new SupervisorStoppingError('reload') });
          }
        }
      },
      { name: 'reload' },
    );
  }

  async #reloadOnce(): Promise<ReloadResult> {
    const o = this.#o;
    const gen = new Generation(++this.#nextGen, o.workers);
    this.#generations.add(gen);
    const t0 = now();
    const previous = this.#current;
    const members: Member[] = [];
    for (const s of gen.slots) {
      const m = this.#startWorker(gen, s);
      members.push(m);
      // A spawn that failed (no pid: EMFILE, EAGAIN, …) fails the generation; the other
      // workers would fail alike, so none is started.
      if (m.proc.pid === undefined) break;
    }
    o.log(
      `generation ${gen.id} starting: pid ${members.map((m) => m.proc.pid ?? '(not started)').join(', ')}`,
    );
    let ready: true | undefined;
    try {
      ready = await timeout(o.readyTimeoutMs, async () => {
        await all(members.map((m) => () => m.proc.waitReady()));
        return true as const;
      });
    } catch (e) {
      rethrowCancellation(e);
      this.#failGeneration(gen, e as Error);
    }
    if (ready === undefined) {
      const late = members.find((m) => !m.proc.isReady);
      this.#failGeneration(
        gen,
        new WorkerNotReadyError(
          gen.id,
          late?.proc.pid,
          `did not report ready within ${o.readyTimeoutMs} ms${readyHint(o, 'silent')}`,
        ),
      );
    }
    gen.state = 'serving';
    this.#current = gen;
    for (const m of members) if (m.proc.exit) this.#onExit(m);
    if (previous) {
      this.#retireGeneration(previous, 'reload');
      this.#reloadsOk++;
      this.#notifySystemd([`--status=serving generation ${gen.id}`]);
    }
    const readyMs = Math.round(now() - t0);
    o.log(
      `generation ${gen.id} serving after ${readyMs} ms` +
        (previous ? `; generation ${previous.id} draining` : ''),
    );
    return {
      generation: gen.id,
      previous: previous?.id ?? null,
      pids: members.map((m) => m.proc.pid ?? -1),
      readyMs,
    };
  }

  #failGeneration(gen: Generation, cause: Error): never {
    gen.state = 'failed';
    this.#retireGeneration(gen, 'not ready', true);
    const current = this.#current;
    if (!current) throw cause; // the first start: the caller reports it
    this.#reloadsFailed++;
    const msg = `reload failed: ${cause.message}; generation ${current.id} keeps serving`;
    this.#lastReloadError = msg;
    this.#o.log(msg);
    throw new ReloadError(gen.id, msg, { cause });
  }

  #retireGeneration(gen: Generation, reason: string, keepState = false): void {
    if (!keepState) gen.state = 'draining';
    for (const m of gen.members) m.retire(reason);
    if (gen.members.size === 0) this.#generations.delete(gen);
  }

  #startWorker(gen: Generation, slot: Slot): Member {
    const o = this.#o;
    const proc = new WorkerProcess({
      command: this.#command,
      args: o.args,
      env: o.env,
      cwd: o.cwd,
      listeners: this.listeners,
      generation: gen.id,
      slot: slot.index,
      assumeReadyAfterMs: o.assumeReadyAfterMs,
      nodePreload: o.nodePreload,
      compileCache: o.compileCache,
      notReadyHint: readyHint(o, 'exited'),
    });
    const m: Member = {
      proc,
      gen,
      slot,
      retired: false,
      startFailed: false,
      exitHandled: false,
      retire: () => {},
    };
    gen.members.add(m);
    this.#live.add(m);
    this.#group!.spawn(() => this.#keep(m), { name: `worker ${gen.id}.${slot.index}` });
    return m;
  }

  /** A worker's keeper: waits for its exit; drains it when cancelled or retired. */
  async #keep(m: Member): Promise<void> {
    try {
      await cancelScope(async (scope) => {
        m.retire = (reason) => {
          m.retired = true;
          scope.cancel(reason);
        };
        await m.proc.waitExit();
      });
    } finally {
      if (!m.proc.exit) await this.#drain(m);
      this.#live.delete(m);
      m.gen.members.delete(m);
      if (m.gen.members.size === 0 && m.gen !== this.#current) this.#generations.delete(m.gen);
    }
    // A stop that arrived during the shielded drain ends the keeper here, as a cancellation.
    await checkpoint();
    this.#onExit(m);
  }

  async #drain(m: Member): Promise<void> {
    const o = this.#o;
    m.proc.state = 'draining';
    m.proc.kill(o.drainSignal);
    const r = await cancelScope(() => m.proc.waitExit(), {
      timeoutMs: o.drainTimeoutMs,
      shield: true,
    });
    if (r.value === undefined && !m.proc.exit) {
      o.log(`worker ${m.proc.pid} still running after ${o.drainTimeoutMs} ms of drain: SIGKILL`);
      m.proc.kill('SIGKILL');
      await cancelScope(() => m.proc.waitExit(), { timeoutMs: KILL_WAIT_MS, shield: true });
    }
  }

  #onExit(m: Member): void {
    if (m.exitHandled || this.#stopping) return;
    if (m.retired && !m.startFailed) return;
    // A worker of a generation still starting is its reload's business — unless it got ready
    // and died just before the handover, which the reload hands back here afterwards.
    if (m.gen !== this.#current) return;
    m.exitHandled = true;
    const o = this.#o;
    o.log(`${who(m.proc)} of generation ${m.gen.id} ${describeExit(m.proc.exit)}`);
    const slot = m.slot;
    const t = now();
    slot.crashes = slot.crashes.filter((c) => t - c < o.restartWindowMs);
    slot.crashes.push(t);
    if (slot.crashes.length > o.maxRestarts) {
      slot.state = 'crash-loop';
      const msg =
        `crash loop: worker slot ${slot.index} of generation ${m.gen.id} exited ` +
        `${slot.crashes.length} times within ${o.restartWindowMs} ms; not restarting it`;
      o.log(msg);
      if (m.gen.slots.every((s) => s.state === 'crash-loop')) {
        this.#fail(new CrashLoopError(`${msg}; no worker left`));
      }
      return;
    }
    const delay = Math.min(BACKOFF_BASE_MS * 2 ** (slot.crashes.length - 1), BACKOFF_MAX_MS);
    slot.state = 'restarting';
    this.#group!.spawn(() => this.#restart(m.gen, slot, delay), { name: 'restart' });
  }

  async #restart(gen: Generation, slot: Slot, delay: number): Promise<void> {
    await sleep(delay);
    if (this.#stopping || gen !== this.#current) return;
    slot.restarts++;
    const m = this.#startWorker(gen, slot);
    slot.state = 'running';
    this.#o.log(
      `restarting worker slot ${slot.index} of generation ${gen.id}: pid ${m.proc.pid ?? '(not started)'}`,
    );
    let ok: true | undefined;
    try {
      ok = await timeout(this.#o.readyTimeoutMs, async () => {
        await m.proc.waitReady();
        return true as const;
      });
    } catch (e) {
      rethrowCancellation(e);
      return; // it exited: its keeper counts the crash
    }
    if (ok === undefined && !m.proc.exit) {
      this.#o.log(
        `worker ${m.proc.pid} not ready within ${this.#o.readyTimeoutMs} ms: stopping it` +
          readyHint(this.#o, 'silent'),
      );
      m.startFailed = true;
      m.retire('not ready');
    }
  }

  #fail(e: Error): void {
    if (this.#failure) return;
    this.#failure = e;
    this.#finish();
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    for (const w of this.#doneWaiters) w.commit();
    this.#doneWaiters.clear();
  }

  #notifySystemd(args: string[]): void {
    if (!this.#o.env.NOTIFY_SOCKET || !this.#group || this.#group.closed) return;
    this.#group.spawn(
      async () => {
        const r = await notifySystemd(args, this.#o.env);
        if (!r.ok) this.#o.log(`cannot notify systemd: ${r.problem}`);
      },
      { name: 'systemd-notify' },
    );
  }

  async #answer(req: ControlRequest): Promise<ControlResponse> {
    const fail = (e: unknown): ControlResponse => {
      const err = e as { code?: string; message?: string };
      return {
        ok: false,
        error: { code: err.code ?? 'ERR_INTERNAL', message: String(err.message) },
      };
    };
    switch (req?.op) {
      case 'status':
        return { ok: true, status: this.status() };
      case 'reload':
        try {
          return { ok: true, reload: await this.reload() };
        } catch (e) {
          return fail(e);
        }
      case 'stop':
        void this.stop();
        return { ok: true, stopping: true };
      default:
        return fail({ code: 'ERR_CONTROL_PROTOCOL', message: `unknown op ${String(req?.op)}` });
    }
  }

  /**
   * A snapshot of the supervisor: listeners, generations, workers, reload counts.
   * **Cancellation**: synchronous; not a checkpoint.
   */
  status(): SupervisorStatus {
    const t = now();
    const gens = [...this.#generations].sort((a, b) => b.id - a.id);
    return {
      pid: process.pid,
      state: this.#state,
      command: [this.#command || this.#o.command, ...this.#o.args],
      startedAt: this.#startedWall.toISOString(),
      uptimeMs: Math.round(t - this.#startedAt),
      control: this.controlPath,
      listeners: this.listeners.map((l, i) => ({ name: l.name, address: l.address, fd: 3 + i })),
      generation: this.#current?.id ?? null,
      reloads: {
        ok: this.#reloadsOk,
        failed: this.#reloadsFailed,
        running: this.#running !== null,
        queued: this.#queued !== null,
        lastError: this.#lastReloadError,
      },
      generations: gens.map((g) => ({
        id: g.id,
        state: g.state,
        workers: g.slots.flatMap((s): WorkerStatus[] => {
          const procs = [...g.members].filter((m) => m.slot === s).map((m) => m.proc);
          if (procs.length === 0) {
            if (g.state !== 'serving') return [];
            const state = s.state === 'crash-loop' ? 'crash-loop' : 'restarting';
            return [
              { slot: s.index, pid: null, state, uptimeMs: 0, restarts: s.restarts, status: null },
            ];
          }
          return procs.map((p) => ({
            slot: s.index,
            pid: p.pid ?? null,
            state: p.state,
            uptimeMs: Math.round(t - p.startedAt),
            restarts: s.restarts,
            status: p.status,
          }));
        }),
      })),
    };
  }

  /**
   * Waits until the supervisor is finished: after `stop` completed it returns; when it gave up
   * by itself (a crash loop left no worker) it throws `CrashLoopError` — call `stop` then to
   * release the sockets.
   * **Cancellation**: a blocking checkpoint.
   */
  async wait(): Promise<void> {
    if (this.#done) pollCancel();
    else {
      await block<void>((w) => {
        this.#doneWaiters.add(w);
        return () => this.#doneWaiters.delete(w);
      });
    }
    if (this.#failure) throw this.#failure;
  }

  /**
   * Drains every worker (`drainSignal`, SIGKILL after `drainTimeoutMs`), then closes the
   * sockets and the control channel. Idempotent; every call returns when it is all done.
   * **Cancellation**: not a checkpoint: it runs to the end even in a cancelled scope (each
   * drain is bounded by `drainTimeoutMs`).
   * @example
   * process.once('SIGTERM', () => sup.stop());
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#stopAll(true);
    return this.#stopping;
  }

  /** `announce`: a stop someone asked for (logged), not the clean-up of a failed start. */
  async #stopAll(announce: boolean): Promise<void> {
    const o = this.#o;
    const wasRunning = this.#state !== 'starting';
    this.#state = 'stopping';
    if (wasRunning) {
      o.log(`stopping: draining ${this.#live.size} worker(s) (up to ${o.drainTimeoutMs} ms)`);
      this.#notifySystemd(['STOPPING=1']);
    } else if (announce) {
      o.log(`stopping during start-up: stopping ${this.#live.size} starting worker(s)`);
    }
    this.#queued?.settle({ ok: false, error: new SupervisorStoppingError('reload') });
    if (this.#group) {
      await this.#group.cancel('supervisor stopping');
      await this.#group[Symbol.asyncDispose]();
    }
    this.#control?.close();
    this.#listeners?.close();
    process.off('exit', this.#exitHook);
    this.#state = 'stopped';
    if (wasRunning || announce) o.log('stopped');
    this.#finish();
  }

  /** `await using`: stops the supervisor. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}
