/**
 * One worker process: how it is started with the shared sockets, how it says it is ready, and
 * how the supervisor waits for it.
 *
 * Guarantees:
 * 1. The worker gets exactly: fd 0 = /dev/null, fds 1–2 = the supervisor's, fds 3… = the
 *    listeners in order, the next fd = its readiness pipe; `LISTEN_FDS`, `LISTEN_FDNAMES`,
 *    `LISTEN_PID` (its own pid) and `QUIESCE_READY_FD` say so.
 * 2. Workers run in their own session and process group (the worker's pid is the group id),
 *    so terminal signals reach only the supervisor, which decides how each worker stops; and
 *    every signal it sends goes to the whole group, so a wrapper (`sh -c 'node app.js; …'`,
 *    `npm start`) and every process it started stop together.
 * 7. A worker counts as exited once its process group is gone, not when the first process
 *    ends: `exit` (with the leader's status) is set, and `waitExit` returns, only then. When
 *    the leader ends while others of its group live on, the group gets `drainSignal`, then
 *    SIGKILL after `drainTimeoutMs`.
 * 3. `LISTEN_PID` is the worker's real pid: the worker is started through `/bin/sh -c 'export
 *    LISTEN_PID=$$; exec "$@"'`, and `exec` keeps the pid. (libsystemd, go-systemd and
 *    python-systemd ignore sockets whose `LISTEN_PID` is missing or someone else's.)
 * 4. `waitReady` and `waitExit` follow the core wait protocol: they are checkpoints, and a
 *    waiter that is cancelled leaves nothing behind.
 * 5. Readiness is monotonic: once ready, a worker stays ready until it exits; an exit before
 *    `READY=1` makes `waitReady` throw `WorkerNotReadyError`.
 * 6. A process that cannot be spawned (`EMFILE`, `EAGAIN`, a missing cwd, …) is a worker that
 *    ended at once: no pid, `exit.error` says why in words. Nothing throws out of an event
 *    handler, so the supervisor lives on.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fstatSync, readdirSync, readFileSync } from 'node:fs';
import { addDeadline, type Deadline, now, removeDeadline } from '../core/internal.ts';
import { Event } from '../sync/event.ts';
import { inWords, WorkerNotReadyError } from './errors.ts';
import type { Listener } from './listeners.ts';
import { READY_FD_ENV } from './notify.ts';
import { LISTEN_ENV } from './preload/sockets.js';

/**
 * `QUIESCE_LISTEN` for the preload: each socket's descriptor in the worker, its name, address
 * and identity (device, inode), so that the preload can tell the socket from whatever else a
 * wrapper left at that number.
 */
function describeListeners(listeners: readonly Listener[]): string {
  return JSON.stringify(
    listeners.map((l, i) => {
      const st = fstatSync(l.fd);
      return { fd: 3 + i, name: l.name, address: l.address, dev: st.dev, ino: st.ino };
    }),
  );
}

/** How a worker's process ended. */
export interface WorkerExit {
  /** Exit status, or null when a signal ended it. */
  readonly code: number | null;
  /** The signal that ended it, or null. */
  readonly signal: NodeJS.Signals | null;
  /** Set when the process could not be started at all. */
  readonly error?: string;
}

/** A worker's lifecycle. */
export type WorkerState = 'starting' | 'ready' | 'draining' | 'exited';

