/** The public surface of each subpath is what we meant (trio's test_exports): adding or
 * removing an export is a decision, made here on purpose. */
import assert from 'node:assert/strict';
import { test } from 'node:test';

const surfaces: Record<string, string[]> = {
  core: [
    'ArgumentError',
    'Cancelled',
    'GroupClosedError',
    'QuiesceError',
    'Task',
    'TaskCancelledError',
    'TaskFinishedError',
    'TaskGroup',
    'TimeoutError',
    'adopt',
    'all',
    'andFinally',
    'attempt',
    'boundedCleanup',
    'bracket',
    'cancelScope',
    'checkpoint',
    'concurrently',
    'currentSignal',
    'currentTask',
    'dumpTasks',
    'forkFinally',
    'getMaskingState',
    'isCancellation',
    'mask',
    'now',
    'onDiagnostic',
    'onException',
    'race',
    'rethrowCancellation',
    'run',
    'sleep',
    'sleepUntil',
    'spawn',
    'timeout',
    'timeoutAt',
    'timeoutAtOrThrow',
    'timeoutOrThrow',
    'uninterruptibleMask',
    'withSignal',
    'withTaskGroup',
  ],
  testing: [
    'TestClock',
    'assertCheckpoints',
    'assertNoLeaks',
    'flush',
    'injectCancellation',
    'snapshotResources',
    'useTestClock',
  ],
  sync: [
    'Chan',
    'ChanClosedError',
    'MVar',
    'Queue',
    'QueueClosedError',
    'Semaphore',
    'aborted',
    'after',
    'deadlineAt',
    'select',
    'taskDone',
  ],
  http: [],
};

for (const [part, names] of Object.entries(surfaces)) {
  test(`quiesce${part === 'core' ? '' : `/${part}`} exports exactly its documented names`, async () => {
    const m = await import(`../../src/${part}/index.ts`);
    assert.deepEqual(Object.keys(m).sort(), [...names].sort());
  });
}
