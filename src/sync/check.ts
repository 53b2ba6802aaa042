/**
 * The checkpoint a non-blocking path makes, for operations that return a promise: a pending
 * cancellation (unmasked only — see `pollCancel`) comes back as a rejected promise rather than a
 * synchronous throw, so `op().catch(...)` sees it like every other outcome.
 */
import { pollCancel } from '../core/context.ts';

/** The cancellation `pollCancel` would raise, or null; runs the checkpoint hook once. */
export function pendingCancellation(): unknown {
  try {
    pollCancel();
    return null;
  } catch (e) {
    return e;
  }
}

/** A promise already settled with `value`, or rejected by a pending cancellation. */
export function resolvedAfterCheck<T>(value: () => T): Promise<T> {
  const e = pendingCancellation();
  return e === null ? Promise.resolve(value()) : Promise.reject(e);
}
