/**
 * Where the library reports what it must not hide but cannot throw: a cancellation swallowed
 * by a task that then finished normally, a bounded cleanup that overran its deadline, a
 * cleanup error suppressed behind a cancellation, a failed task nobody looked at, a foreign
 * promise abandoned on cancel.
 *
 * Guarantee: every report reaches exactly one handler — the one installed with
 * `onDiagnostic`, or else `process.emitWarning` with the report's code.
 */

/** One report. `code` is stable (docs/errors.md). */
export interface Diagnostic {
  readonly code:
    | 'QUIESCE_SWALLOWED_CANCELLATION'
    | 'QUIESCE_CLEANUP_OVERRUN'
    | 'QUIESCE_SUPPRESSED_ERROR'
    | 'QUIESCE_UNOBSERVED_TASK_ERROR'
    | 'QUIESCE_ABANDONED_PROMISE'
    | 'QUIESCE_HANDLER_ERROR'
    | 'QUIESCE_ACCEPT_ERROR';
  readonly message: string;
  readonly task?: string;
  readonly error?: unknown;
}

let handler: ((d: Diagnostic) => void) | null = null;

/**
 * Installs the handler every diagnostic goes to, replacing the default (`process.emitWarning`).
 * Returns a function that puts the previous handler back.
 * @example
 * const restore = onDiagnostic((d) => logger.warn(d.code, d.message));
 */
export function onDiagnostic(fn: ((d: Diagnostic) => void) | null): () => void {
  const prev = handler;
  handler = fn;
  return () => {
    handler = prev;
  };
}

/**
 * Sends `d` to the installed handler, or to `process.emitWarning`. Not in the public face:
 * parts above core reach it through core/internal.ts.
 */
export function report(d: Diagnostic): void {
  if (handler) {
    handler(d);
    return;
  }
  const detail = d.error instanceof Error ? `: ${d.error.message}` : '';
  process.emitWarning(`${d.message}${detail}`, { code: d.code, type: 'QuiesceWarning' });
}
