/**
 * The `--help` texts. Kept beside the parser so a new option cannot miss its line; every
 * default shown comes from `supervisorDefaults`, the one place it is written.
 */
import { MAX_WORKERS, supervisorDefaults as D } from '../supervisor/index.ts';

/** A duration as `--help` and the parser write it: 500ms, 30s, 60s, 2m, 1h. */
export function showDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms >= 120_000) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

const MAIN = `quiesce — zero-downtime restarts for any server that can take its sockets from fd 3

Usage:
  quiesce run [options] [--] <command> [args…]
      supervise workers over shared sockets (quiesce run --help for the options)
  quiesce reload [--name NAME | --control PATH] [--json]
      start a new generation, drain the old one; --json prints the result as JSON
  quiesce status [--name NAME | --control PATH] [--json]
      generations, pids, states, uptimes, restarts; --json prints the whole snapshot
  quiesce stop [--name NAME | --control PATH] [--no-wait]
      drain all workers and exit
  quiesce help <command>
      details of one command (run, reload, status, stop)

A reload can also be asked for with SIGHUP to the supervisor.
Exit status: 0 success, 1 failure, 2 usage error (also: quiesce with no command).
Docs: docs/cli.md, docs/supervisor.md`;

const RUN = `Usage: quiesce run [options] [--] <command> [args…]

Binds the listeners once, then runs <command> as a worker with the sockets as fd 3, 4, …
(LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID set the systemd way). The worker says it is ready
by writing "READY=1\\n" to the fd in $QUIESCE_READY_FD (Node: notifyReady() from
quiesce/supervisor). SIGHUP or \`quiesce reload\` starts a new generation and drains the old one
once the new one is ready. SIGTERM/SIGINT drain every worker, then exit (143/130).

Options:
  -l, --listen [NAME=]ADDRESS  a socket for the workers; repeatable. ADDRESS is PORT or
                               :PORT (all interfaces), IP:PORT, [IPV6]:PORT or unix:PATH
                               (relative to the current directory unless absolute)
  -w, --workers N              workers per generation, sharing the sockets (default ${D.workers},
                               at most ${MAX_WORKERS})
      --ready-timeout DUR      how long a new worker may take to report ready (default ${showDuration(D.readyTimeoutMs)})
      --drain-timeout DUR      how long a draining worker (its process group) may take before
                               SIGKILL (default ${showDuration(D.drainTimeoutMs)})
      --drain-spread DUR       Node workers: hand busy keep-alive connections over to the new
                               generation over this window rather than all at once (default ${D.drainSpreadMs === 0 ? 'none: at once' : showDuration(D.drainSpreadMs)})
      --warm-up PATH[:N]       Node workers: before a new worker's HTTP server takes real
                               connections, it answers N GET PATH requests of its own
                               (default N 200; runs the app's code, so opt-in)
      --drain-signal SIG       the signal that asks a worker to drain (default ${D.drainSignal})
      --shutdown-delay DUR     on SIGTERM/stop, keep serving this long with readiness failing
                               (quiesce status --ready exits 1) before the drain: the time a
                               load balancer or Kubernetes needs to stop sending (default ${D.shutdownDelayMs === 0 ? 'none' : showDuration(D.shutdownDelayMs)})
      --max-restarts N         crash restarts of one worker within the window (default ${D.maxRestarts})
      --restart-window DUR     the crash-loop window (default ${showDuration(D.restartWindowMs)})
      --no-preload             do not preload quiesce's hook into Node workers (by default,
                               via NODE_OPTIONS, an unmodified app's listen(port) uses the
                               socket quiesce holds, it is ready once it listens, and its
                               HTTP servers drain on the drain signal, even under npm start)
      --ready-on-listen        the default now (kept for old command lines)
      --no-compile-cache       do not give Node workers a shared NODE_COMPILE_CACHE (by
                               default each generation after the first starts on the
                               compiled code of the previous one: less CPU during reloads)
      --assume-ready-after DUR LAST RESORT for workers that cannot report readiness: treat
                               them as ready DUR after they start. A guess, not a signal.
      --name NAME              name of this supervisor, for the default control socket
                               (default "${D.name}")
      --control PATH           control socket path (default $XDG_RUNTIME_DIR/quiesce/NAME.sock,
                               else <tmpdir>/quiesce-<uid>/NAME.sock)
      --no-control             no control socket (reload with SIGHUP only)
      --no-systemd             ignore sockets passed by systemd socket activation
  -h, --help                   this text

DUR is 500ms, 10s, 2m, 1h, or a bare number of milliseconds; at most 24h.

Exit status: 0 after \`quiesce stop\`; 1 when the first generation never got ready, a socket
could not be bound or workers crash-looped; 2 for a usage error; 126/127 when the command
cannot be executed / is not found; 130/143 after SIGINT/SIGTERM (workers drained).

Example:
  quiesce run --listen 127.0.0.1:8080 --workers 2 -- node server.js`;

const CLIENT = (cmd: string, flag: string, what: string, line: string) =>
  `Usage: quiesce ${cmd} [--name NAME | --control PATH] [${flag}]

${what}

Options:
      --name NAME      the supervisor's --name (default "${D.name}")
      --control PATH   its control socket, when it was started with --control
${line}
  -h, --help         this text`;

const TOPICS: Record<string, string> = {
  run: RUN,
  reload: CLIENT(
    'reload',
    '--json',
    'Asks the supervisor for a reload and waits for the result. Exit status 0 when the new\n' +
      'generation serves, 1 when the reload failed (the old generation keeps serving).\n' +
      'A request made while a reload runs is merged into one more reload after it.',
    '      --json           print the result as JSON',
  ),
  status: CLIENT(
    'status',
    '--json | --ready',
    'Shows the listeners, the generations, and each worker: pid, state, uptime, restarts.\n' +
      'With --ready, a readiness probe: exit status 0 while a generation serves, 1 while\n' +
      'starting or stopping (or when the supervisor cannot be reached).',
    '      --json           print the status as JSON\n      --ready          only say ready or not, in the exit status',
  ),
  stop: CLIENT(
    'stop',
    '--no-wait',
    'Asks the supervisor to drain every worker and exit, and waits until it has.',
    '      --no-wait        return once the supervisor has started stopping',
  ),
};

/** The help text for `topic` (a command, checked by the parser), or the general one. */
export function helpText(topic: string | undefined): string {
  return (topic !== undefined && TOPICS[topic]) || MAIN;
}
