import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  all,
  concurrently,
  GroupClosedError,
  isCancellation,
  race,
  sleep,
  spawn,
  TaskGroup,
  withTaskGroup,
} from '../../src/core/index.ts';
import { rootScope } from '../../src/core/context.ts';
import { injectCancellation } from '../../src/testing/index.ts';
import { checkLeaks } from '../helpers/leaks.ts';

checkLeaks();

describe('task groups', { timeout: 10_000 }, () => {
  test('fail-fast: the first error cancels the siblings and is rethrown', async () => {
    const log: string[] = [];
    const e = await withTaskGroup(async (g) => {
      g.spawn(async () => {
        try {
          await sleep(10_000);
        } catch (err) {
          log.push(isCancellation(err) ? 'sibling cancelled' : 'other');
          throw err;
        }
      });
      g.spawn(async () => {
        await sleep(1);
        throw new Error('child failed');
      });
      await sleep(10_000);
      log.push('body unreached');
    }).catch((x) => x);
    assert.equal(e.message, 'child failed');
    assert.deepEqual(log, ['sibling cancelled']);
  });

  test('supervise: errors go to the handler and the group lives on', async () => {
    const errors: string[] = [];
    const results: number[] = [];
    await withTaskGroup(
      (g) => {
        g.spawn(async () => {
          throw new Error('one');
        });
        g.spawn(async () => {
          await sleep(5);
          results.push(2);
        });
      },
      { policy: 'supervise', onError: (e) => errors.push((e as Error).message) },
    );
    assert.deepEqual(errors, ['one']);
    assert.deepEqual(results, [2]);
  });

  test('close() refuses new children; wait() includes children spawned while waiting', async () => {
    const g = new TaskGroup({ policy: 'supervise' });
    let late = false;
    g.spawn(async () => {
      await sleep(2);
      g.spawn(async () => {
        await sleep(2);
        late = true;
      });
    });
    const waited = g.wait();
    await waited;
    assert.equal(late, true);
    g.close();
    assert.throws(() => g.spawn(() => 1), GroupClosedError);
    await g[Symbol.asyncDispose]();
  });

  test('the shutdown race cannot happen: a child spawned before close is always waited for', async () => {
    // Invariant: after close()+wait(), every child that spawn accepted has finished.
    for (let i = 0; i < 200; i++) {
      const g = new TaskGroup({ policy: 'supervise' });
      const started: number[] = [];
      const finished: number[] = [];
      const acceptor = spawn(async () => {
        for (let n = 0; n < 10_000; n++) {
          try {
            g.spawn(async () => {
              started.push(n);
              await sleep(n % 2);
              finished.push(n);
            });
          } catch {
            return;
          }
          await new Promise((r) => setImmediate(r));
        }
      });
      await sleep(i % 3);
      g.close();
      await g.wait();
      await acceptor.wait();
      assert.deepEqual(
        [...finished].sort((a, b) => a - b),
        [...started].sort((a, b) => a - b),
      );
      await g[Symbol.asyncDispose]();
    }
  });

  test('cancel() cancels every child and waits for their cleanup', async () => {
    const g = new TaskGroup({ policy: 'supervise' });
    let cleaned = 0;
    for (let i = 0; i < 5; i++) {
      g.spawn(async () => {
        try {
          await sleep(10_000);
        } finally {
          await sleep(0).catch(() => {});
          cleaned++;
        }
      });
    }
    await sleep(1);
    await g.cancel();
    assert.equal(cleaned, 5);
    assert.equal(g.size, 0);
    await g[Symbol.asyncDispose]();
  });

  test('a finished group leaves the cancellation tree; a closed group still passes cancellation to its body', async () => {
    await withTaskGroup((g) => {
      g.spawn(() => sleep(1));
    });
    const g = new TaskGroup();
    g.close();
    assert.equal(rootScope.firstChild, null, 'no scope left linked under the root');

    let bodyCancelled = false;
    const t = spawn(() =>
      withTaskGroup(async (group) => {
        group.close();
        try {
          await sleep(10_000);
        } catch (e) {
          bodyCancelled = isCancellation(e);
          throw e;
        }
      }),
    );
    await sleep(1);
    await t.cancel();
    assert.equal(bodyCancelled, true);
  });

  test('bad policy gets a clear error', () => {
    assert.throws(() => new TaskGroup({ policy: 'yolo' as never }), {
      code: 'ERR_INVALID_ARGUMENT',
    });
  });
});

