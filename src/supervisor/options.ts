/**
 * The supervisor's options, their one set of defaults, and their validation.
 *
 * Guarantees:
 * 1. Every default is written once, in `supervisorDefaults`: `normalize` applies it, the CLI
 *    passes only what the user set, and `quiesce run --help` prints it from here.
 * 2. `normalize` is total over user input: a value out of range is an `ArgumentError` (or a
 *    `ListenAddressError`) naming the option, never a supervisor that starts half-configured.
 */
import { constants as osConstants } from 'node:os';
import { ArgumentError } from '../core/index.ts';
import { checkDistinct, type ListenSpec, MAX_UNIX_PATH, parseListenSpec } from './address.ts';
import { defaultControlPath } from './control.ts';

/** Options of a supervisor. Durations are in milliseconds; defaults in `supervisorDefaults`. */
export interface SupervisorOptions {
  /** The worker's program: a path, or a name looked up in `PATH`. */
  command: string;
  /** Its arguments. */
  args?: readonly string[];
  /** Sockets to bind, as `--listen` values or parsed specs. Handed to workers from fd 3. */
  listen?: readonly (string | ListenSpec)[];
  /** Take the sockets systemd passed to this process (`LISTEN_FDS`), before `listen`. */
  systemd?: boolean;
  /** Workers per generation, all sharing the sockets (at most `MAX_WORKERS`). */
  workers?: number;
  /** How long a new worker may take to say `READY=1`. */
  readyTimeoutMs?: number;
  /** How long a draining worker (its whole process group) may take to exit before SIGKILL. */
  drainTimeoutMs?: number;
  /**
   * Preloaded Node workers: over how long a draining worker hands its busy keep-alive
   * connections over (each gets `Connection: close` at its first response after a moment of
   * its own within the window), so that after a reload the clients reconnect to the new,
   * still cold workers a few at a time rather than all at once. At most the drain deadline;
   * 0 (the default) closes them at once. In the reload benchmark it made no measurable
   * difference to latency (docs/benchmarks/reload.md), so it is off unless asked for.
   */
  drainSpreadMs?: number;
  /**
   * Preloaded Node workers: `PATH` or `PATH:N` (N from 1 to 100,000, default 200). Before a
   * new worker's HTTP server takes a real connection, it answers N `GET PATH` requests sent
   * from inside the worker over private loopback connections (header `x-quiesce-warm-up: 1`),
   * so that the first real requests after a reload do not pay for its cold start. Opt-in: the
   * requests run the app's own code. The server listens (and the worker reports ready) after
   * the N answers, the first request without one, or 10 s.
   */
  warmUp?: string;
  /**
   * On stop, how long the workers keep serving, with readiness failing (status `stopping`,
   * `quiesce status --ready` exits 1), before they drain: the time a load balancer or
   * Kubernetes needs to stop sending new connections. Stop takes up to this plus
   * `drainTimeoutMs`.
   */
  shutdownDelayMs?: number;
  /**
   * Last resort for workers that cannot report readiness: treat a worker as ready this long
   * after it started. A guess, not a signal. Default: off (wait for `READY=1`).
   */
  assumeReadyAfterMs?: number;
  /**
   * Preload quiesce's hook into Node workers (through `NODE_OPTIONS`, plain JavaScript for any
   * Node >= 20), so that an unmodified app runs as a worker: its `listen(port)` or
   * `listen(path)` becomes a listen on the socket the supervisor holds, it reports `READY=1`
   * once it listens on every socket, its node:http servers drain on the drain signal, and it
   * works through wrappers (`npm start`). `false` leaves `NODE_OPTIONS` alone.
   */
  preload?: boolean;
  /** @deprecated the preload is on by default (`preload`); `true` forces it on. */
  readyOnListen?: boolean;
  /**
   * Where Node workers keep their compiled-code cache (`NODE_COMPILE_CACHE`), so that every
   * generation after the first starts with a fraction of the CPU and competes less with the
   * generation still serving. Default: `compile-cache` in the supervisor's private runtime
   * directory (created 0700 and checked; beside an explicit `control` socket, a private
   * directory next to it); `false` leaves the environment alone. A `NODE_COMPILE_CACHE`
   * already in the environment wins. Other languages ignore the variable.
   */
  compileCache?: string | false;
  /** The signal that asks a worker's process group to drain. */
  drainSignal?: NodeJS.Signals;
  /** Restarts of one worker slot allowed within `restartWindowMs`. */
  maxRestarts?: number;
  /** The crash-loop window. */
  restartWindowMs?: number;
  /** Control socket path; `false` for none. Default: `defaultControlPath(name)`. */
  control?: string | false;
  /** Supervisor name, for the default control path. */
  name?: string;
  /**
   * The environment workers start from (and `LISTEN_FDS`, `XDG_RUNTIME_DIR` are read from).
   * Default `process.env`.
   */
  env?: NodeJS.ProcessEnv;
  /** Working directory of the workers. Default: the supervisor's. */
  cwd?: string;
  /** Close descriptors this process inherited without close-on-exec (see fds.ts). */
  closeLeakedFds?: boolean;
  /** Where progress lines go. Default: stderr, prefixed `quiesce: `. */
  log?: (line: string) => void;
}

