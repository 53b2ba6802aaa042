/**
 * quiesce — cancellation that never corrupts, for async/await.
 *
 * Guarantees of this part, and where each is kept:
 * 1. No task outlives its parent (`spawn`, task.ts).
 * 2. Cancellation lands only at checkpoints, is delivered once and then gives cleanup a
 *    bounded window (default 5 s) before it raises at every checkpoint again, and is owned by
 *    exactly one scope, so nested timeouts each catch their own (context.ts, scope.ts).
 * 8. No checkpoint and no re-raised cancellation starves the event loop (context.ts).
 * 3. Under `mask` only an operation that actually blocks can be interrupted; under
 *    `uninterruptibleMask` none (mask.ts).
 * 4. `bracket`: if acquire returns, release runs exactly once (mask.ts).
 * 5. A waiter on a cancelled task gets an ordinary `TaskCancelledError` (task.ts).
 * 6. No timer outlives a `timeout`, and timeouts share one host timer (clock.ts).
 * 7. A task group never misses a child: `spawn` registers synchronously, `close` refuses
 *    new ones (group.ts).
 */
export { now } from './clock.ts';
export type { Diagnostic } from './diagnostics.ts';
export { onDiagnostic } from './diagnostics.ts';
export {
  ArgumentError,
  attempt,
  type CancelCause,
  Cancelled,
  GroupClosedError,
  isCancellation,
  QuiesceError,
  type Result,
  rethrowCancellation,
  TaskCancelledError,
  TaskFinishedError,
  TimeoutError,
} from './errors.ts';
export {
  all,
  concurrently,
  race,
  TaskGroup,
  type TaskGroupOptions,
  withTaskGroup,
} from './group.ts';
export {
  andFinally,
  bracket,
  forkFinally,
  getMaskingState,
  type MaskingState,
  mask,
  onException,
  type Restore,
  uninterruptibleMask,
} from './mask.ts';
export { type RunOptions, run } from './run.ts';
export {
  boundedCleanup,
  type CancelScopeOptions,
  cancelScope,
  checkpoint,
  currentSignal,
  type ScopeHandle,
  sleep,
  sleepUntil,
  timeout,
  timeoutAt,
  timeoutAtOrThrow,
  timeoutOrThrow,
  withSignal,
} from './scope.ts';
export {
  type AdoptOptions,
  adopt,
  type CancelOptions,
  currentTask,
  dumpTasks,
  type SpawnOptions,
  spawn,
  Task,
} from './task.ts';
