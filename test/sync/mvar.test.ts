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
  TaskCancelledError,
  timeout,
} from '../../src/core/index.ts';
import { MVar } from '../../src/sync/index.ts';
import { injectCancellation, useTestClock } from '../../src/testing/index.ts';
import { bounded, checkLeaks, turns } from './helpers.ts';

checkLeaks();

/** The book's `modifyTwo`, in the documented lock order: `mb` first, then `ma`. */
function modifyTwo<A, B>(
  ma: MVar<A>,
  mb: MVar<B>,
  f: (a: A, b: B) => readonly [A, B] | Promise<readonly [A, B]>,
): Promise<void> {
  return mb.modify_((b) => ma.modify((a) => f(a, b)));
}

function peek<T>(mv: MVar<T>): T | undefined {
  return mv.tryRead()?.value;
}

describe('MVar basics', () => {
  test('take waits for a put and returns its value; the MVar is then empty', bounded, async () => {
    const mv = new MVar<number>();
    const t = spawn(() => mv.take());
    await turns();
    assert.equal(t.done, false);
    await mv.put(7);
    assert.equal(await t.wait(), 7);
    assert.equal(mv.isFull, false);
  });

  test('put waits while full and lands when a take empties it', bounded, async () => {
    const mv = new MVar(1);
    const t = spawn(() => mv.put(2));
    await turns();
    assert.equal(t.done, false);
    assert.equal(await mv.take(), 1);
    await t.wait();
    assert.equal(peek(mv), 2);
  });

  test('blocked takers are woken in FIFO order', bounded, async () => {
    const mv = new MVar<number>();
    const got: [number, number][] = [];
    const ts = [0, 1, 2, 3, 4].map((i) =>
      spawn(async () => {
        got.push([i, await mv.take()]);
      }),
    );
    for (let v = 10; v < 15; v++) await mv.put(v);
    for (const t of ts) await t.wait();
    assert.deepEqual(got, [
      [0, 10],
      [1, 11],
      [2, 12],
      [3, 13],
      [4, 14],
    ]);
  });

  test('blocked putters are served in FIFO order', bounded, async () => {
    const mv = new MVar(0);
    const ts = [1, 2, 3, 4].map((v) => spawn(() => mv.put(v)));
    await turns();
    const out: number[] = [];
    for (let i = 0; i < 5; i++) out.push(await mv.take());
    for (const t of ts) await t.wait();
    assert.deepEqual(out, [0, 1, 2, 3, 4]);
  });

  test('a put wakes every blocked read and then only the first blocked take', bounded, async () => {
    const mv = new MVar<string>();
    const r1 = spawn(() => mv.read());
    const k1 = spawn(() => mv.take());
    const r2 = spawn(() => mv.read());
    const k2 = spawn(() => mv.take());
    await turns();
    mv.tryPut('x');
    assert.equal(await r1.wait(), 'x');
    assert.equal(await r2.wait(), 'x');
    assert.equal(await k1.wait(), 'x');
    assert.equal(mv.isFull, false, 'the first taker took it');
    assert.equal(k2.done, false);
    await k2.cancel();
  });

  test('read is atomic: it returns the value and leaves the MVar full', bounded, async () => {
    const mv = new MVar({ n: 1 });
    const v = await mv.read();
    assert.deepEqual(v, { n: 1 });
    assert.equal(mv.isFull, true);
    assert.equal(mv.tryRead()?.value, v);
  });

  test('try operations never block and report what they did', bounded, () => {
    const mv = new MVar<number>();
    assert.equal(mv.tryTake(), undefined);
    assert.equal(mv.tryRead(), undefined);
    assert.equal(mv.tryPut(1), true);
    assert.equal(mv.tryPut(2), false);
    assert.deepEqual(mv.tryRead(), { value: 1 });
    assert.deepEqual(mv.tryTake(), { value: 1 });
    assert.equal(mv.isFull, false);
  });

  test('an MVar can hold undefined and still be full', bounded, async () => {
    const mv = new MVar<undefined>(undefined);
    assert.equal(mv.isFull, true);
    assert.deepEqual(mv.tryTake(), { value: undefined });
    assert.equal(mv.isFull, false);
  });
});

