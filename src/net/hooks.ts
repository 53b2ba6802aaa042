/**
 * User hooks (`onError`, `onAcceptError`) may be async functions.
 *
 * Guarantee:
 * 1. A hook's rejected promise is handed to `onRejected` and never left unhandled: an async
 *    logger that fails must not take the server down with an unhandled rejection.
 */

/**
 * @internal if `result` (what a hook returned) is a thenable, hands its rejection to
 * `onRejected`. A `then` that throws counts as a rejection.
 */
export function observeHookResult(result: unknown, onRejected: (error: unknown) => void): void {
  if (
    result !== null &&
    (typeof result === 'object' || typeof result === 'function') &&
    typeof (result as { then?: unknown }).then === 'function'
  ) {
    Promise.resolve(result as PromiseLike<unknown>).then(undefined, onRejected);
  }
}

/** @internal a short description of a thrown value, for a diagnostic's message. */
export function describeError(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
