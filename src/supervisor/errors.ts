/**
 * The errors of the supervisor part. Every one is a user-facing condition with a stable `code`
 * (listed in docs/supervisor.md), so the CLI prints its message and never a stack trace.
 * Binding failures are quiesce/net's one `ListenError` (re-exported by index.ts).
 */
import { QuiesceError } from '../core/index.ts';

/** A `--listen` specification that is not an address we understand. */
export class ListenAddressError extends QuiesceError {
  constructor(message: string) {
    super('ERR_LISTEN_ADDRESS', message);
  }
}

/** The worker command does not exist (exit status 127, as in a shell). */
export class CommandNotFoundError extends QuiesceError {
  readonly command: string;
  constructor(command: string) {
    super('ERR_COMMAND_NOT_FOUND', `command not found: ${command}`);
    this.command = command;
  }
}

/** The worker command exists but cannot be executed (exit status 126, as in a shell). */
export class CommandNotExecutableError extends QuiesceError {
  readonly command: string;
  constructor(command: string, why: string) {
    super('ERR_COMMAND_NOT_EXECUTABLE', `cannot execute ${command}: ${why}`);
    this.command = command;
  }
}

/** A worker exited, or stayed silent past the ready timeout, before it reported ready. */
export class WorkerNotReadyError extends QuiesceError {
  readonly generation: number;
  readonly pid: number | undefined;
  constructor(generation: number, pid: number | undefined, why: string) {
    super(
      'ERR_WORKER_NOT_READY',
      `worker${pid === undefined ? '' : ` ${pid}`} of generation ${generation} ${why}`,
    );
    this.generation = generation;
    this.pid = pid;
  }
}

/** A reload did not happen: the new generation never got ready; the old one keeps serving. */
export class ReloadError extends QuiesceError {
  /** The generation that failed to start. */
  readonly generation: number;
  constructor(generation: number, message: string, options?: ErrorOptions) {
    super('ERR_RELOAD_FAILED', message, options);
    this.generation = generation;
  }
}

/** Workers crashed too often in too short a time; the supervisor stopped restarting them. */
export class CrashLoopError extends QuiesceError {
  constructor(message: string) {
    super('ERR_CRASH_LOOP', message);
  }
}

/** A request that needs a running supervisor arrived while it was stopping. */
export class SupervisorStoppingError extends QuiesceError {
  constructor(what: string) {
    super('ERR_SUPERVISOR_STOPPING', `${what}: the supervisor is stopping`);
  }
}

/** The control socket cannot be created safely, is taken, or cannot be reached. */
export class ControlSocketError extends QuiesceError {
  constructor(message: string) {
    super('ERR_CONTROL_SOCKET', message);
  }
}

/**
 * A failed system call in one line for the user: the phrase `hints` has for its errno, then
 * the errno (`permission denied (EACCES)`); the error's own message when there is no phrase.
 */
export function inWords(e: unknown, hints: Readonly<Record<string, string>>): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  const hint = code ? hints[code] : undefined;
  return hint ? `${hint} (${code})` : ((e as Error)?.message ?? String(e));
}