describe('MVar under cancellation', () => {
  test('10,000 timed-out takes, reads and puts leave no waiter behind', bounded, async () => {
    // Invariant: an interrupted wait leaves the line — `waiting` is back to 0 every time.
    using clock = useTestClock();
    const empty = new MVar<number>();
    const full = new MVar(1);
    for (let round = 0; round < 10; round++) {
      const waits: Promise<unknown>[] = [];
      for (let i = 0; i < 1000; i++) {
        const kind = i % 3;
        waits.push(
          kind === 0
            ? timeout(10, () => empty.take())
            : kind === 1
              ? timeout(10, () => empty.read())
              : timeout(10, () => full.put(i)),
        );
      }
      await clock.advance(0);
      assert.equal(empty.waiting + full.waiting, 1000, 'all of them blocked');
      await clock.advance(10);
      assert.deepEqual(await Promise.all(waits), new Array(1000).fill(undefined));
      assert.equal(empty.waiting, 0);
      assert.equal(full.waiting, 0);
    }
    assert.equal(empty.isFull, false);
    assert.deepEqual(full.tryRead(), { value: 1 });
  });

  test(
    'a take cancelled while blocked takes nothing; the next put goes to the next taker',
    bounded,
    async () => {
      const mv = new MVar<number>();
      const a = spawn(() => mv.take());
      const b = spawn(() => mv.take());
      await turns();
      await a.cancel();
      mv.tryPut(5);
      assert.equal(await b.wait(), 5);
      const r = await a.result();
      assert.ok(!r.ok && r.error instanceof TaskCancelledError);
    },
  );

  test(
    'a take handed its value just before a cancellation returns the value',
    bounded,
    async () => {
      const mv = new MVar<number>();
      let got: number | undefined;
      const t = spawn(async () => {
        got = await mv.take();
        await checkpoint();
      });
      await turns();
      mv.tryPut(9); // commits to the blocked taker ...
      await t.cancel(); // ... which is cancelled before it runs again
      assert.equal(got, 9, 'the value was delivered, not lost');
      assert.equal(mv.isFull, false, 'and not left in the MVar as well');
    },
  );

  test('a put cancelled while blocked puts nothing', bounded, async () => {
    const mv = new MVar(1);
    const t = spawn(() => mv.put(2));
    await turns();
    await t.cancel();
    assert.equal(await mv.take(), 1);
    assert.equal(mv.isFull, false, 'the cancelled put did not land');
  });

  test(
    'take from a full MVar under mask does not raise a pending cancellation; from an empty one it does',
    bounded,
    async () => {
      const full = new MVar(1);
      const empty = new MVar<number>();
      const seen: string[] = [];
      await cancelScope(async (scope) => {
        scope.cancel('now');
        await mask(async () => {
          seen.push(`took ${await full.take()}`);
          try {
            await empty.take();
          } catch (e) {
            seen.push(isCancellation(e) ? 'blocking take raised' : 'other');
            throw e;
          }
        });
      });
      assert.deepEqual(seen, ['took 1', 'blocking take raised']);
    },
  );

  test(
    'take from a full MVar unmasked in a cancelled scope raises and takes nothing',
    bounded,
    async () => {
      const mv = new MVar(1);
      const { cancelledCaught } = await cancelScope(async (scope) => {
        scope.cancel();
        await mv.take();
      });
      assert.equal(cancelledCaught, true);
      assert.equal(peek(mv), 1);
    },
  );
});