/** The most workers a generation may have (`workers`, `--workers`). */
export const MAX_WORKERS = 1024;

/**
 * The defaults of `SupervisorOptions`, the only place they are written: the supervisor applies
 * them and `quiesce run --help` shows them.
 * @example
 * supervisorDefaults.drainTimeoutMs; // 30000
 */
export const supervisorDefaults = Object.freeze({
  systemd: true,
  workers: 1,
  readyTimeoutMs: 30_000,
  drainTimeoutMs: 30_000,
  drainSpreadMs: 0,
  shutdownDelayMs: 0,
  preload: true,
  drainSignal: 'SIGTERM' as NodeJS.Signals,
  maxRestarts: 5,
  restartWindowMs: 60_000,
  name: 'default',
  closeLeakedFds: true,
});

/** @internal the options with every default applied and every value checked. */
export interface Settings {
  command: string;
  args: string[];
  specs: ListenSpec[];
  systemd: boolean;
  workers: number;
  readyTimeoutMs: number;
  drainTimeoutMs: number;
  drainSpreadMs: number;
  warmUp: string | undefined;
  shutdownDelayMs: number;
  assumeReadyAfterMs: number | undefined;
  nodePreload: string | undefined;
  /** An explicit compile cache directory, `false` for none, or null: the runtime dir's. */
  compileCache: string | false | null;
  drainSignal: NodeJS.Signals;
  maxRestarts: number;
  restartWindowMs: number;
  control: string | false;
  name: string;
  /** The control socket is at its default location, in a directory that must be private. */
  privateControlDir: boolean;
  env: NodeJS.ProcessEnv;
  cwd: string | undefined;
  closeLeakedFds: boolean;
  log: (line: string) => void;
}

// Plain JavaScript from source and built alike, so that it runs on the worker's own Node.
const PRELOAD = `--import=${new URL('./preload/index.js', import.meta.url).href}`;

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