/** What `startWorker` needs. */
export interface WorkerSpec {
  /** Absolute path of the program (see `resolveCommand`). */
  readonly command: string;
  readonly args: readonly string[];
  /** The environment before the supervisor adds its variables. */
  readonly env: NodeJS.ProcessEnv;
  readonly cwd?: string;
  readonly listeners: readonly Listener[];
  readonly generation: number;
  readonly slot: number;
  /** Treat the worker as ready this long after it started even if it said nothing. */
  readonly assumeReadyAfterMs?: number;
  /** A Node option (`--import=…`) added to `NODE_OPTIONS`, e.g. the preload for unmodified Node apps. */
  readonly nodePreload?: string;
  /** `NODE_COMPILE_CACHE` for the worker, unless its environment already sets one. */
  readonly compileCache?: string;
  /** Appended to the error when the worker exits with status 0 before it said `READY=1`. */
  readonly notReadyHint?: string;
  /**
   * What the rest of the group gets when the leader ends first (guarantee 7); also the signal
   * the preload drains on (`QUIESCE_DRAIN_SIGNAL`).
   */
  readonly drainSignal?: NodeJS.Signals;
  /**
   * How long the rest of the group may take after that signal before SIGKILL; also the budget
   * the preload drains within (`QUIESCE_DRAIN_TIMEOUT_MS`).
   */
  readonly drainTimeoutMs?: number;
  /** The preload's `QUIESCE_DRAIN_SPREAD_MS`: over how long a drain hands keep-alive connections over. */
  readonly drainSpreadMs?: number;
  /** The preload's `QUIESCE_WARM_UP`: what a new worker answers before it listens. */
  readonly warmUp?: string;
}

// How often a group whose leader has ended is looked at again.
const GROUP_POLL_MS = 50;

