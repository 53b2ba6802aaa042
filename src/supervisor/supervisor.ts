/**
 * The supervisor: keeps the listening sockets, runs worker generations over them, reloads
 * without dropping a connection, restarts crashed workers. Options and defaults live in
 * options.ts, the generation lifecycle in generation.ts, the status shapes in status.ts.
 *
 * Guarantees, and who keeps them:
 * 1. The sockets outlive every worker (listeners.ts): from `start` to the end of `stop` the
 *    ports accept connections into their queue, and only workers take them out.
 * 2. Reload (`reload`): generation N+1 starts on the same sockets; only once every one of its
 *    workers has said `READY=1` is generation N asked to drain (generation.ts). If N+1 exits
 *    or stays silent past `readyTimeoutMs`, it is stopped, N keeps serving untouched, and the
 *    reload fails with `ReloadError`.
 * 3. One reload at a time. A request that arrives while one runs is coalesced into exactly
 *    one more reload, started after the running one ends; every request that waited for it
 *    gets its result. So a reload always starts after the request for it, and code changed
 *    before the request is always what the new generation runs.
 * 4. `stop` drains every worker at once, then closes the sockets and the control channel. If
 *    the process exits without `stop` (a forced exit, e.g. a second SIGINT), every live
 *    worker's process group gets SIGKILL, the control socket file and unix listener files are
 *    removed, and the log says so. If it is killed outright (SIGKILL, the OOM killer), the
 *    watchdog drains the workers' groups (watchdog.ts).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  cancelScope,
  isCancellation,
  now,
  type Result,
  rethrowCancellation,
  sleep,
  TaskGroup,
} from '../core/index.ts';
import { pollCancel } from '../core/internal.ts';
import { Event } from '../sync/event.ts';
import { resolveCommand } from './command.ts';
import { parseListenFds } from '../net/systemd.ts';
import { ControlServer, type ControlRequest, type ControlResponse } from './control.ts';
import { type CrashLoopError, ReloadError, SupervisorStoppingError } from './errors.ts';
import { closeLeakedFds } from './fds.ts';
import { Generations } from './generation.ts';
import { bindListeners, type Listener, type ListenerSet } from './listeners.ts';
import { notifySystemd } from './notify.ts';
import { normalize, type Settings, type SupervisorOptions } from './options.ts';
import { ensurePrivateDir, runtimeDir } from './runtime-dir.ts';
import { Watchdog } from './watchdog.ts';
import { generationStatus, type ReloadResult, type SupervisorStatus } from './status.ts';

/** A reload request: everyone waiting for it gets the one outcome. */
type ReloadRun = Event<Result<ReloadResult>>;

