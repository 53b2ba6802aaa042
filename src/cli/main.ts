#!/usr/bin/env node
/**
 * The `quiesce` command. Thin: parses arguments (args.ts), then runs a `Supervisor` or talks
 * to one over its control socket.
 *
 * Guarantees:
 * 1. A user mistake (bad argument, bad address, port in use, command not found, no supervisor
 *    running) prints one clear line — a usage error a second one, naming the help that
 *    applies (`Try 'quiesce run --help'.`) — and never a stack trace; a stack is printed only
 *    for a bug in quiesce itself. `quiesce` with no command prints the help on stderr and
 *    exits 2.
 * 2. Exit status: 0 success; 1 failure (reload failed, first generation never ready, socket
 *    not bound, crash loop, supervisor unreachable); 2 usage error; 126/127 command not
 *    executable / not found; 130/143 after SIGINT/SIGTERM, once every worker has drained.
 * 3. Every signal listener the CLI adds (SIGHUP for reload) is removed before it exits.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isCancellation, QuiesceError, run } from '../core/index.ts';
import { parseListenFds } from '../net/index.ts';
import {
  type ControlResponse,
  controlRequest,
  defaultControlPath,
  type ReloadResult,
  Supervisor,
  type SupervisorStatus,
} from '../supervisor/index.ts';
import { type Command, parseArgs, UsageError } from './args.ts';
import { helpText } from './help.ts';

const out = (s: string) => process.stdout.write(`${s}\n`);
const err = (s: string) => process.stderr.write(`quiesce: ${s}\n`);

/** The exit status for an error that ends the command (guarantee 2). */
export function exitCodeFor(e: unknown): number {
  const code = (e as { code?: unknown })?.code;
  if (e instanceof UsageError || code === 'ERR_LISTEN_ADDRESS' || code === 'ERR_INVALID_ARGUMENT') {
    return 2;
  }
  if (code === 'ERR_COMMAND_NOT_FOUND') return 127;
  if (code === 'ERR_COMMAND_NOT_EXECUTABLE') return 126;
  return 1;
}

function report(e: unknown): number {
  if (e instanceof UsageError) {
    err(e.message);
    process.stderr.write(`Try 'quiesce ${e.command ? `${e.command} ` : ''}--help'.\n`);
  } else if (e instanceof QuiesceError) {
    err(e.message);
  } else {
    // Not a user mistake: a bug in quiesce, which deserves its stack.
    console.error(e);
  }
  return exitCodeFor(e);
}

/** Human durations for `status`: 850ms, 4.2s, 5m 3s, 2h 10m, 3d 4h. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.floor(s % 60)}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** The text `quiesce status` prints. */
export function formatStatus(st: SupervisorStatus): string {
  const lines = [
    `supervisor  pid ${st.pid}, ${st.state}, up ${formatDuration(st.uptimeMs)}` +
      (st.control ? `, control ${st.control}` : ''),
    `command     ${st.command.join(' ')}`,
    ...st.listeners.map(
      (l, i) => `${i === 0 ? 'listening' : '         '}   ${l.address} (fd ${l.fd}, ${l.name})`,
    ),
    `reloads     ${st.reloads.ok} ok, ${st.reloads.failed} failed` +
      (st.reloads.running ? ', one running' : '') +
      (st.reloads.queued ? ', one queued' : '') +
      (st.reloads.lastError ? `; last failure: ${st.reloads.lastError}` : ''),
    '',
  ];
  const rows = [['GEN', 'GEN STATE', 'WORKER', 'PID', 'STATE', 'UPTIME', 'RESTARTS']];
  for (const g of st.generations) {
    for (const w of g.workers) {
      rows.push([
        String(g.id),
        g.state,
        String(w.slot),
        w.pid === null ? '-' : String(w.pid),
        w.state,
        w.pid === null ? '-' : formatDuration(w.uptimeMs),
        String(w.restarts),
      ]);
    }
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  for (const r of rows)
    lines.push(
      r
        .map((cell, c) => cell.padEnd(widths[c]))
        .join('  ')
        .trimEnd(),
    );
  return lines.join('\n');
}

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
    return String(pkg.version);
  } catch {
    return 'unknown';
  }
}