describe('race, all, concurrently', { timeout: 10_000 }, () => {
  test('race returns the first outcome after the losers are cancelled and awaited', async () => {
    let loserCleaned = false;
    const v = await race([
      async () => {
        await sleep(2);
        return 'fast';
      },
      async () => {
        try {
          await sleep(10_000);
        } finally {
          loserCleaned = true;
        }
        return 'slow';
      },
    ]);
    assert.equal(v, 'fast');
    assert.equal(loserCleaned, true);
  });

  test('race: a first error wins too', async () => {
    await assert.rejects(
      race([
        async () => {
          throw new Error('first');
        },
        () => sleep(10_000).then(() => 'late'),
      ]),
      /first/,
    );
  });

  test('race conserves its losers at every checkpoint', async () => {
    // Invariant: when race is done, no contestant is still running.
    await injectCancellation({
      setup: () => ({ running: 0 }),
      scenario: (s) =>
        race(
          [1, 2, 3].map((n) => async () => {
            s.running++;
            try {
              await sleep(n);
              return n;
            } finally {
              s.running--;
            }
          }),
        ),
      invariant: (s) => assert.equal(s.running, 0),
    });
  });

  test('all returns values in order; concurrently runs a pair', async () => {
    const vs = await all([
      async () => {
        await sleep(3);
        return 'a';
      },
      async () => 'b',
    ]);
    assert.deepEqual(vs, ['a', 'b']);
    assert.deepEqual(
      await concurrently(
        async () => 1,
        async () => 'two',
      ),
      [1, 'two'],
    );
  });

  test('all: the first error cancels the rest and is rethrown', async () => {
    let cancelled = false;
    await assert.rejects(
      all([
        async () => {
          await sleep(1);
          throw new Error('bad');
        },
        async () => {
          try {
            await sleep(10_000);
          } catch (e) {
            cancelled = isCancellation(e);
            throw e;
          }
        },
      ]),
      /bad/,
    );
    assert.equal(cancelled, true);
  });
});

describe('review findings, pinned', { timeout: 10_000 }, () => {
  test('a child may spawn a sibling while withTaskGroup waits (a nursery closes when idle)', async () => {
    let siblingRan = false;
    await withTaskGroup((g) => {
      g.spawn(async () => {
        await sleep(1);
        g.spawn(async () => {
          siblingRan = true;
        });
      });
    });
    assert.equal(siblingRan, true);
  });

  test('a child failing with someone else’s TaskCancelledError is an ordinary failure', async () => {
    const victim = spawn(() => sleep(10_000));
    await victim.cancel();
    let siblingCancelled = false;
    const e = await all([
      () => victim.wait(),
      async () => {
        try {
          await sleep(10_000);
        } catch (err) {
          siblingCancelled = isCancellation(err);
          throw err;
        }
      },
    ]).catch((x) => x);
    assert.equal(e.code, 'ERR_TASK_CANCELLED');
    assert.equal(siblingCancelled, true);
  });

  test('a child’s cleanup error never hides the caller’s cancellation', async () => {
    const { onDiagnostic, timeout } = await import('../../src/core/index.ts');
    const seen: string[] = [];
    const restore = onDiagnostic((d) => seen.push(d.code));
    const child = async () => {
      try {
        await sleep(10_000);
      } finally {
        // biome-ignore lint/correctness/noUnsafeFinally: the point of the test
        throw new Error('cleanup failed');
      }
    };
    assert.equal(await timeout(5, () => all([child])), undefined);
    assert.equal(await timeout(5, () => race([child, child])), undefined);
    restore();
    assert.ok(
      seen.every((c) => c === 'QUIESCE_SUPPRESSED_ERROR'),
      seen.join(),
    );
    assert.ok(seen.length >= 2);
  });

  test('cancel() on an idle group leaves no scope linked', async () => {
    for (let i = 0; i < 100; i++) await new TaskGroup().cancel();
    assert.equal(rootScope.firstChild, null);
  });
});
