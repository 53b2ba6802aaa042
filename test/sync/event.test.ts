import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  cancelScope,
  isCancellation,
  mask,
  sleep,
  spawn,
  type Task,
  TaskCancelledError,
  uninterruptibleMask,
} from '../../src/core/index.ts';
import { after, Event, select } from '../../src/sync/index.ts';
import { assertCheckpoints, injectCancellation, useTestClock } from '../../src/testing/index.ts';
import { timerDelayUnderSwallowingLoop } from '../helpers/starvation.ts';
import { bounded, checkLeaks, turns } from './helpers.ts';

checkLeaks();

describe('Event: set once, wake every waiter', () => {
  test(
    'every waiter blocked before set gets the first value; later sets change nothing',
    bounded,
    async () => {
      const ev = new Event<number>();
      const waiters = Array.from({ length: 5 }, () => spawn(() => ev.wait()));
      await turns();
      assert.equal(ev.isSet, false);
      assert.equal(ev.value, undefined);
      assert.equal(ev.set(1), true);
      assert.equal(ev.set(2), false);
      assert.deepEqual(await Promise.all(waiters.map((t) => t.wait())), [1, 1, 1, 1, 1]);
      assert.equal(ev.value, 1);
    },
  );

  test('a wait after set returns at once with the value', bounded, async () => {
    const ev = new Event<string>();
    ev.set('done');
    assert.equal(await ev.wait(), 'done');
    assert.equal(await ev.wait(), 'done');
  });

  test('Event<void> is set without an argument', bounded, async () => {
    const ev = new Event();
    const t = spawn(() => ev.wait());
    await turns();
    ev.set();
    assert.equal(await t.wait(), undefined);
  });
});

describe('Event: wait is a checkpoint', () => {
  test('a wait on a set event is still a checkpoint', bounded, async () => {
    const ev = new Event<number>();
    ev.set(7);
    assert.ok((await assertCheckpoints(() => ev.wait())) >= 1);
  });

  test(
    'a pending cancellation raises before a set event is read; under mask it is not',
    bounded,
    async () => {
      const ev = new Event<number>();
      ev.set(3);
      const r = await cancelScope(async (s) => {
        s.cancel('now');
        return ev.wait();
      });
      assert.equal(r.cancelledCaught, true);
      const m = await cancelScope(async (s) => {
        s.cancel('now');
        return mask(() => ev.wait());
      });
      assert.equal(m.value, 3, 'a wait that does not block is not interruptible under mask');
    },
  );

  test(
    'a blocked wait is interruptible under mask, not under uninterruptibleMask',
    bounded,
    async () => {
      const ev = new Event<number>();
      const masked = spawn(() => mask(() => ev.wait()));
      await turns();
      await masked.cancel();
      assert.equal((await masked.result()).ok, false);
      const stubborn = spawn(() => uninterruptibleMask(() => ev.wait()));
      await turns();
      const cancelling = stubborn.cancel();
      await turns();
      ev.set(9);
      await cancelling;
      const r = await stubborn.result();
      assert.ok(r.ok && r.value === 9, 'the uninterruptible wait got the value');
    },
  );

  // Invariant: a cancelled waiter leaves nothing registered, and the others still get the value.
  test(
    'cancelling waiters at every checkpoint never loses the value for the rest',
    bounded,
    async () => {
      type S = { ev: Event<number>; got: number[]; late: Task<number> | null };
      await injectCancellation<S>({
        setup: () => ({ ev: new Event<number>(), got: [], late: null }),
        scenario: async (st) => {
          const ws = [0, 1, 2].map(() =>
            spawn(async () => {
              const v = await st.ev.wait();
              st.got.push(v);
            }),
          );
          await sleep(0);
          st.ev.set(42);
          for (const w of ws) await w.wait();
        },
        invariant: (st, outcome) => {
          assert.ok(st.got.every((v) => v === 42));
          if (outcome.ok) assert.equal(st.got.length, 3);
          else {
            const e = outcome.error;
            assert.ok(isCancellation(e) || e instanceof TaskCancelledError, String(e));
          }
        },
      });
    },
  );
});

describe('Event in select', () => {
  test('a loop swallowing the cancellation of wait or select on a set event does not starve a timer', async () => {
    const e = new Event();
    e.set();
    for (const op of [() => e.wait(), () => select(e.waitEvent())]) {
      const late = await timerDelayUnderSwallowingLoop(op);
      assert.ok(late < 500, `the 5 ms timer fired after ${late.toFixed(0)} ms`);
    }
  });

  test('waitEvent wins once set, and loses without a trace before', bounded, async () => {
    using clock = useTestClock();
    const ev = new Event<string>();
    const first = spawn(() => select(ev.waitEvent(), after(10)));
    await clock.advance(10);
    assert.equal((await first.wait()).index, 1);
    const second = spawn(() => select(ev.waitEvent(), after(10)));
    await turns();
    ev.set('go');
    const r = await second.wait();
    assert.ok(r.index === 0 && r.value === 'go');
    const third = await select(after(0), ev.waitEvent());
    assert.equal(third.index, 0, 'the first ready event in argument order wins');
  });
});