/** @internal applies `supervisorDefaults` and checks every value. */
export function normalize(o: SupervisorOptions): Settings {
  if (!o || typeof o.command !== 'string' || o.command === '') {
    throw new ArgumentError('supervisor: command must be a non-empty string');
  }
  const d = supervisorDefaults;
  const env = o.env ?? process.env;
  const drainSignal = o.drainSignal ?? d.drainSignal;
  if (!(drainSignal in osConstants.signals)) {
    throw new ArgumentError(`drainSignal: unknown signal ${String(drainSignal)}`);
  }
  const specs = (o.listen ?? []).map((s) => (typeof s === 'string' ? parseListenSpec(s) : s));
  checkDistinct(specs);
  const name = o.name ?? d.name;
  const control = o.control === false ? false : (o.control ?? defaultControlPath(name, env));
  if (control === '') throw new ArgumentError('control must be a path or false, not ""');
  if (control !== false && Buffer.byteLength(control) > MAX_UNIX_PATH) {
    throw new ArgumentError(
      `control: the socket path ${control} is ${Buffer.byteLength(control)} bytes, more than ` +
        `the ${MAX_UNIX_PATH} a unix socket allows (pick a shorter path)`,
    );
  }
  if (o.warmUp !== undefined && !validWarmUp(o.warmUp)) {
    throw new ArgumentError(
      `warmUp must be PATH or PATH:N (PATH from "/", N from 1 to ${MAX_WARM_UP}), got ${JSON.stringify(o.warmUp)}`,
    );
  }
  if (o.compileCache === '') throw new ArgumentError('compileCache must be a path or false');
  return {
    command: o.command,
    args: [...(o.args ?? [])],
    specs,
    systemd: o.systemd ?? d.systemd,
    workers: int('workers', o.workers, d.workers, 1, MAX_WORKERS),
    readyTimeoutMs: ms('readyTimeoutMs', o.readyTimeoutMs, d.readyTimeoutMs, 1),
    drainTimeoutMs: ms('drainTimeoutMs', o.drainTimeoutMs, d.drainTimeoutMs),
    drainSpreadMs: ms('drainSpreadMs', o.drainSpreadMs, d.drainSpreadMs),
    warmUp: o.warmUp,
    shutdownDelayMs: ms('shutdownDelayMs', o.shutdownDelayMs, d.shutdownDelayMs),
    assumeReadyAfterMs:
      o.assumeReadyAfterMs === undefined
        ? undefined
        : ms('assumeReadyAfterMs', o.assumeReadyAfterMs, 0),
    nodePreload: o.readyOnListen || (o.preload ?? d.preload) ? PRELOAD : undefined,
    compileCache: o.compileCache ?? null,
    drainSignal,
    maxRestarts: int('maxRestarts', o.maxRestarts, d.maxRestarts, 0),
    restartWindowMs: ms('restartWindowMs', o.restartWindowMs, d.restartWindowMs, 1),
    control,
    name,
    privateControlDir: o.control === undefined,
    env,
    cwd: o.cwd,
    closeLeakedFds: o.closeLeakedFds ?? d.closeLeakedFds,
    log: o.log ?? ((line) => process.stderr.write(`quiesce: ${line}\n`)),
  };
}

/**
 * @internal what to tell the user when a worker never said `READY=1`: the usual cause is a
 * server that does not know it has to (a plain Node server), or one that ran to its end.
 */
export function readyHint(o: Settings, how: 'silent' | 'exited'): string {
  const keep = how === 'exited' ? 'a worker must keep serving; ' : '';
  const say = how === 'exited' ? 'it says it is ready' : 'a worker says it is ready';
  if (o.nodePreload) {
    return (
      ` (${keep}a Node worker is ready once it listens on every socket quiesce holds — ` +
      'listen(port), listen(path) or listen({ fd }); any other worker says it is ready by ' +
      'writing READY=1 to the descriptor in $QUIESCE_READY_FD)'
    );
  }
  return (
    ` (${keep}${say} by writing READY=1 to the descriptor in $QUIESCE_READY_FD: ` +
    'notifyReady() in Node, or leave out --no-preload for an unmodified Node server)'
  );
}

/** The largest N of `warmUp`'s `PATH:N`. */
export const MAX_WARM_UP = 100_000;

/** True for `PATH` or `PATH:N` as the preload reads `QUIESCE_WARM_UP` (warm-up.js). */
function validWarmUp(v: string): boolean {
  const m = /^(\/[^\s:]*)(?::(\d{1,6}))?$/.exec(v);
  return m !== null && (m[2] === undefined || (Number(m[2]) >= 1 && Number(m[2]) <= MAX_WARM_UP));
}
