/**
 * The guarantees of the core, one principle each, checked with cancellation injected at every
 * checkpoint of a scenario that uses every combinator (quiesce/testing's harness also checks
 * that no task, deadline, timer or handle leaked after each run). Each test is bounded in time,
 * so a hang fails with the principle's name.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  adopt,
  all,
  andFinally,
  boundedCleanup,
  bracket,
  cancelScope,
  checkpoint,
  forkFinally,
  getMaskingState,
  isCancellation,
  mask,
  onException,
  race,
  sleep,
  spawn,
  type Task,
  TaskCancelledError,
  timeout,
  uninterruptibleMask,
  withSignal,
  withTaskGroup,
} from '../../src/core/index.ts';
import { assertCheckpoints, injectCancellation } from '../../src/testing/index.ts';

const bounded = { timeout: 30_000 };

describe('Principle 1: no task outlives its parent', bounded, () => {
  test('whatever checkpoint the parent is cancelled at, every descendant is done when it is', async () => {
    // Invariant: when the root scenario task is done, every task it ever started is done.
    await injectCancellation({
      setup: () => ({ tasks: [] as Task<unknown>[] }),
      scenario: async (s) => {
        const child = spawn(async () => {
          s.tasks.push(spawn(() => sleep(50)));
          await sleep(5);
        });
        s.tasks.push(child);
        await withTaskGroup((g) => {
          s.tasks.push(g.spawn(() => sleep(3)));
          s.tasks.push(g.spawn(() => timeout(2, () => sleep(10))));
        });
        await all([() => sleep(1), () => checkpoint()]);
        await child.wait();
      },
      invariant: (s) => {
        for (const t of s.tasks) assert.equal(t.done, true, `${t.name} outlived its parent`);
      },
    });
  });
});

describe('Principle 2: if acquire returned, release runs exactly once', bounded, () => {
  test('bracket, andFinally, onException and forkFinally, cancelled at every checkpoint', async () => {
    // Invariant: opened === closed for every resource, and nothing is closed twice.
    await injectCancellation({
      setup: () => ({ opened: 0, closed: 0, finalized: 0, handled: 0, errors: 0 }),
      scenario: async (s) => {
        await bracket(
          async () => {
            await sleep(1);
            s.opened++;
          },
          () => {
            s.closed++;
          },
          () => sleep(2),
        );
        await andFinally(
          () => sleep(1),
          () => {
            s.finalized++;
          },
        );
        await onException(
          () => sleep(1),
          () => {
            s.handled++;
          },
        ).catch((e) => {
          s.errors++;
          throw e;
        });
        const t = forkFinally(
          () => sleep(1),
          () => {
            s.finalized++;
          },
        );
        await t.result();
      },
      invariant: (s, outcome, k) => {
        assert.equal(s.closed, s.opened);
        assert.ok(s.opened <= 1 && s.closed <= 1);
        assert.ok(s.handled <= 1 && s.handled === s.errors);
        if (k === 0) assert.equal(outcome.ok, true);
      },
    });
  });
});

describe('Principle 3: a scope catches only its own cancellation', bounded, () => {
  test('timeouts, cancel scopes and withSignal never swallow the scenario’s cancellation', async () => {
    // Invariant: a cancelled scenario ends cancelled (TaskCancelledError), never "normally".
    await injectCancellation({
      setup: () => ({ completed: false }),
      scenario: async (s) => {
        await timeout(1000, () => sleep(1));
        await timeout(1, () => sleep(1000));
        await cancelScope(() => sleep(2), { timeoutMs: 1000 });
        await cancelScope(() => sleep(1000), { timeoutMs: 1 });
        await withSignal(new AbortController().signal, () => sleep(1));
        await race([() => sleep(1), () => sleep(2)]);
        await adopt(Promise.resolve(1));
        s.completed = true;
      },
      invariant: (s, outcome, k) => {
        if (k === 0) {
          assert.equal(outcome.ok, true);
        } else {
          assert.equal(outcome.ok, false, `cancelled at ${k}, the scenario finished normally`);
          if (!outcome.ok) {
            assert.ok(outcome.error instanceof TaskCancelledError, `${k}: ${outcome.error}`);
          }
          assert.equal(s.completed, false);
        }
      },
    });
  });
});

describe('Principle 4: masks defer delivery to blocking operations only', bounded, () => {
  test('a masked region runs its non-blocking steps to the end, at every checkpoint', async () => {
    // Invariant: the masked update is all-or-nothing: steps is 0 or 3, never 1 or 2.
    await injectCancellation({
      setup: () => ({ steps: 0 }),
      scenario: async (s) => {
        await sleep(1);
        await mask(async () => {
          s.steps++;
          await checkpoint();
          s.steps++;
          await checkpoint();
          s.steps++;
        });
        await uninterruptibleMask(async () => {
          await sleep(1);
          assert.equal(getMaskingState(), 'maskedUninterruptible');
        });
      },
      invariant: (s) => assert.ok(s.steps === 0 || s.steps === 3, `steps = ${s.steps}`),
    });
  });
});

describe('Principle 5: cleanup that must finish does, within its budget', bounded, () => {
  test('boundedCleanup completes in a cancelled task, at every checkpoint', async () => {
    // Invariant: the cleanup ran to its end exactly once.
    await injectCancellation({
      setup: () => ({ flushed: 0 }),
      scenario: async (s) => {
        try {
          await sleep(2);
          await checkpoint();
        } finally {
          await boundedCleanup(1000, async () => {
            await sleep(1);
            s.flushed++;
          });
        }
      },
      invariant: (s) => assert.equal(s.flushed, 1),
    });
  });
});

describe(
  'Principle 5b: a delivered cancellation leaves cleanup a window to block in',
  bounded,
  () => {
    const scenario = async (s: { bodyCancelled: boolean; flushed: number }) => {
      try {
        await sleep(2);
        await checkpoint();
        await all([() => sleep(1), () => checkpoint()]);
      } catch (e) {
        s.bodyCancelled = isCancellation(e);
        throw e;
      } finally {
        // Plain cleanup that blocks: no boundedCleanup, no mask.
        await sleep(1);
        await timeout(50, () => sleep(1));
        await all([() => sleep(1), () => checkpoint()]);
        s.flushed++;
      }
    };
    const setup = () => ({ bodyCancelled: false, flushed: 0 });

    test('cancelled at any checkpoint of the body, a cleanup that sleeps, times out and joins runs to its end', async () => {
      // Invariant: cleanup ran at most once, and to its end whenever the body was cancelled.
      await injectCancellation({
        setup,
        scenario,
        invariant: (s, _outcome, k) => {
          assert.ok(s.flushed <= 1);
          if (k === 0 || s.bodyCancelled) assert.equal(s.flushed, 1, 'the cleanup was cut');
        },
      });
    });

    test('forced at any checkpoint, the same cleanup is cut at its first checkpoint', async () => {
      // Invariant: a forced cancellation leaves no window: a cancelled body's cleanup never ends.
      await injectCancellation({
        setup,
        scenario,
        force: true,
        invariant: (s, _outcome, k) => {
          if (k === 0) assert.equal(s.flushed, 1);
          else assert.equal(s.flushed, 0);
        },
      });
    });
  },
);

describe('Principle 6: every blocking operation is a checkpoint', bounded, () => {
  test('sleep, wait, result, cancel, adopt and checkpoint give cancellation a place to land', async () => {
    assert.ok((await assertCheckpoints(() => sleep(1))) >= 1);
    assert.ok((await assertCheckpoints(() => checkpoint())) >= 1);
    assert.ok((await assertCheckpoints(() => spawn(() => 1).wait())) >= 1);
    assert.ok((await assertCheckpoints(() => spawn(() => 1).result())) >= 1);
    assert.ok((await assertCheckpoints(() => spawn(() => sleep(1)).cancel())) >= 1);
    assert.ok((await assertCheckpoints(() => adopt(Promise.resolve(1)))) >= 1);
    await assert.rejects(
      assertCheckpoints(() => 1 + 1),
      /expected at least one checkpoint/,
    );
  });

  test('a cancellation raised at a checkpoint is a Cancelled, and only that', async () => {
    const t = spawn(async () => {
      try {
        await sleep(10_000);
      } catch (e) {
        return isCancellation(e);
      }
    });
    await sleep(1);
    t.scope.cancel({ kind: 'cancel', at: 0 });
    assert.equal(await t.wait(), true);
  });
});
