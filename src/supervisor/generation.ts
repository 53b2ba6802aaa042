/**
 * The generation lifecycle: start a generation of workers, wait until every one is ready, hand
 * over from the previous one, keep the workers running, restart crashed ones, drain retired
 * ones.
 *
 * Guarantees, and who keeps them:
 * 1. A new generation serves before the old one is asked to drain; one that exits or stays
 *    silent past `readyTimeoutMs` is stopped and the old one serves on untouched (`startNext`).
 * 2. Every worker process is owned by a task (its keeper): a worker is never left running
 *    unwatched, and cancelling the keeper drains it with a bounded wait (`#keep`, `#drain`).
 * 3. Draining signals the worker's whole process group, then SIGKILLs the group at the drain
 *    deadline; a worker counts as gone only once its group is (worker.ts).
 * 4. A worker of the serving generation that exits on its own is restarted after a backoff
 *    (100 ms, doubling, at most 10 s); more than `maxRestarts` exits of one slot within
 *    `restartWindowMs` is a crash loop: that slot is given up, and when no slot of the serving
 *    generation is left the supervisor is told (`onCrashLoop`).
 */
import {
  all,
  cancelScope,
  checkpoint,
  rethrowCancellation,
  sleep,
  type TaskGroup,
  timeout,
} from '../core/index.ts';
import { now } from '../core/index.ts';
import { CrashLoopError, ReloadError, WorkerNotReadyError } from './errors.ts';
import type { Listener } from './listeners.ts';
import { readyHint, type Settings } from './options.ts';
import type { GenerationState, ReloadResult } from './status.ts';
import type { Watchdog } from './watchdog.ts';
import { describeExit, WorkerProcess } from './worker.ts';

const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 10_000;
const KILL_WAIT_MS = 5_000;

/** @internal one worker position of a generation, across its restarts. */
export interface Slot {
  readonly index: number;
  restarts: number;
  crashes: number[];
  state: 'running' | 'restarting' | 'crash-loop';
}

/** @internal one worker process of a generation, and what its keeper knows about it. */
export interface Member {
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

/** @internal a generation: its slots and the worker processes running in them. */
export class Generation {
  readonly id: number;
  state: GenerationState = 'starting';
  /** When a reload retired it (library clock), for the "drained" log line. */
  drainingSince: number | null = null;
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

/** @internal what the lifecycle needs from the supervisor that runs it. */
export interface LifecycleHost {
  readonly settings: Settings;
  /** Where keepers and restarts run (supervise policy). */
  readonly group: TaskGroup;
  readonly listeners: readonly Listener[];
  /** The resolved worker program. */
  readonly command: string;
  readonly compileCache: string | undefined;
  /** Told every worker's process group, so the groups drain if this process dies. */
  readonly watchdog: Watchdog | null;
  /** True once `stop` began: no restart, no exit handling. */
  stopping(): boolean;
  /** No worker of the serving generation is left after a crash loop. */
  onCrashLoop(e: CrashLoopError): void;
}

/** `worker 4242`, or `worker` for one that never started. */
function who(p: WorkerProcess): string {
  return p.pid === undefined ? 'worker' : `worker ${p.pid}`;
}

/** @internal the generations of one supervisor, and their workers. */
export class Generations {
  readonly #host: LifecycleHost;
  #nextId = 0;
  /** The serving generation. */
  current: Generation | null = null;
  /** Every generation with a live worker, and the serving one. */
  readonly all = new Set<Generation>();
  /** Every worker whose keeper runs. */
  readonly live = new Set<Member>();
  reloadsFailed = 0;
  lastReloadError: string | null = null;

  constructor(host: LifecycleHost) {
    this.#host = host;
  }

  /**
   * Starts the next generation, waits until it is ready, makes it the serving one and retires
   * the previous one (guarantee 1). Throws `ReloadError` (or, for the first generation, the
   * cause) when it never got ready.
   * **Cancellation**: a checkpoint; cancelled, the new generation's keepers stop it.
   */
  async startNext(): Promise<ReloadResult> {
    const o = this.#host.settings;
    const gen = new Generation(++this.#nextId, o.workers);
    this.all.add(gen);
    const t0 = now();
    const previous = this.current;
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
    this.current = gen;
    for (const m of members) if (m.proc.exit) this.#onExit(m);
    if (previous) this.#retire(previous, 'reload');
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

  /** SIGKILLs every live worker's process group at once (a forced exit); returns how many. */
  killAll(): number {
    let killed = 0;
    for (const m of this.live) if (m.proc.kill('SIGKILL')) killed++;
    return killed;
  }

  #failGeneration(gen: Generation, cause: Error): never {
    gen.state = 'failed';
    this.#retire(gen, 'not ready', true);
    const current = this.current;
    if (!current) throw cause; // the first start: the caller reports it
    this.reloadsFailed++;
    const msg = `reload failed: ${cause.message}; generation ${current.id} keeps serving`;
    this.lastReloadError = msg;
    this.#host.settings.log(msg);
    throw new ReloadError(gen.id, msg, { cause });
  }

  #retire(gen: Generation, reason: string, keepState = false): void {
    if (!keepState) {
      gen.state = 'draining';
      gen.drainingSince = now();
    }
    for (const m of gen.members) m.retire(reason);
    if (gen.members.size === 0) this.all.delete(gen);
  }