async function runSupervisor(c: Extract<Command, { kind: 'run' }>): Promise<number> {
  const o = c.options;
  if (
    (o.listen ?? []).length === 0 &&
    (o.systemd === false || parseListenFds(process.env, process.pid).length === 0)
  ) {
    throw new UsageError(
      'nothing to listen on: pass --listen ADDRESS (or start quiesce by systemd socket activation)',
      'run',
    );
  }
  if (o.assumeReadyAfterMs !== undefined) {
    err(
      `--assume-ready-after ${o.assumeReadyAfterMs}ms is a guess, not a signal: a worker counts ` +
        'as ready after a fixed delay, and the old generation drains even if the new one is ' +
        'still starting. Prefer READY=1 on $QUIESCE_READY_FD.',
    );
  }
  if (process.pid === 1) {
    // Only where becomeInit could not (no /bin/sh, no process.execve): say what that costs
    // rather than leave zombies unexplained.
    err(
      'running as PID 1: signals are handled, but orphaned processes (left by wrappers ' +
        'such as npm start when their shell exits first) are not reaped and stay zombies; ' +
        'run under an init (docker run --init, or tini as the ENTRYPOINT) to reap them',
    );
  }
  let sup: Supervisor | null = null;
  const onHangup = () => {
    if (sup === null) err('SIGHUP before the first generation is ready: ignored');
    // The supervisor logs the outcome of the reload itself.
    else sup.reload().catch(() => {});
  };
  process.on('SIGHUP', onHangup);
  try {
    // A second signal exits at once: the drain is shielded, so a forced cancel would not cut it.
    const code = await run(
      async () => {
        try {
          sup = await Supervisor.start({ ...o, command: c.command, args: c.args });
        } catch (e) {
          if (isCancellation(e)) throw e;
          return report(e);
        }
        try {
          await sup.wait();
          return 0;
        } catch (e) {
          if (isCancellation(e)) throw e;
          return report(e);
        } finally {
          await sup.stop();
        }
      },
      { onSecondSignal: 'exit' },
    );
    return typeof code === 'number' ? code : 1;
  } finally {
    process.off('SIGHUP', onHangup);
  }
}

function answer(res: ControlResponse): Record<string, unknown> {
  if (!res.ok) throw new QuiesceError(res.error.code, res.error.message);
  return res;
}

async function client(
  c: Extract<Command, { kind: 'reload' | 'status' | 'stop' }>,
): Promise<number> {
  const path = c.control ?? defaultControlPath(c.name, process.env);
  if (c.kind === 'stop') {
    answer(await controlRequest(path, { op: 'stop' }, { waitForClose: c.wait }));
    out(c.wait ? 'stopped' : 'stopping');
    return 0;
  }
  if (c.kind === 'status') {
    const res = answer(await controlRequest(path, { op: 'status' }));
    if (c.ready) {
      // A readiness probe: serving means running with a generation up; stopping (the
      // shutdown delay, then the drain) and starting are not ready.
      const st = res.status as SupervisorStatus;
      if (st.state === 'running' && st.generation !== null) {
        out(`ready: generation ${st.generation} serving`);
        return 0;
      }
      out(`not ready: ${st.state}`);
      return 1;
    }
    out(
      c.json ? JSON.stringify(res.status, null, 2) : formatStatus(res.status as SupervisorStatus),
    );
    return 0;
  }
  if (c.kind === 'reload') {
    const res = await controlRequest(path, { op: 'reload' });
    if (c.json) out(JSON.stringify(res, null, 2));
    if (!res.ok) {
      if (!c.json) err(res.error.message);
      return 1;
    }
    if (!c.json) {
      const r = res.reload as ReloadResult;
      out(
        `reloaded: generation ${r.generation} serving (pid ${r.pids.join(', ')}) after ` +
          `${r.readyMs} ms; generation ${r.previous} draining`,
      );
    }
  }
  return 0;
}

// The init `quiesce run` becomes as PID 1: run quiesce as a child, pass signals on, exit
// with its status. `wait` in sh collects any child that ends, so orphans handed to PID 1 are
// reaped while it waits for quiesce.
const INIT = `"$@" & child=$!
for s in TERM INT HUP QUIT USR1 USR2; do trap "kill -s $s $child 2>/dev/null" $s; done
while :; do
  wait "$child"; st=$?
  kill -0 "$child" 2>/dev/null || exit "$st"
done`;

/**
 * As PID 1 (a container without an init), `quiesce run` replaces itself by a tiny `/bin/sh`
 * init that runs quiesce again as its child: Node can wait only for its own children, so the
 * orphans a wrapper leaves (npm's shell exits before the app) would otherwise stay zombies.
 * Returns false (nothing done) elsewhere, or where there is no `/bin/sh` or `process.execve`.
 */
function becomeInit(argv: readonly string[]): boolean {
  const execve = (process as { execve?: (f: string, a: string[], e: NodeJS.ProcessEnv) => never })
    .execve;
  if (process.pid !== 1 || process.platform !== 'linux' || !execve || !existsSync('/bin/sh')) {
    return false;
  }
  const self = [process.execPath, ...process.execArgv, process.argv[1], ...argv];
  execve('/bin/sh', ['sh', '-c', INIT, 'quiesce-init', ...self], process.env);
  return true;
}

/** Runs the CLI on `argv` (without `node` and the script) and returns the exit status. */
export async function main(argv: readonly string[]): Promise<number> {
  try {
    const c = parseArgs(argv);
    switch (c.kind) {
      case 'help':
        if (c.bare) {
          // No command is a usage error (as git, npm, systemctl): help on stderr, status 2.
          process.stderr.write(`${helpText(undefined)}\n`);
          return 2;
        }
        out(helpText(c.topic));
        return 0;
      case 'version':
        out(version());
        return 0;
      case 'run':
        becomeInit(argv);
        return await runSupervisor(c);
      default:
        return await client(c);
    }
  } catch (e) {
    return report(e);
  }
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  // `run` already set 130/143 after a signal; keep that over a plain 0.
  if (!process.exitCode) process.exitCode = code;
}
