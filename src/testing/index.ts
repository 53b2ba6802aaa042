/**
 * quiesce/testing — what our own tests use, shipped so yours can use it too.
 *
 * Guarantees:
 * 1. `useTestClock` replaces the library's clock: no real time passes for `sleep`, `timeout`,
 *    deadlines or `after` until `advance` moves it.
 * 2. `injectCancellation` cancels a scenario at every one of its checkpoints in turn and
 *    fails, naming the checkpoint, when the invariant breaks or anything leaks.
 * 3. `assertCheckpoints` fails when the code it runs never gives cancellation a place to land.
 */
export {
  assertCheckpoints,
  assertNoLeaks,
  type InjectionOptions,
  injectCancellation,
  type ResourceSnapshot,
  snapshotResources,
} from './inject.ts';
export { flush, TestClock, useTestClock } from './test-clock.ts';