describe('MVar modify and friends', () => {
  test('modify stores the new value and returns the result', bounded, async () => {
    const mv = new MVar(10);
    assert.equal(await mv.modify((n) => [n + 1, `was ${n}`]), 'was 10');
    assert.equal(peek(mv), 11);
  });

  test('modify whose function throws puts the old value back and rethrows', bounded, async () => {
    const mv = new MVar(10);
    await assert.rejects(
      mv.modify(async () => {
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal(peek(mv), 10);
  });

  test(
    'modify whose function returns no pair fails clearly and keeps the old value',
    bounded,
    async () => {
      const mv = new MVar(10);
      await assert.rejects(
        mv.modify((() => 11) as never),
        (e: unknown) => e instanceof ArgumentError && /pair/.test(e.message),
      );
      assert.equal(peek(mv), 10);
    },
  );

  test('modify_, with, swap and compareAndSwap do what they say', bounded, async () => {
    const mv = new MVar('a');
    await mv.modify_((s) => s + 'b');
    assert.equal(await mv.with(async (s) => s.length), 2);
    assert.equal(await mv.swap('z'), 'ab');
    assert.equal(await mv.compareAndSwap('y', 'q'), false);
    assert.equal(peek(mv), 'z');
    assert.equal(await mv.compareAndSwap('z', 'q'), true);
    assert.equal(peek(mv), 'q');
    const obj = new MVar({ id: 1 });
    assert.equal(await obj.compareAndSwap({ id: 1 }, { id: 2 }, (x, y) => x.id === y.id), true);
  });

  test('concurrent modifies never lose an update', bounded, async () => {
    const mv = new MVar(0);
    const ts = Array.from({ length: 20 }, () =>
      spawn(async () => {
        for (let i = 0; i < 10; i++) {
          await mv.modify_(async (n) => {
            await checkpoint();
            return n + 1;
          });
        }
      }),
    );
    for (const t of ts) await t.wait();
    assert.equal(peek(mv), 200);
  });

  test('with holds the MVar for its duration: others wait', bounded, async () => {
    using clock = useTestClock();
    const lock = new MVar<void>(undefined);
    const log: string[] = [];
    const a = spawn(() =>
      lock.with(async () => {
        log.push('a in');
        await sleep(5);
        log.push('a out');
      }),
    );
    const b = spawn(() =>
      lock.with(async () => {
        log.push('b in');
      }),
    );
    await clock.advance(5);
    await a.wait();
    await b.wait();
    assert.deepEqual(log, ['a in', 'a out', 'b in']);
    assert.equal(lock.isFull, true);
  });
});

describe('MVar: cancellation injected at every checkpoint', () => {
  // Invariant: after modify, the MVar is full, with the new value iff modify returned.
  test('modify leaves the MVar full with the old value unless it returned', bounded, async () => {
    const { checkpoints } = await injectCancellation({
      setup: () => new MVar(0),
      scenario: (mv) =>
        mv.modify(async (n) => {
          await checkpoint();
          await sleep(0);
          await checkpoint();
          return [n + 1, 'done'];
        }),
      invariant: (mv, outcome) => {
        assert.equal(mv.isFull, true);
        assert.equal(peek(mv), outcome.ok ? 1 : 0);
      },
    });
    assert.ok(checkpoints >= 3);
  });

  // Invariant: modify_, with, swap, compareAndSwap each leave the MVar full, changed iff returned.
  for (const [name, op, changed] of [
    [
      'modify_',
      (mv: MVar<number>) =>
        mv.modify_(async (n) => {
          await checkpoint();
          return n + 1;
        }),
      1,
    ],
    [
      'with',
      (mv: MVar<number>) =>
        mv.with(async (n) => {
          await checkpoint();
          return n;
        }),
      0,
    ],
    ['swap', (mv: MVar<number>) => mv.swap(5), 5],
    ['compareAndSwap', (mv: MVar<number>) => mv.compareAndSwap(0, 3), 3],
  ] as const) {
    test(`${name} leaves the MVar full, changed only if it returned`, bounded, async () => {
      await injectCancellation({
        setup: () => new MVar(0),
        scenario: async (mv) => {
          await checkpoint();
          await op(mv);
        },
        invariant: (mv, outcome) => {
          assert.equal(mv.isFull, true);
          assert.equal(peek(mv), outcome.ok ? changed : 0);
        },
      });
    });
  }

  // Invariant: every value put is taken once or still inside, and a read saw a value put.
  test(
    'take, read, put and the try forms neither lose nor duplicate a value',
    bounded,
    async () => {
      type S = { mv: MVar<number>; put: number[]; taken: number[]; read: number[] };
      await injectCancellation<S>({
        setup: () => ({ mv: new MVar<number>(), put: [], taken: [], read: [] }),
        scenario: async ({ mv, put, taken, read }) => {
          const filler = spawn(async () => {
            await checkpoint();
            await mv.put(1);
            put.push(1);
            await mv.put(2);
            put.push(2);
          });
          read.push(await mv.read());
          taken.push(await mv.take());
          const r = mv.tryRead();
          if (r) read.push(r.value);
          const t = mv.tryTake();
          if (t) taken.push(t.value);
          if (mv.tryPut(3)) put.push(3);
          await filler.wait();
        },
        invariant: ({ mv, put, taken, read }) => {
          const inside = mv.tryRead();
          const accounted = [...taken, ...(inside ? [inside.value] : [])].sort();
          assert.deepEqual(accounted, [...put].sort());
          for (const v of read) assert.ok(put.includes(v), `read ${v}, which was never put`);
        },
      });
    },
  );
});

describe('MVar lock order (modifyTwo)', () => {
  // Invariant: a transfer between two MVars conserves the total and is all-or-nothing.
  test('a nested modify over two MVars is all-or-nothing under cancellation', bounded, async () => {
    await injectCancellation({
      setup: () => ({ a: new MVar(100), b: new MVar(0) }),
      scenario: ({ a, b }) =>
        modifyTwo(a, b, async (x, y) => {
          await checkpoint();
          await sleep(0);
          return [x - 10, y + 10];
        }),
      invariant: ({ a, b }, outcome) => {
        assert.equal(a.isFull && b.isFull, true, 'both MVars are full again');
        assert.equal(peek(a)! + peek(b)!, 100);
        assert.equal(peek(a), outcome.ok ? 90 : 100);
      },
    });
  });

  test('tasks that all take the MVars in one order never deadlock', bounded, async () => {
    const a = new MVar(1000);
    const b = new MVar(1000);
    const ts = Array.from({ length: 8 }, (_, i) =>
      spawn(async () => {
        for (let k = 0; k < 20; k++) {
          // Both directions of transfer, one lock order: b, then a.
          await modifyTwo(a, b, async (x, y) => {
            await checkpoint();
            return i % 2 ? [x - 1, y + 1] : [x + 1, y - 1];
          });
        }
      }),
    );
    for (const t of ts) await t.wait();
    assert.equal(peek(a)! + peek(b)!, 2000);
  });

  test(
    'opposite lock orders deadlock; cancelling one task restores its MVar and frees the other',
    bounded,
    async () => {
      using clock = useTestClock();
      const a = new MVar('a0');
      const b = new MVar('b0');
      const t1 = spawn(() =>
        a.modify_(async (x) => {
          await sleep(1);
          await b.modify_((y) => y + '!');
          return x + '!';
        }),
      );
      const t2 = spawn(() =>
        b.modify_(async (y) => {
          await sleep(1);
          await a.modify_((x) => x + '?');
          return y + '?';
        }),
      );
      await clock.advance(1);
      assert.equal(t1.done || t2.done, false, 'each holds one MVar and waits for the other');
      assert.equal(a.isFull || b.isFull, false);
      await t1.cancel();
      await t2.wait();
      assert.equal(peek(a), 'a0?', 't1 put a0 back, so t2 could finish');
      assert.equal(peek(b), 'b0?', 'and t1 left no trace in b');
    },
  );

  test('cancelling both tasks of a deadlock restores both MVars', bounded, async () => {
    using clock = useTestClock();
    const a = new MVar('a0');
    const b = new MVar('b0');
    const hold = (first: MVar<string>, second: MVar<string>) =>
      spawn(() =>
        first.modify_(async (x) => {
          await sleep(1);
          await second.modify_((y) => y + '!');
          return x + '!';
        }),
      );
    const t1 = hold(a, b);
    const t2 = hold(b, a);
    await clock.advance(1);
    await Promise.all([t1.cancel(), t2.cancel()]);
    assert.equal(peek(a), 'a0');
    assert.equal(peek(b), 'b0');
  });
});
