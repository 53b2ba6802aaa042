/**
 * The declared low-level face of core: the plumbing the parts above it (sync, net, http,
 * supervisor, testing) build their blocking primitives on. Not exported from the package
 * (`quiesce/internal/*` is closed); a test pins that parts above core import core only from
 * `core/index.ts` (the public face) or from this module.
 *
 * Guarantees a part above core may rely on:
 * 1. `block`/`blockResult`: a blocking checkpoint with the commit protocol — a waiter settles
 *    once; `commit` after an abort returns false, so the producer keeps its value.
 * 2. `pollCancel`/`pendingCancellation`: the check a non-blocking operation makes first; it
 *    raises (or returns) the pending cancellation only where a checkpoint would.
 * 3. Deadlines (`addDeadline`/`removeDeadline`) share one host timer and leave nothing behind.
 * 4. `runIn(ctx, fn, a)` runs `fn` in another context and restores the caller's; so does a
 *    `runnerIn()` runner, for callers in the frame it was made in.
 * 5. `report` sends a diagnostic to exactly one handler.
 * 6. `inCleanup()` is true exactly while the running code is inside an open cleanup window
 *    (a cancellation was delivered to it and its window has not closed).
 */
export {
  addDeadline,
  type Clock,
  type Deadline,
  hostTimerActive,
  installClock,
  now,
  pendingDeadlines,
  removeDeadline,
} from './clock.ts';
export {
  block,
  blockResult,
  CancelScope,
  type Ctx,
  current,
  hooks,
  inCleanup,
  MASKED,
  type MaskLevel,
  pendingCancellation,
  pendingYields,
  pollCancel,
  rejectCancelled,
  runIn,
  runnerIn,
  type TaskLike,
  UNINTERRUPTIBLE,
  UNMASKED,
  type Waiter,
} from './context.ts';
export { type Diagnostic, report } from './diagnostics.ts';
export { liveTaskCount } from './task.ts';
