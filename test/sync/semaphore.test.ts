import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ArgumentError,
  cancelScope,
  checkpoint,
  isCancellation,
  mask,
  sleep,
  spawn,
  type Task,
} from '../../src/core/index.ts';
import { after, Semaphore, select } from '../../src/sync/index.ts';
import { injectCancellation, useTestClock } from '../../src/testing/index.ts';
import { bounded, checkLeaks, turns } from './helpers.ts';

checkLeaks();

describe('Semaphore basics', () => {
  test('rejects permit counts that are not integers in range', bounded, () => {
    assert.throws(() => new Semaphore(-1), ArgumentError);
    assert.throws(() => new Semaphore(1.5), ArgumentError);
    const s = new Semaphore(1);
    assert.throws(() => s.release(0), ArgumentError);
    assert.throws(() => s.tryAcquire(-2), ArgumentError);
    assert.throws(() => s.acquireEvent(0.5), ArgumentError);
  });

  test('acquire takes permits, release returns them, tryAcquire never waits', bounded, async () => {
    const s = new Semaphore(2);
    await s.acquire();
    assert.equal(s.tryAcquire(), true);
    assert.equal(s.tryAcquire(), false);
    assert.equal(s.available, 0);
    s.release(2);
    assert.equal(s.available, 2);
    await s.acquire(2);
    assert.equal(s.available, 0);
    s.release(2);
  });

  test('acquirers are served in FIFO order', bounded, async () => {
    const s = new Semaphore(0);
    const order: number[] = [];
    const ts = [0, 1, 2, 3].map((i) =>
      spawn(async () => {
        await s.acquire();
        order.push(i);
      }),
    );
    await turns();
    for (let i = 0; i < 4; i++) s.release();
    for (const t of ts) await t.wait();
    assert.deepEqual(order, [0, 1, 2, 3]);
  });

  test(
    'a large request at the head is not overtaken, and when it gives up the next is served',
    bounded,
    async () => {
      const s = new Semaphore(1);
      const big = spawn(() => s.acquire(3));
      await turns();
      const small = spawn(() => s.acquire(1));
      await turns();
      assert.equal(small.done, false, 'fair: the small request waits behind the big one');
      assert.equal(s.tryAcquire(), false, 'tryAcquire does not jump the line either');
      await big.cancel();
      await small.wait();
      assert.equal(s.available, 0);
      s.release();
    },
  );

  test('withPermit bounds concurrency and returns the value', bounded, async () => {
    using clock = useTestClock();
    const s = new Semaphore(3);
    let inside = 0;
    let most = 0;
    const ts = Array.from({ length: 12 }, (_, i) =>
      spawn(() =>
        s.withPermit(async () => {
          inside++;
          most = Math.max(most, inside);
          await sleep(1 + (i % 3));
          inside--;
          return i;
        }),
      ),
    );
    await clock.advance(20);
    for (let i = 0; i < ts.length; i++) assert.equal(await ts[i].wait(), i);
    assert.equal(most, 3);
    assert.equal(s.available, 3);
  });

  test('withPermit releases when its function throws', bounded, async () => {
    const s = new Semaphore(1);
    await assert.rejects(
      s.withPermit(async () => {
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal(s.available, 1);
  });
});

describe('Semaphore under cancellation', () => {
  test('an acquirer cancelled while waiting holds nothing', bounded, async () => {
    const s = new Semaphore(0);
    const t = spawn(() => s.acquire());
    await turns();
    await t.cancel();
    s.release();
    assert.equal(s.available, 1);
    assert.equal(s.waiting, 0);
  });

  test(
    'an acquirer granted its permit just before a cancellation holds it; withPermit releases it without running the body',
    bounded,
    async () => {
      const s = new Semaphore(0);
      let ran = false;
      const t = spawn(() =>
        s.withPermit(async () => {
          ran = true;
          await checkpoint();
        }),
      );
      await turns();
      s.release(); // grants the permit to the waiting withPermit...
      await t.cancel(); // ...which is cancelled before it runs again
      assert.equal(s.available, 1, 'the permit came back');
      // The acquire completed; entering the body (restore) delivered the cancellation.
      assert.equal(ran, false, 'the body never started in the cancelled scope');
    },
  );

  test('under mask, an acquire that need not wait does not raise', bounded, async () => {
    const s = new Semaphore(1);
    await cancelScope(async (scope) => {
      scope.cancel();
      await mask(async () => {
        await s.acquire();
        await assert.rejects(s.acquire(), isCancellation, 'one that must wait raises');
      });
    });
    assert.equal(s.available, 0);
    s.release();
  });
});

describe('Semaphore: cancellation injected at every checkpoint', () => {
  // Invariant: permits are conserved — all back once everybody is done, and never over-granted.
  test(
    'withPermit, acquire/release, tryAcquire and acquireEvent never leak or over-grant a permit',
    bounded,
    async () => {
      type S = { s: Semaphore; inside: number; most: number };
      const { checkpoints } = await injectCancellation<S>({
        setup: () => ({ s: new Semaphore(2), inside: 0, most: 0 }),
        scenario: async (st) => {
          const body = async () => {
            st.inside++;
            st.most = Math.max(st.most, st.inside);
            try {
              await checkpoint();
              await sleep(0);
            } finally {
              st.inside--;
            }
          };
          const ts: Task<unknown>[] = [];
          for (let i = 0; i < 3; i++) ts.push(spawn(() => st.s.withPermit(body)));
          ts.push(
            spawn(async () => {
              await st.s.acquire();
              try {
                await body();
              } finally {
                st.s.release();
              }
            }),
            spawn(async () => {
              await checkpoint();
              if (st.s.tryAcquire()) {
                try {
                  await body();
                } finally {
                  st.s.release();
                }
              }
            }),
            spawn(async () => {
              const r = await select(st.s.acquireEvent(), after(1000));
              if (r.index === 0) {
                try {
                  await body();
                } finally {
                  st.s.release();
                }
              }
            }),
          );
          for (const t of ts) await t.wait();
        },
        invariant: ({ s, inside, most }) => {
          assert.equal(s.available, 2, 'every permit is back');
          assert.equal(s.waiting, 0);
          assert.equal(inside, 0);
          assert.ok(most <= 2, `${most} holders at once`);
        },
      });
      assert.ok(checkpoints >= 10);
    },
  );
});
