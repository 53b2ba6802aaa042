/** Guarantees that an adversarial review found broken once, pinned so they stay kept. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type Clock, installClock, systemClock } from '../../src/core/clock.ts';
import { block, current, type Waiter } from '../../src/core/context.ts';
import {
  checkpoint,
  mask,
  sleep,
  spawn,
  type Task,
  timeout,
  uninterruptibleMask,
  withTaskGroup,
} from '../../src/core/index.ts';
import { assertCheckpoints } from '../../src/testing/index.ts';
import { checkLeaks } from '../helpers/leaks.ts';

checkLeaks();

describe('kept guarantees', { timeout: 10_000 }, () => {
  test("a blocked waiter is in its scope's waiter list exactly while it waits", async () => {
    // Invariant: after a commit, a fail or an interruption the scope lists no waiter (O(1)
    // leave); a waiter that stayed would be held, and interrupted again, until the scope closes.
    await spawn(async () => {
      const scope = current().scope;
      let w: Waiter<number> | null = null;
      const inList = () => {
        let n = 0;
        for (let x = scope.firstWaiter; x; x = x.next) n++;
        return n;
      };
      const committed = block<number>((x) => {
        w = x;
      });
      assert.equal(inList(), 1);
      w!.commit(1);
      assert.equal(await committed, 1);
      assert.equal(inList(), 0);
      const failed = block<number>((x) => {
        w = x;
      });
      assert.equal(inList(), 1);
      w!.fail(new Error('broken'));
      await assert.rejects(failed, /broken/);
      assert.equal(inList(), 0);
      let inner: typeof scope | null = null;
      const waitersOf = (sc: typeof scope) => {
        let n = 0;
        for (let x = sc.firstWaiter; x; x = x.next) n++;
        return n;
      };
      await timeout(5, () => {
        inner = current().scope;
        const p = block<number>(() => {});
        assert.equal(waitersOf(inner), 1);
        return p;
      });
      assert.equal(waitersOf(inner!), 0); // interrupted by the timeout's expiry
    }).wait();
  });

  test('await using in a cancelled scope waits for the child, and the timeout catches its own expiry', async () => {
    const log: string[] = [];
    const v = await timeout(5, async () => {
      await using _child = spawn(async () => {
        try {
          await sleep(10_000);
        } finally {
          await uninterruptibleMask(() => sleep(5));
          log.push('child finalizer done');
        }
      });
      await sleep(10_000);
    });
    log.push('timeout returned');
    assert.equal(v, undefined);
    assert.deepEqual(log, ['child finalizer done', 'timeout returned']);
  });

  test('a task started inside a timeout that has returned is still cancelled with its parent', async () => {
    let inner: Task<void> | undefined;
    const parent = spawn(async () => {
      await withTaskGroup(async (g) => {
        await timeout(1000, async () => {
          inner = spawn(() => sleep(10_000));
        });
        g.spawn(() => sleep(10_000));
      });
    });
    await sleep(2);
    await parent.cancel();
    assert.equal(inner?.done, true);
  });

  test('spawning from a finished task’s context is refused with a clear error', async () => {
    const refused = await new Promise<unknown>((resolve) => {
      spawn(() => {
        // The timer callback runs in the task's context, after the task has finished.
        setTimeout(() => {
          try {
            resolve(spawn(() => 1));
          } catch (e) {
            resolve(e);
          }
        }, 5);
      });
    });
    assert.equal((refused as { code?: string }).code, 'ERR_TASK_FINISHED');
  });

  test('a deadline past the host timer range arms the shared timer once, without spinning', async () => {
    let armed = 0;
    const counting: Clock = {
      ...systemClock,
      setTimer: (fn, ms) => {
        armed++;
        return systemClock.setTimer(fn, ms);
      },
    };
    const prev = installClock(counting);
    try {
      const t = spawn(() => sleep(30 * 24 * 3600 * 1000));
      await new Promise((r) => setTimeout(r, 50));
      await t.cancel();
    } finally {
      installClock(prev);
    }
    // Once for the sleep, once more for the cancellation's 5 s cleanup window (an earlier
    // deadline); a spinning timer would arm thousands of times.
    assert.ok(armed <= 2, `armed ${armed} times`);
  });

  test('assertCheckpoints does not count checkpoints a cancellation cannot reach', async () => {
    await assert.rejects(assertCheckpoints(() => uninterruptibleMask(() => checkpoint())));
    await assert.rejects(assertCheckpoints(() => mask(() => checkpoint())));
    assert.equal(await assertCheckpoints(() => mask(() => sleep(1))), 1);
  });

  test('a task whose earlier timeout expired is not reported as swallowing a later cancellation', async () => {
    const { onDiagnostic } = await import('../../src/core/index.ts');
    const seen: string[] = [];
    const restore = onDiagnostic((d) => seen.push(d.code));
    const t = spawn(async () => {
      await timeout(1, () => sleep(1000));
      // No checkpoint after this: the later cancellation is never raised, so nothing is swallowed.
      await new Promise((r) => setTimeout(r, 20));
      return 'done';
    });
    await sleep(5);
    t.scope.cancel({ kind: 'cancel', at: 0 });
    assert.equal(await t.wait(), 'done');
    restore();
    assert.deepEqual(seen, []);
  });
});
