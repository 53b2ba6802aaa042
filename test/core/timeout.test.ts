import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pendingDeadlines } from '../../src/core/clock.ts';
import {
  cancelScope,
  isCancellation,
  now,
  sleep,
  spawn,
  TimeoutError,
  timeout,
  timeoutAt,
  timeoutAtOrThrow,
  timeoutOrThrow,
} from '../../src/core/index.ts';
import { useTestClock } from '../../src/testing/index.ts';
import { checkLeaks } from '../helpers/leaks.ts';

checkLeaks();

describe('timeout: its five rules (docs/core.md)', { timeout: 30_000 }, () => {
  test('rule 1: ms < 0 never expires and returns the value', async () => {
    using clock = useTestClock();
    const p = timeout(-1, async () => {
      await sleep(10_000);
      return 'v';
    });
    await clock.advance(10_000);
    assert.equal(await p, 'v');
  });

  test('rule 2: ms === 0 returns undefined at once without running fn', async () => {
    let ran = false;
    assert.equal(
      await timeout(0, () => {
        ran = true;
      }),
      undefined,
    );
    assert.equal(ran, false);
    await assert.rejects(
      timeoutOrThrow(0, () => 1),
      TimeoutError,
    );
  });

  test('rule 3: fn runs in the current task', async () => {
    const t = spawn(async () => {
      const { currentTask } = await import('../../src/core/index.ts');
      const outer = currentTask();
      const inner = await timeout(100, () => currentTask());
      return outer === inner;
    });
    assert.equal(await t.wait(), true);
  });

  test('rule 4: on expiry fn is interrupted, its cleanup completes, and undefined is returned', async () => {
    using clock = useTestClock();
    const log: string[] = [];
    const p = timeout(100, async () => {
      try {
        await sleep(1000);
        log.push('not reached');
      } finally {
        log.push('cleanup');
      }
    }).then((v) => {
      log.push('returned');
      return v;
    });
    await clock.advance(100);
    assert.equal(await p, undefined);
    assert.deepEqual(log, ['cleanup', 'returned']);
  });

  test('rule 5: a value before the deadline is returned and no timer outlives the call', async () => {
    using clock = useTestClock();
    const p = timeout(100, async () => {
      await sleep(10);
      return 'v';
    });
    await clock.advance(10);
    assert.equal(await p, 'v');
    assert.equal(pendingDeadlines(), 0);
    assert.equal(clock.pendingTimers <= 1, true);
  });

  test('nested timeouts each catch only their own expiry', async () => {
    using clock = useTestClock();
    // Inner expires first: only the inner returns undefined.
    const a = timeout(100, async () => [await timeout(10, () => sleep(1000)), 'outer goes on']);
    await clock.advance(10);
    assert.deepEqual(await a, [undefined, 'outer goes on']);
    // Outer expires first: the inner must not catch it.
    let innerReturned = false;
    const b = timeout(10, async () => {
      await timeout(100, () => sleep(1000));
      innerReturned = true;
    });
    await clock.advance(10);
    assert.equal(await b, undefined);
    assert.equal(innerReturned, false);
  });

  test('an outer cancellation passes through a timeout', async () => {
    const t = spawn(() => timeout(10_000, () => sleep(10_000)));
    await sleep(1);
    await t.cancel();
    const r = await t.result();
    assert.equal(r.ok, false);
    assert.equal((r as { error: { code: string } }).error.code, 'ERR_TASK_CANCELLED');
  });

  test('the throwing twin raises TimeoutError, an ordinary error', async () => {
    using clock = useTestClock();
    const p = timeoutOrThrow(5, () => sleep(100)).catch((e) => e);
    await clock.advance(5);
    const e = await p;
    assert.ok(e instanceof TimeoutError);
    assert.equal(isCancellation(e), false);
  });

  test('absolute deadlines: timeoutAt and timeoutAtOrThrow', async () => {
    using clock = useTestClock(1000);
    assert.equal(await timeoutAt(now() - 1, () => 'never'), undefined);
    const p = timeoutAt(now() + 50, () => sleep(100));
    const q = timeoutAtOrThrow(now() + 50, () => sleep(100)).catch((e) => e);
    const r = timeoutAt(now() + 500, async () => 'in time');
    await clock.advance(50);
    assert.equal(await p, undefined);
    assert.ok((await q) instanceof TimeoutError);
    assert.equal(await r, 'in time');
  });

  test('bad input gets a clear error', async () => {
    await assert.rejects(
      timeout(Number.NaN, () => 1),
      { code: 'ERR_INVALID_ARGUMENT' },
    );
    await assert.rejects(
      timeout('5' as never, () => 1),
      { code: 'ERR_INVALID_ARGUMENT' },
    );
  });

  test('a value and an expiry racing: exactly one wins, 1,000 times', async () => {
    // Invariant: the call returns the value iff fn completed, undefined iff fn was interrupted.
    let values = 0;
    let expiries = 0;
    for (let i = 0; i < 1000; i++) {
      let completed = false;
      let interrupted = false;
      const r = await timeout(1, async () => {
        try {
          const spin = Date.now() + (i % 3);
          while (Date.now() < spin) await Promise.resolve();
          await sleep(i % 2);
          completed = true;
          return 'v';
        } catch (e) {
          interrupted = isCancellation(e);
          throw e;
        }
      });
      if (r === 'v') {
        values++;
        assert.equal(completed && !interrupted, true);
      } else {
        expiries++;
        assert.equal(r, undefined);
        assert.equal(interrupted && !completed, true);
      }
      assert.equal(pendingDeadlines(), 0);
    }
    assert.equal(values + expiries, 1000);
  });
});

describe('cancel scopes', { timeout: 10_000 }, () => {
  test('a scope cancelled through its handle ends its body and reports cancelledCaught', async () => {
    const r = await cancelScope(async (scope) => {
      queueMicrotask(() => scope.cancel('enough'));
      await sleep(10_000);
      return 'unreached';
    });
    assert.equal(r.cancelledCaught, true);
    assert.equal(r.value, undefined);
    assert.equal(r.scope.cancelCalled, true);
  });

  test('a shielded scope is not reached by an outer cancellation but keeps its own deadline', async () => {
    let shieldedFinished = false;
    const t = spawn(async () => {
      await cancelScope(
        async () => {
          await sleep(20);
          shieldedFinished = true;
        },
        { shield: true },
      );
      await sleep(10_000);
    });
    await sleep(1);
    await t.cancel();
    assert.equal(shieldedFinished, true);
    const own = await cancelScope(() => sleep(10_000), { shield: true, timeoutMs: 5 });
    assert.equal(own.cancelledCaught, true);
  });
});