  #startWorker(gen: Generation, slot: Slot): Member {
    const h = this.#host;
    const o = h.settings;
    const proc = new WorkerProcess({
      command: h.command,
      args: o.args,
      env: o.env,
      cwd: o.cwd,
      listeners: h.listeners,
      generation: gen.id,
      slot: slot.index,
      assumeReadyAfterMs: o.assumeReadyAfterMs,
      nodePreload: o.nodePreload,
      compileCache: h.compileCache,
      notReadyHint: readyHint(o, 'exited'),
      drainSignal: o.drainSignal,
      drainTimeoutMs: o.drainTimeoutMs,
      drainSpreadMs: o.drainSpreadMs,
      warmUp: o.warmUp,
    });
    if (proc.pid !== undefined) h.watchdog?.add(proc.pid);
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
    this.live.add(m);
    h.group.spawn(() => this.#keep(m), { name: `worker ${gen.id}.${slot.index}` });
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
      if (m.proc.exit && m.proc.pid !== undefined) this.#host.watchdog?.remove(m.proc.pid);
      this.live.delete(m);
      m.gen.members.delete(m);
      if (m.gen.members.size === 0 && m.gen !== this.current) {
        this.all.delete(m.gen);
        // When the hand-over is over: the moment to measure a reload's cost up to.
        if (m.gen.drainingSince !== null && !this.#host.stopping()) {
          const ms = Math.round(now() - m.gen.drainingSince);
          this.#host.settings.log(`generation ${m.gen.id} drained after ${ms} ms`);
        }
      }
    }
    // A stop that arrived during the shielded drain ends the keeper here, as a cancellation.
    await checkpoint();
    this.#onExit(m);
  }

  async #drain(m: Member): Promise<void> {
    const o = this.#host.settings;
    m.proc.state = 'draining';
    m.proc.kill(o.drainSignal);
    const r = await cancelScope(() => m.proc.waitExit(), {
      timeoutMs: o.drainTimeoutMs,
      shield: true,
    });
    if (r.value === undefined && !m.proc.exit) {
      o.log(
        `worker ${m.proc.pid} still running after ${o.drainTimeoutMs} ms of drain: ` +
          'SIGKILL to its process group',
      );
      m.proc.kill('SIGKILL');
      await cancelScope(() => m.proc.waitExit(), { timeoutMs: KILL_WAIT_MS, shield: true });
    }
  }

  #onExit(m: Member): void {
    const h = this.#host;
    if (m.exitHandled || h.stopping()) return;
    if (m.retired && !m.startFailed) return;
    // A worker of a generation still starting is its reload's business — unless it got ready
    // and died just before the handover, which the reload hands back here afterwards.
    if (m.gen !== this.current) return;
    m.exitHandled = true;
    const o = h.settings;
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
        h.onCrashLoop(new CrashLoopError(`${msg}; no worker left`));
      }
      return;
    }
    const delay = Math.min(BACKOFF_BASE_MS * 2 ** (slot.crashes.length - 1), BACKOFF_MAX_MS);
    slot.state = 'restarting';
    h.group.spawn(() => this.#restart(m.gen, slot, delay), { name: 'restart' });
  }

  async #restart(gen: Generation, slot: Slot, delay: number): Promise<void> {
    const o = this.#host.settings;
    await sleep(delay);
    if (this.#host.stopping() || gen !== this.current) return;
    slot.restarts++;
    const m = this.#startWorker(gen, slot);
    slot.state = 'running';
    o.log(
      `restarting worker slot ${slot.index} of generation ${gen.id}: pid ${m.proc.pid ?? '(not started)'}`,
    );
    let ok: true | undefined;
    try {
      ok = await timeout(o.readyTimeoutMs, async () => {
        await m.proc.waitReady();
        return true as const;
      });
    } catch (e) {
      rethrowCancellation(e);
      return; // it exited: its keeper counts the crash
    }
    if (ok === undefined && !m.proc.exit) {
      o.log(
        `worker ${m.proc.pid} not ready within ${o.readyTimeoutMs} ms: stopping it` +
          readyHint(o, 'silent'),
      );
      m.startFailed = true;
      m.retire('not ready');
    }
  }
}
