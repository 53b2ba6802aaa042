import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  currentTask,
  isCancellation,
  sleep,
  spawn,
  type Task,
  TaskCancelledError,
} from '../../src/core/index.ts';
import { checkLeaks } from '../helpers/leaks.ts';

checkLeaks();

describe('tasks', { timeout: 10_000 }, () => {
  test('wait returns the value and rethrows the error', async () => {
    assert.equal(await spawn(async () => 42).wait(), 42);
    const boom = new Error('boom');
    await assert.rejects(
      spawn(async () => {
        throw boom;
      }).wait(),
      boom,
    );
  });

  test('result never throws the task error', async () => {
    const r = await spawn(async () => {
      throw new Error('x');
    }).result();
    assert.equal(r.ok, false);
    assert.equal((r as { error: Error }).error.message, 'x');
  });

  test('cancel returns only after the finalizers have run', async () => {
    const log: string[] = [];
    const t = spawn(async () => {
      try {
        await sleep(10_000);
      } finally {
        await Promise.resolve();
        log.push('finalizer');
      }
    });
    await sleep(1);
    await t.cancel();
    assert.deepEqual(log, ['finalizer']);
    assert.equal(t.done, true);
  });

  test('cancelling a finished task is a no-op; cancel is idempotent; many cancellers wait', async () => {
    const done = spawn(async () => 1);
    await done.wait();
    await done.cancel();
    assert.equal(await done.wait(), 1);

    let finalizers = 0;
    const t = spawn(async () => {
      try {
        await sleep(10_000);
      } finally {
        finalizers++;
      }
    });
    await sleep(1);
    await Promise.all([t.cancel('a'), t.cancel('b'), t.cancel('c')]);
    assert.equal(finalizers, 1);
  });

  test('a waiter on a cancelled task gets an ordinary TaskCancelledError, not a cancellation', async () => {
    const t = spawn(() => sleep(10_000));
    await sleep(1);
    await t.cancel('stop');
    const err = await t.wait().catch((e) => e);
    assert.ok(err instanceof TaskCancelledError);
    assert.equal(isCancellation(err), false);
    assert.equal(err.code, 'ERR_TASK_CANCELLED');
    assert.equal(err.cancelCause.reason, 'stop');
  });

  test('no task outlives its parent: children are cancelled and awaited before the parent ends', async () => {
    const log: string[] = [];
    let child: Task<void> | undefined;
    const parent = spawn(async () => {
      child = spawn(async () => {
        try {
          await sleep(10_000);
        } finally {
          log.push('child cleanup');
        }
      });
      await sleep(1);
      log.push('parent body done');
      return 'p';
    });
    assert.equal(await parent.wait(), 'p');
    log.push('parent delivered');
    assert.deepEqual(log, ['parent body done', 'child cleanup', 'parent delivered']);
    assert.equal(child!.done, true);
  });

  test('a child is registered with its parent before spawn returns', async () => {
    const parent = spawn(async () => {
      const c = spawn(() => sleep(10_000));
      // Nothing awaited between spawn and the check: registration is synchronous.
      assert.equal(currentTask()?.children.includes(c as Task<unknown>), true);
    });
    await parent.wait();
  });

  test('cancelling a parent cancels its children', async () => {
    let childCancelled = false;
    const parent = spawn(async () => {
      spawn(async () => {
        try {
          await sleep(10_000);
        } catch (e) {
          childCancelled = isCancellation(e);
          throw e;
        }
      });
      await sleep(10_000);
    });
    await sleep(1);
    await parent.cancel();
    assert.equal(childCancelled, true);
  });

  test('a forced cancellation is level-triggered: a swallowed one is raised again at the next checkpoint', async () => {
    let raised = 0;
    const t = spawn(async () => {
      for (let i = 0; i < 3; i++) {
        try {
          await sleep(10_000);
        } catch (e) {
          if (isCancellation(e)) raised++;
        }
      }
      return 'finished';
    });
    await sleep(1);
    const { onDiagnostic } = await import('../../src/core/index.ts');
    const seen: string[] = [];
    const restore = onDiagnostic((d) => seen.push(d.code));
    await t.cancel('stop', { force: true });
    restore();
    assert.equal(raised, 3);
    assert.deepEqual(seen, ['QUIESCE_SWALLOWED_CANCELLATION']);
  });

  test('spawn rejects a non-function with a clear error', () => {
    assert.throws(() => spawn(42 as never), { code: 'ERR_INVALID_ARGUMENT' });
  });

  test('await using cancels the task at scope exit', async () => {
    let cleaned = false;
    {
      await using t = spawn(async () => {
        try {
          await sleep(10_000);
        } finally {
          cleaned = true;
        }
      });
      await sleep(1);
      assert.equal(t.done, false);
    }
    assert.equal(cleaned, true);
  });
});