/**
 * True while some process of group `pgid` is alive. Zombies do not count: where PID 1 does not
 * reap orphans (a bare container), a dead wrapper's children would otherwise look alive forever.
 */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  let pids: string[];
  try {
    pids = readdirSync('/proc');
  } catch {
    return true; // no /proc: trust kill(2)
  }
  for (const p of pids) {
    if (!/^\d+$/.test(p)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${p}/stat`, 'utf8');
    } catch {
      continue;
    }
    // pid (comm) state ppid pgrp …: comm may hold spaces and parentheses, so split after it.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(f[2]) === pgid && f[0] !== 'Z') return true;
  }
  return false;
}

// Variables that belong to the supervisor's own parent and must not reach a worker.
const PRIVATE_ENV = [
  'NOTIFY_SOCKET',
  'LISTEN_FDS',
  'LISTEN_FDNAMES',
  'LISTEN_PID',
  READY_FD_ENV,
  LISTEN_ENV,
  'QUIESCE_DRAIN_TIMEOUT_MS',
  'QUIESCE_DRAIN_SIGNAL',
  'QUIESCE_DRAIN_SPREAD_MS',
  'QUIESCE_WARM_UP',
];
const EXEC_WRAPPER = 'export LISTEN_PID=$$; exec "$@"';
const MAX_LINE = 4096;

/** A running (or finished) worker process. */
export class WorkerProcess {
  readonly generation: number;
  readonly slot: number;
  readonly pid: number | undefined;
  /** When it was started, on the library clock. */
  readonly startedAt: number;
  state: WorkerState = 'starting';
  readyAt: number | null = null;
  exit: WorkerExit | null = null;
  /** The last `STATUS=` line the worker wrote. */
  status: string | null = null;
  readonly #child: ChildProcess | null;
  /** Set once: true when it said `READY=1`, false when it exited first. */
  readonly #ready = new Event<boolean>();
  readonly #exit = new Event<WorkerExit>();
  #assume: Deadline | null = null;
  #buffer = '';
  readonly #hint: string | undefined;
  readonly #drainSignal: NodeJS.Signals;
  readonly #drainTimeoutMs: number;
  /** How the group's leader ended, once it has (the group may live on). */
  #leaderExit: WorkerExit | null = null;
  #groupPoll: ReturnType<typeof setTimeout> | null = null;

  constructor(spec: WorkerSpec) {
    this.generation = spec.generation;
    this.slot = spec.slot;
    this.startedAt = now();
    this.#hint = spec.notReadyHint;
    this.#drainSignal = spec.drainSignal ?? 'SIGTERM';
    this.#drainTimeoutMs = spec.drainTimeoutMs ?? 30_000;
    const n = spec.listeners.length;
    const env: NodeJS.ProcessEnv = { ...spec.env };
    for (const k of PRIVATE_ENV) delete env[k];
    Object.assign(env, {
      LISTEN_FDS: String(n),
      LISTEN_FDNAMES: spec.listeners.map((l) => l.name).join(':'),
      [READY_FD_ENV]: String(3 + n),
      QUIESCE_GENERATION: String(spec.generation),
      QUIESCE_WORKER: String(spec.slot),
      QUIESCE_SUPERVISOR_PID: String(process.pid),
    });
    if (n === 0) delete env.LISTEN_FDNAMES;
    if (spec.compileCache && !env.NODE_COMPILE_CACHE) env.NODE_COMPILE_CACHE = spec.compileCache;
    if (spec.nodePreload) {
      // The preload stays in NODE_OPTIONS for the whole process tree (a wrapper's node loads it
      // too); QUIESCE_LISTEN tells it which descriptors are the supervisor's sockets.
      if (!env.NODE_OPTIONS?.includes(spec.nodePreload)) {
        env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} ${spec.nodePreload}`.trim();
      }
      env[LISTEN_ENV] = describeListeners(spec.listeners);
      if (spec.drainTimeoutMs !== undefined) {
        env.QUIESCE_DRAIN_TIMEOUT_MS = String(spec.drainTimeoutMs);
      }
      if (spec.drainSignal) env.QUIESCE_DRAIN_SIGNAL = spec.drainSignal;
      if (spec.drainSpreadMs) env.QUIESCE_DRAIN_SPREAD_MS = String(spec.drainSpreadMs);
      if (spec.warmUp) env.QUIESCE_WARM_UP = spec.warmUp;
    }
    let child: ChildProcess | null = null;
    try {
      child = spawn('/bin/sh', ['-c', EXEC_WRAPPER, 'quiesce-exec', spec.command, ...spec.args], {
        stdio: ['ignore', 'inherit', 'inherit', ...spec.listeners.map((l) => l.fd), 'pipe'],
        env,
        cwd: spec.cwd,
        // Its own session: a Ctrl-C in the terminal reaches the supervisor only, which then
        // drains the workers in order instead of the terminal killing them mid-request.
        detached: true,
      });
    } catch (e) {
      // Most spawn failures arrive as an 'error' event; a few are thrown (E2BIG, EINVAL, …).
      this.#child = null;
      this.pid = undefined;
      this.#exited({ code: null, signal: null, error: spawnProblem(e) });
      return;
    }
    this.#child = child;
    this.pid = child.pid;
    child.once('exit', (code, signal) => this.#leaderExited({ code, signal }));
    // Persistent, not `once`: a later 'error' (a failed kill) must not go unhandled. Only a
    // process that never started (no pid) ends here; a running one ends with 'exit'.
    child.on('error', (e) => {
      if (child.pid === undefined)
        this.#exited({ code: null, signal: null, error: spawnProblem(e) });
    });
    // stdio is null when the spawn failed before its pipes were set up (EMFILE, ENFILE).
    const pipe = child.stdio?.[3 + n];
    if (pipe && 'setEncoding' in pipe) {
      pipe.setEncoding('utf8');
      pipe.on('data', (d: string) => this.#onData(d));
      pipe.on('error', () => {});
    }
    if (spec.assumeReadyAfterMs !== undefined) {
      this.#assume = addDeadline(now() + spec.assumeReadyAfterMs, () => {
        this.#assume = null;
        this.#markReady();
      });
    }
  }

  #onData(d: string): void {
    this.#buffer += d;
    let i = this.#buffer.indexOf('\n');
    while (i >= 0) {
      const line = this.#buffer.slice(0, i).trim();
      this.#buffer = this.#buffer.slice(i + 1);
      if (line === 'READY=1') this.#markReady();
      else if (line.startsWith('STATUS=')) this.status = line.slice(7);
      i = this.#buffer.indexOf('\n');
    }
    if (this.#buffer.length > MAX_LINE) this.#buffer = '';
  }

  #markReady(): void {
    if (this.state !== 'starting') return;
    this.state = 'ready';
    this.readyAt = now();
    if (this.#assume) removeDeadline(this.#assume);
    this.#assume = null;
    this.#ready.set(true);
  }

  /** The leader ended: the worker has exited once its group is gone too (guarantee 7). */
  #leaderExited(e: WorkerExit): void {
    if (this.#leaderExit || this.exit) return;
    this.#leaderExit = e;
    this.#ready.set(false); // a worker whose leader ended before READY=1 never gets ready
    const pgid = this.pid;
    if (pgid === undefined || !groupAlive(pgid)) {
      this.#exited(e);
      return;
    }
    // Processes of its group live on (a wrapper's children): they go the way the worker went.
    if (this.state !== 'draining') this.#signalGroup(this.#drainSignal);
    const killAt = now() + this.#drainTimeoutMs;
    const look = () => {
      this.#groupPoll = null;
      if (!groupAlive(pgid)) {
        this.#exited(e);
        return;
      }
      if (now() >= killAt) this.#signalGroup('SIGKILL');
      this.#groupPoll = setTimeout(look, GROUP_POLL_MS).unref();
    };
    // Unreferenced: a group that cannot die (a process stuck in the kernel) must not keep a
    // stopped supervisor's process alive; the drain's own deadline bounds the wait.
    this.#groupPoll = setTimeout(look, GROUP_POLL_MS).unref();
  }

  #signalGroup(signal: NodeJS.Signals): boolean {
    if (this.pid === undefined) return false;
    try {
      process.kill(-this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  #exited(e: WorkerExit): void {
    if (this.exit) return;
    if (this.#groupPoll) clearTimeout(this.#groupPoll);
    this.#groupPoll = null;
    this.exit = e;
    this.state = 'exited';
    if (this.#assume) removeDeadline(this.#assume);
    this.#assume = null;
    for (const s of this.#child?.stdio ?? []) s?.destroy();
    this.#ready.set(false);
    this.#exit.set(e);
  }

  /** True once `READY=1` arrived (or the assumed delay passed). */
  get isReady(): boolean {
    return this.readyAt !== null;
  }

  /**
   * Waits until the worker reported ready. Throws `WorkerNotReadyError` if it exits first.
   * **Cancellation**: a blocking checkpoint; a cancelled wait changes nothing in the worker.
   */
  async waitReady(): Promise<void> {
    if (!(await this.#ready.wait())) {
      const e = this.exit ?? this.#leaderExit;
      const why = e?.error
        ? describeExit(e)
        : `${describeExit(e)} before it was ready${e?.code === 0 ? (this.#hint ?? '') : ''}`;
      throw new WorkerNotReadyError(this.generation, this.pid, why);
    }
  }

  /**
   * Waits until the process has exited and returns how.
   * **Cancellation**: a blocking checkpoint; a cancelled wait changes nothing in the worker.
   */
  waitExit(): Promise<WorkerExit> {
    return this.#exit.wait();
  }

  /** Sends `signal` to the worker's whole process group; false if it is gone. Never throws. */
  kill(signal: NodeJS.Signals): boolean {
    if (this.exit || this.pid === undefined) return false;
    return this.#signalGroup(signal);
  }
}

const SPAWN_HINTS: Record<string, string> = {
  EMFILE: 'too many open files in the supervisor (raise `ulimit -n`, or run fewer --workers)',
  ENFILE: 'the system is out of file descriptors',
  EAGAIN: 'the system refused a new process (process limit reached? see `ulimit -u`)',
  ENOMEM: 'not enough memory to start a process',
  ENOENT: '/bin/sh or the working directory does not exist',
  EACCES: 'permission denied (/bin/sh or the working directory)',
};

/** A spawn failure in words, with its errno: `too many open files … (EMFILE)`. */
const spawnProblem = (e: unknown): string => inWords(e, SPAWN_HINTS);

/**
 * How a worker ended, in words: `exited with status 1`, `was killed by SIGKILL`.
 * @example
 * describeExit({ code: 1, signal: null }); // 'exited with status 1'
 */
export function describeExit(e: WorkerExit | null): string {
  if (!e) return 'is still running';
  if (e.error) return `could not be started: ${e.error}`;
  if (e.signal) return `was killed by ${e.signal}`;
  return `exited with status ${e.code}`;
}
