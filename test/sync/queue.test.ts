import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ArgumentError,
  cancelScope,
  checkpoint,
  isCancellation,
  mask,
  spawn,
  type Task,
} from '../../src/core/index.ts';
import { Queue, QueueClosedError } from '../../src/sync/index.ts';
import { injectCancellation } from '../../src/testing/index.ts';
import { timerDelayUnderSwallowingLoop } from '../helpers/starvation.ts';
import { bounded, checkLeaks, turns } from './helpers.ts';

checkLeaks();

function drain<T>(q: Queue<T>): T[] {
  const out: T[] = [];
  for (let r = q.tryGet(); r; r = q.tryGet()) out.push(r.value);
  return out;
}

describe('Queue basics', () => {
  test('rejects a capacity that is not an integer >= 0', bounded, () => {
    for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '3']) {
      assert.throws(() => new Queue(bad as number), ArgumentError);
    }
  });

  test(
    'put blocks while full (backpressure) and resumes when a get frees a slot',
    bounded,
    async () => {
      const q = new Queue<number>(2);
      await q.put(1);
      await q.put(2);
      assert.equal(q.tryPut(3), false);
      const p = spawn(() => q.put(3));
      await turns();
      assert.equal(p.done, false, 'the third put waits');
      assert.equal(q.size, 2);
      assert.equal(await q.get(), 1);
      await p.wait();
      assert.deepEqual(drain(q), [2, 3]);
    },
  );

  test('never buffers more than its capacity', bounded, async () => {
    const q = new Queue<number>(3);
    let maxSize = 0;
    const producer = spawn(async () => {
      for (let i = 0; i < 100; i++) {
        await q.put(i);
        maxSize = Math.max(maxSize, q.size);
      }
      q.close();
    });
    const got: number[] = [];
    for await (const v of q) {
      got.push(v);
      if (v % 10 === 0) await turns(3);
    }
    await producer.wait();
    assert.equal(got.length, 100);
    assert.ok(maxSize <= 3, `buffered ${maxSize}`);
  });

  test('blocked getters and blocked putters are each served in FIFO order', bounded, async () => {
    const q = new Queue<string>(1);
    const got: string[] = [];
    const gs = [0, 1, 2].map((i) =>
      spawn(async () => {
        got.push(`${i}:${await q.get()}`);
      }),
    );
    await turns();
    await q.put('a');
    await q.put('b');
    await q.put('c');
    for (const g of gs) await g.wait();
    assert.deepEqual(got, ['0:a', '1:b', '2:c']);

    await q.put('x');
    const ps = ['p1', 'p2', 'p3'].map((v) => spawn(() => q.put(v)));
    await turns();
    assert.deepEqual(
      [await q.get(), await q.get(), await q.get(), await q.get()],
      ['x', 'p1', 'p2', 'p3'],
    );
    for (const p of ps) await p.wait();
  });

  test(
    'capacity 0 is a rendezvous: a put completes only when a get takes its item',
    bounded,
    async () => {
      const q = new Queue<number>(0);
      assert.equal(q.tryPut(1), false, 'no getter waiting: no room');
      const p = spawn(() => q.put(1));
      await turns();
      assert.equal(p.done, false);
      assert.equal(q.size, 0);
      assert.equal(await q.get(), 1);
      await p.wait();
      const g = spawn(() => q.get());
      await turns();
      assert.equal(q.tryPut(2), true, 'a waiting getter takes it');
      assert.equal(await g.wait(), 2);
    },
  );
});

describe('Queue close', () => {
  test('a loop swallowing the cancellation of put or get on a closed queue does not starve a timer', async () => {
    const q = new Queue<number>(1);
    q.close();
    for (const op of [() => q.put(1), () => q.get()]) {
      const late = await timerDelayUnderSwallowingLoop(op);
      assert.ok(late < 500, `the 5 ms timer fired after ${late.toFixed(0)} ms`);
    }
  });

  test(
    'getters drain the buffer, then get rejects with QueueClosedError and for await ends',
    bounded,
    async () => {
      const q = new Queue<number>(4);
      await q.put(1);
      await q.put(2);
      q.close();
      assert.equal(await q.get(), 1);
      const rest: number[] = [];
      for await (const v of q) rest.push(v);
      assert.deepEqual(rest, [2]);
      await assert.rejects(q.get(), (e: unknown) => {
        assert.ok(e instanceof QueueClosedError);
        assert.equal(e.code, 'ERR_QUEUE_CLOSED');
        return true;
      });
      assert.deepEqual(await q.next(), { done: true, value: undefined });
    },
  );

  test(
    'put to a closed queue rejects; a put blocked at close rejects and adds nothing',
    bounded,
    async () => {
      const q = new Queue<number>(1);
      await q.put(1);
      const blocked = spawn(() => q.put(2));
      const getter = new Queue<number>(1);
      const g = spawn(() => getter.get());
      await turns();
      q.close();
      getter.close();
      await assert.rejects(blocked.wait(), QueueClosedError);
      await assert.rejects(q.put(3), QueueClosedError);
      assert.throws(() => q.tryPut(3), QueueClosedError);
      await assert.rejects(g.wait(), QueueClosedError);
      assert.deepEqual(drain(q), [1]);
    },
  );
});

