/**
 * Readiness: how a worker tells its supervisor (and systemd) that it serves.
 *
 * Guarantees:
 * 1. Any language can report readiness: write the line `READY=1\n` to the file descriptor named
 *    by `QUIESCE_READY_FD`. `notifyReady` is that one write for Node workers.
 * 2. Outside a supervisor `notifyReady` is a no-op that says so in its result; it never throws
 *    because nobody listens.
 * 3. Readiness is said once: the first call writes and closes the descriptor (so children of
 *    the worker do not inherit it) and removes the variable; later calls return the first
 *    call's result.
 * 4. Under systemd (`NOTIFY_SOCKET` set) readiness also goes to the service manager through the
 *    `systemd-notify` tool, because Node cannot send on unix datagram sockets.
 *
 * This module imports only Node built-ins up front (the core is loaded when systemd needs it):
 * every worker start pays for what it imports.
 */
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, writeSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The environment variable that carries the readiness descriptor's number. */
export const READY_FD_ENV = 'QUIESCE_READY_FD';

/** What `notifyReady` reached. Both false: the process is not supervised. */
export interface ReadyResult {
  /** The quiesce supervisor got `READY=1` through its readiness pipe. */
  readonly supervisor: boolean;
  /** systemd got `READY=1` through `systemd-notify`. */
  readonly systemd: boolean;
  /** Why a channel that was configured could not be used, if one could not. */
  readonly problem?: string;
}

let first: Promise<ReadyResult> | null = null;

/**
 * Reports that this worker accepts connections: writes `READY=1` to the supervisor's readiness
 * pipe (`QUIESCE_READY_FD`) and, when `NOTIFY_SOCKET` is set, runs `systemd-notify --ready`.
 * Call it once the listeners are open and the worker can answer. Idempotent.
 * **Cancellation**: the pipe write never blocks (one short line); waiting for `systemd-notify`
 * is a checkpoint (the tool still runs to its end). Under `mask`, only that wait can raise.
 * @example
 * server.listen({ fd: 3 }, () => notifyReady());
 */
export function notifyReady(env: NodeJS.ProcessEnv = process.env): Promise<ReadyResult> {
  if (env !== process.env) return announce(env);
  first ??= announce(env);
  return first;
}

async function announce(env: NodeJS.ProcessEnv): Promise<ReadyResult> {
  let supervisor = false;
  let problem: string | undefined;
  const raw = env[READY_FD_ENV];
  if (raw !== undefined && raw !== '') {
    delete env[READY_FD_ENV];
    const fd = /^\d+$/.test(raw) ? Number(raw) : -1;
    if (fd < 3) {
      problem = `${READY_FD_ENV}="${raw}" is not a descriptor number`;
    } else {
      try {
        writeSync(fd, 'READY=1\n');
        supervisor = true;
      } catch (e) {
        problem = `cannot write to ${READY_FD_ENV} ${fd}: ${(e as Error).message}`;
      }
      try {
        closeSync(fd);
      } catch {}
    }
  }
  let systemd = false;
  if (env.NOTIFY_SOCKET) {
    const r = await notifySystemd(['--ready'], env);
    systemd = r.ok;
    if (!r.ok) problem = problem ? `${problem}; ${r.problem}` : r.problem;
  }
  return problem === undefined ? { supervisor, systemd } : { supervisor, systemd, problem };
}

/** Who this process is, when a quiesce supervisor started it. */
export interface SupervisedWorker {
  /** The generation this worker belongs to (1 for the first start, +1 per reload). */
  readonly generation: number;
  /** Its index among the `--workers` of its generation, from 0. */
  readonly worker: number;
  /** The supervisor's process id. */
  readonly supervisorPid: number;
}

/**
 * This process's place in its supervisor, read from the environment; `null` when it was not
 * started by a quiesce supervisor.
 * **Cancellation**: synchronous; not a checkpoint.
 * @example
 * const me = supervisedWorker();
 * log(me ? `generation ${me.generation}` : 'standalone');
 */
export function supervisedWorker(env: NodeJS.ProcessEnv = process.env): SupervisedWorker | null {
  const g = Number(env.QUIESCE_GENERATION);
  const w = Number(env.QUIESCE_WORKER);
  const p = Number(env.QUIESCE_SUPERVISOR_PID);
  if (!Number.isInteger(g) || !Number.isInteger(w) || !Number.isInteger(p) || g < 1) return null;
  return { generation: g, worker: w, supervisorPid: p };
}

/** @internal finds an executable in `PATH`; null when there is none. */
export function which(name: string, env: NodeJS.ProcessEnv = process.env): string | null {
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {}
  }
  return null;
}

/**
 * @internal sends `args` (e.g. `['--ready']`, `['--status=…']`) to systemd through the
 * `systemd-notify` tool, as this process (`--pid`). Never throws; reports what went wrong.
 */
export async function notifySystemd(
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ ok: true } | { ok: false; problem: string }> {
  if (!env.NOTIFY_SOCKET) return { ok: false, problem: 'NOTIFY_SOCKET is not set' };
  const tool = which('systemd-notify', env);
  if (!tool) {
    return {
      ok: false,
      problem: 'NOTIFY_SOCKET is set but the systemd-notify tool is not in PATH',
    };
  }
  const child = spawn(tool, [`--pid=${process.pid}`, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env,
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 1000) stderr += d;
  });
  const { adopt } = await import('../core/index.ts');
  const code = await adopt(
    new Promise<number | string>((resolve) => {
      child.once('error', (e) => resolve(e.message));
      child.once('close', (c, sig) => resolve(c ?? `killed by ${sig}`));
    }),
  );
  if (code === 0) return { ok: true };
  return { ok: false, problem: `systemd-notify failed: ${String(code)} ${stderr.trim()}`.trim() };
}