async function reloadOutcome(run: ReloadRun): Promise<ReloadResult> {
  const r = await run.wait();
  if (r.ok) return r.value;
  throw r.error;
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
  readonly #o: Settings;
  #group: TaskGroup | null = null;
  #gens: Generations | null = null;
  #watchdog: Watchdog | null = null;
  #listeners: ListenerSet | null = null;
  #control: ControlServer | null = null;
  #command = '';
  #state: SupervisorStatus['state'] = 'starting';
  readonly #startedAt = now();
  readonly #startedWall = new Date();
  #running: ReloadRun | null = null;
  #queued: ReloadRun | null = null;
  #reloadsOk = 0;
  #stopping: Promise<void> | null = null;
  #failure: Error | null = null;
  readonly #done = new Event();
  // A forced exit (a second SIGINT, process.exit without stop): no time to drain, but no
  // worker is left behind and no socket file either. Everything here is synchronous.
  readonly #exitHook = () => {
    const killed = this.#gens?.killAll() ?? 0;
    this.#control?.removeFile();
    this.#listeners?.close();
    this.#o.log(
      `exiting at once, without draining: sent SIGKILL to ${killed} worker(s)` +
        (this.#control ? `; removed the control socket ${this.#control.path}` : ''),
    );
  };

  private constructor(o: Settings) {
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
      if (o.systemd) for (const { fd } of parseListenFds(o.env, process.pid)) keep.add(fd);
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
    const group = new TaskGroup({
      name: 'supervisor',
      policy: 'supervise',
      // Only stop() ends the workers: a cancelled caller (the CLI on SIGTERM) must not drain
      // them before stop's shutdown delay, during which they keep serving.
      shield: true,
      onError: (e, t) => o.log(`internal error in ${t.name}: ${(e as Error)?.message ?? e}`),
    });
    this.#group = group;
    process.on('exit', this.#exitHook);
    this.#watchdog = Watchdog.start(o.drainSignal, o.drainTimeoutMs);
    if (!this.#watchdog)
      o.log('warning: no watchdog (/bin/sh): workers outlive a killed supervisor');
    // The control socket first: a second supervisor on the same path is refused before it
    // binds (and so takes away) anyone's ports.
    if (o.control !== false) {
      this.#control = await ControlServer.open(o.control, o.privateControlDir, (req) =>
        this.#answer(req),
      );
    }
    this.#listeners = await bindListeners(o.specs, { env: o.env, systemd: o.systemd });
    const listeners = this.#listeners.listeners;
    for (const [i, l] of listeners.entries()) {
      const how = l.origin === 'systemd' ? 'from systemd' : 'listening';
      o.log(`${how} on ${l.address} as fd ${3 + i} (${l.name})`);
    }
    this.#gens = new Generations({
      settings: o,
      group,
      listeners,
      command: this.#command,
      compileCache: this.#compileCacheDir(),
      watchdog: this.#watchdog,
      stopping: () => this.#stopping !== null,
      onCrashLoop: (e) => this.#fail(e),
    });
    await this.#gens.startNext();
    if (this.#stopping) return; // stopped during start-up: the stop owns the state
    this.#state = 'running';
    this.#notifySystemd(['--ready', `--status=serving generation ${this.#gens.current?.id}`]);
  }

  /**
   * The workers' `NODE_COMPILE_CACHE`: the option's path; else a directory we created (0700)
   * and checked — `compile-cache` in the private runtime directory, or beside an explicit
   * control socket (`<control>.compile-cache`) — so no other user's files feed our workers'
   * code cache. A directory that fails the check is not used (the log says why).
   */
  #compileCacheDir(): string | undefined {
    const o = this.#o;
    if (o.compileCache !== null) return o.compileCache || undefined;
    try {
      if (o.control !== false && !o.privateControlDir) {
        const dir = `${o.control}.compile-cache`;
        ensurePrivateDir(dir, 'compile cache directory');
        return dir;
      }
      const base = runtimeDir(o.env);
      ensurePrivateDir(base, 'runtime directory');
      const dir = join(base, 'compile-cache');
      ensurePrivateDir(dir, 'compile cache directory');
      return dir;
    } catch (e) {
      o.log(`workers run without a compile cache: ${(e as Error).message}`);
      return undefined;
    }
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
    // Everything up to the wait runs synchronously in the call, so requests are ordered.
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
      run = this.#running = new Event();
      this.#launch(run);
    } else {
      run = this.#queued ??= new Event();
    }
    return reloadOutcome(run);
  }

  #launch(run: ReloadRun): void {
    this.#group!.spawn(
      async () => {
        try {
          const r = await this.#gens!.startNext();
          this.#reloadsOk++;
          this.#notifySystemd([`--status=serving generation ${r.generation}`]);
          run.set({ ok: true, value: r });
        } catch (e) {
          run.set({
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
            next.set({ ok: false, error: new SupervisorStoppingError('reload') });
          }
        }
      },
      { name: 'reload' },
    );
  }

  #fail(e: CrashLoopError): void {
    if (this.#failure) return;
    this.#failure = e;
    this.#done.set();
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
    switch (req.op) {
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
    }
  }

  /**
   * A snapshot of the supervisor: listeners, generations, workers, reload counts.
   * **Cancellation**: synchronous; not a checkpoint.
   */
  status(): SupervisorStatus {
    const t = now();
    const gens = this.#gens;
    return {
      pid: process.pid,
      state: this.#state,
      command: [this.#command || this.#o.command, ...this.#o.args],
      startedAt: this.#startedWall.toISOString(),
      uptimeMs: Math.round(t - this.#startedAt),
      control: this.controlPath,
      listeners: this.listeners.map((l, i) => ({ name: l.name, address: l.address, fd: 3 + i })),
      generation: gens?.current?.id ?? null,
      reloads: {
        ok: this.#reloadsOk,
        failed: gens?.reloadsFailed ?? 0,
        running: this.#running !== null,
        queued: this.#queued !== null,
        lastError: gens?.lastReloadError ?? null,
      },
      generations: [...(gens?.all ?? [])]
        .sort((a, b) => b.id - a.id)
        .map((g) => generationStatus(g, t)),
    };
  }

  /**
   * Waits until the supervisor is finished: after `stop` completed it returns; when it gave up
   * by itself (a crash loop left no worker) it throws `CrashLoopError` — call `stop` then to
   * release the sockets.
   * **Cancellation**: a blocking checkpoint.
   */
  async wait(): Promise<void> {
    await this.#done.wait();
    if (this.#failure) throw this.#failure;
  }

  /**
   * Drains every worker (`drainSignal` to its process group, SIGKILL after `drainTimeoutMs`),
   * then closes the sockets and the control channel. Idempotent; every call returns when it is
   * all done.
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
    const live = this.#gens?.live.size ?? 0;
    this.#state = 'stopping';
    if (wasRunning) {
      o.log(`stopping: draining ${live} worker(s) (up to ${o.drainTimeoutMs} ms)`);
      this.#notifySystemd(['STOPPING=1']);
    } else if (announce) {
      o.log(`stopping during start-up: stopping ${live} starting worker(s)`);
    }
    this.#queued?.set({ ok: false, error: new SupervisorStoppingError('reload') });
    if (wasRunning && o.shutdownDelayMs > 0) {
      // The propagation wait: readiness already fails (state 'stopping'), the workers still
      // serve, so connections a load balancer sends before it notices are answered. Shielded:
      // the stop signal that got us here must not cut it short.
      o.log(`not ready; serving ${o.shutdownDelayMs} ms more before the drain (shutdown delay)`);
      await cancelScope(() => sleep(o.shutdownDelayMs), { shield: true });
    }
    if (this.#group) {
      await this.#group.cancel('supervisor stopping');
      await this.#group[Symbol.asyncDispose]();
    }
    await this.#watchdog?.close();
    this.#listeners?.close();
    await this.#control?.close();
    process.off('exit', this.#exitHook);
    this.#state = 'stopped';
    if (wasRunning || announce) o.log('stopped');
    this.#done.set();
  }

  /** `await using`: stops the supervisor. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}