describe('Queue under cancellation', () => {
  test(
    'a put cancelled while blocked adds nothing; a get cancelled while blocked takes nothing',
    bounded,
    async () => {
      const q = new Queue<number>(1);
      await q.put(1);
      const p = spawn(() => q.put(2));
      await turns();
      await p.cancel();
      assert.deepEqual(drain(q), [1]);

      const g1 = spawn(() => q.get());
      const g2 = spawn(() => q.get());
      await turns();
      await g1.cancel();
      await q.put(5);
      assert.equal(await g2.wait(), 5);
    },
  );

  test(
    'a put whose slot was granted just before its cancellation counts as done',
    bounded,
    async () => {
      const q = new Queue<number>(1);
      await q.put(1);
      let returned = false;
      const p = spawn(async () => {
        await q.put(2);
        returned = true;
        await checkpoint();
      });
      await turns();
      assert.deepEqual(q.tryGet(), { value: 1 }); // grants the slot to the blocked put...
      await p.cancel(); // ...which is then cancelled before it runs again
      assert.equal(returned, true);
      assert.deepEqual(drain(q), [2]);
    },
  );

  test(
    'under mask, a put with room and a get with an item do not raise a pending cancellation',
    bounded,
    async () => {
      const q = new Queue<number>(1);
      await cancelScope(async (scope) => {
        scope.cancel();
        await assert.rejects(q.put(1), isCancellation);
        await mask(async () => {
          await q.put(1);
          assert.equal(await q.get(), 1);
          await assert.rejects(q.get(), isCancellation, 'a get that would block raises');
        });
      });
      assert.equal(q.size, 0);
    },
  );
});

describe('Queue: cancellation injected at every checkpoint', () => {
  // Invariant: the items got, then those left in the queue, are exactly the items whose put returned.
  for (const capacity of [0, 1, 3]) {
    test(
      `capacity ${capacity}: put, get, next, tryPut, tryGet and for await neither lose nor duplicate`,
      bounded,
      async () => {
        type S = { q: Queue<number>; put: number[]; got: number[] };
        await injectCancellation<S>({
          setup: () => ({ q: new Queue<number>(capacity), put: [], got: [] }),
          scenario: async ({ q, put, got }) => {
            const producer = spawn(async () => {
              for (let i = 0; i < 5; i++) {
                await q.put(i);
                put.push(i);
              }
              if (q.tryPut(5)) put.push(5);
            });
            got.push(await q.get());
            const n = await q.next();
            if (!n.done) got.push(n.value);
            const t = q.tryGet();
            if (t) got.push(t.value);
            for await (const v of q) {
              got.push(v);
              if (v >= 4) break;
            }
            await producer.wait();
          },
          invariant: ({ q, put, got }) => {
            assert.deepEqual([...got, ...drain(q)], put);
            assert.ok(q.size <= capacity);
          },
        });
      },
    );
  }

  // Invariant: with several producers and consumers, items are conserved and FIFO per producer.
  test(
    'several producers and consumers cancelled anywhere conserve every item',
    bounded,
    async () => {
      type S = { q: Queue<string>; put: string[]; got: string[] };
      await injectCancellation<S>({
        setup: () => ({ q: new Queue<string>(2), put: [], got: [] }),
        scenario: async ({ q, put, got }) => {
          const ts: Task<void>[] = [];
          for (const name of ['a', 'b']) {
            ts.push(
              spawn(async () => {
                for (let i = 0; i < 3; i++) {
                  await q.put(`${name}${i}`);
                  put.push(`${name}${i}`);
                }
              }),
            );
          }
          for (let c = 0; c < 2; c++) {
            ts.push(
              spawn(async () => {
                for (let i = 0; i < 3; i++) got.push(await q.get());
              }),
            );
          }
          for (const t of ts) await t.wait();
        },
        invariant: ({ q, put, got }) => {
          assert.deepEqual([...got, ...drain(q)], put);
        },
      });
    },
  );
});
