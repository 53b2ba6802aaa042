/**
 * `run(main)`: the entry point of a program.
 *
 * Guarantees:
 * 1. The first SIGINT or SIGTERM cancels `main` (so every `finally` and `bracket` runs, for up
 *    to `cleanupTimeoutMs`); a second one is a forced cancellation (no cleanup window: every
 *    checkpoint raises); a third SIGINT exits at once with code 130.
 * 2. Exit codes: 0 when `main` returns, 1 when it throws, 130 after SIGINT, 143 after SIGTERM.
 * 3. Every signal listener `run` adds is removed before it returns.
 */
import { now } from './clock.ts';
import { cleanupMsOption } from './context.ts';
import { ArgumentError } from './errors.ts';
import { spawn, type Task } from './task.ts';

/** Options for `run`. */
export interface RunOptions {
  /** Signals that cancel `main`. Default: `['SIGINT', 'SIGTERM']`. */
  signals?: readonly NodeJS.Signals[];
  /** Call `process.exit` with the exit code when `main` is done. Default: false (the exit
   * code is set and the process ends when nothing is left running). */
  exit?: boolean;
  /**
   * How long cleanup may run after the first signal, in ms, before every checkpoint raises
   * again (the cleanup window of `main`, inherited by its tasks). Default: 5000.
   */
  cleanupTimeoutMs?: number;
  /**
   * What a second signal does: `'force'` (default) cancels `main` again, forced (no cleanup
   * window; a third SIGINT exits at once with 130); `'exit'`: a second SIGINT exits at once
   * with 130 — for programs whose cleanup is shielded on purpose (a supervisor's drain).
   */
  onSecondSignal?: 'force' | 'exit';
}

const signalNumbers: Partial<Record<NodeJS.Signals, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGTERM: 15,
  SIGUSR2: 12,
};

/**
 * Runs `main` as the program's root task and maps its end to an exit code (see guarantees).
 * Returns `main`'s value, or `undefined` if it failed or was cancelled (the error is printed
 * to stderr, a stack only for errors that are not cancellations).
 * @example
 * await run(async () => {
 *   await using server = await listen({ port: 8080 });
 *   await server.serve(handler);
 * });
 */
export async function run<T>(
  main: () => T | PromiseLike<T>,
  options?: RunOptions,
): Promise<T | undefined> {
  if (typeof main !== 'function') throw new ArgumentError('run(main): main must be a function');
  const signals = options?.signals ?? ['SIGINT', 'SIGTERM'];
  const cleanupTimeoutMs = cleanupMsOption('run', options?.cleanupTimeoutMs);
  let received: NodeJS.Signals | null = null;
  let forced = false;
  const onSecond = options?.onSecondSignal ?? 'force';
  if (onSecond !== 'force' && onSecond !== 'exit') {
    throw new ArgumentError(
      `run: onSecondSignal must be 'force' or 'exit', got ${String(options?.onSecondSignal)}`,
    );
  }
  // Listeners first, main second: a signal that arrives while main's first synchronous
  // stretch runs must cancel it, not kill the process with the default action.
  let task: Task<T> | null = null;
  const listeners = signals.map((sig) => {
    const listener = () => {
      if (received !== null) {
        if (forced || onSecond === 'exit') {
          if (sig === 'SIGINT') process.exit(130);
          return;
        }
        forced = true;
        task?.scope.cancel({ kind: 'signal', reason: sig, by: 'run', at: now() }, true);
        return;
      }
      received = sig;
      task?.scope.cancel({ kind: 'signal', reason: sig, by: 'run', at: now() });
    };
    process.on(sig, listener);
    return [sig, listener] as const;
  });
  task = spawn(main, { name: 'main', cleanupTimeoutMs });
  if (received !== null) {
    task.scope.cancel({ kind: 'signal', reason: received, by: 'run', at: now() });
  }
  let code = 0;
  let value: T | undefined;
  try {
    task.observe();
    await task.joined();
    const r = task.outcome!;
    if (r.ok) value = r.value;
    else if (received === null || !task.endedCancelled) {
      code = 1;
      console.error(r.error);
    }
  } finally {
    for (const [sig, l] of listeners) process.off(sig, l);
  }
  if (received !== null) code = 128 + (signalNumbers[received as NodeJS.Signals] ?? 0);
  process.exitCode = code;
  if (options?.exit) process.exit(code);
  return value;
}
