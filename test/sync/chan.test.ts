import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  cancelScope,
  checkpoint,
  isCancellation,
  mask,
  sleep,
  spawn,
  type Task,
} from '../../src/core/index.ts';
import { Chan, ChanClosedError } from '../../src/sync/index.ts';
import { injectCancellation, useTestClock } from '../../src/testing/index.ts';
import { timerDelayUnderSwallowingLoop } from '../helpers/starvation.ts';
import { bounded, checkLeaks, turns } from './helpers.ts';

checkLeaks();

function drain<T>(c: Chan<T>): T[] {
  const out: T[] = [];
  for (let r = c.tryRead(); r; r = c.tryRead()) out.push(r.value);
  return out;
}

describe('Chan basics', () => {
  test('write never blocks and items come out in write order', bounded, async () => {
    const c = new Chan<number>();
    for (let i = 0; i < 1000; i++) c.write(i);
    assert.equal(c.size, 1000);
    const out: number[] = [];
    for (let i = 0; i < 1000; i++) out.push(await c.read());
    assert.deepEqual(
      out,
      Array.from({ length: 1000 }, (_, i) => i),
    );
  });

  test('read waits for a write', bounded, async () => {
    const c = new Chan<string>();
    const t = spawn(() => c.read());
    await turns();
    assert.equal(t.done, false);
    c.write('hi');
    assert.equal(await t.wait(), 'hi');
  });

  test('blocked readers are served in FIFO order', bounded, async () => {
    const c = new Chan<number>();
    const got: string[] = [];
    const ts = [0, 1, 2].map((i) =>
      spawn(async () => {
        got.push(`${i}:${await c.read()}`);
      }),
    );
    await turns();
    c.write(10);
    c.write(11);
    c.write(12);
    for (const t of ts) await t.wait();
    assert.deepEqual(got, ['0:10', '1:11', '2:12']);
  });
});

describe('Chan close', () => {
  test('a loop swallowing the cancellation of reads of a closed chan does not starve a timer', async () => {
    const c = new Chan<number>();
    c.close();
    const late = await timerDelayUnderSwallowingLoop(() => c.read());
    assert.ok(late < 500, `the 5 ms timer fired after ${late.toFixed(0)} ms`);
  });

  test(
    'readers get the buffered items, then read rejects with ChanClosedError',
    bounded,
    async () => {
      const c = new Chan<number>();
      c.write(1);
      c.write(2);
      c.close();
      assert.equal(await c.read(), 1);
      assert.deepEqual(await c.next(), { done: false, value: 2 });
      await assert.rejects(c.read(), (e: unknown) => {
        assert.ok(e instanceof ChanClosedError);
        assert.equal(e.code, 'ERR_CHAN_CLOSED');
        return true;
      });
      assert.deepEqual(await c.next(), { done: true, value: undefined });
    },
  );

  test('write to a closed channel throws ChanClosedError; close is idempotent', bounded, () => {
    const c = new Chan<number>();
    c.close();
    c.close();
    assert.throws(() => c.write(1), ChanClosedError);
    assert.equal(c.closed, true);
  });

  test('close wakes blocked readers with the end', bounded, async () => {
    const c = new Chan<number>();
    const r = spawn(() => c.read());
    const n = spawn(() => c.next());
    await turns();
    c.close();
    await assert.rejects(r.wait(), ChanClosedError);
    assert.deepEqual(await n.wait(), { done: true, value: undefined });
  });

  test('for await yields every item then ends cleanly at close', bounded, async () => {
    const c = new Chan<number>();
    const t = spawn(async () => {
      const seen: number[] = [];
      for await (const v of c) seen.push(v);
      return seen;
    });
    c.write(1);
    await turns();
    c.write(2);
    c.write(3);
    c.close();
    assert.deepEqual(await t.wait(), [1, 2, 3]);
  });

  test('break out of for await leaves the remaining items in the channel', bounded, async () => {
    const c = new Chan<number>();
    for (const v of [1, 2, 3]) c.write(v);
    for await (const v of c) if (v === 1) break;
    assert.deepEqual(drain(c), [2, 3]);
  });
});

describe('Chan duplicates (broadcast)', () => {
  test(
    'a duplicate receives every item written after it was made, through either end',
    bounded,
    async () => {
      const c = new Chan<number>();
      c.write(0);
      const d = c.dup();
      c.write(1);
      d.write(2);
      assert.deepEqual(drain(c), [0, 1, 2]);
      assert.deepEqual(drain(d), [1, 2]);
    },
  );

  test(
    'close through any duplicate ends them all after their buffered items',
    bounded,
    async () => {
      const c = new Chan<number>();
      const d = c.dup();
      const waiting = spawn(() => c.next());
      await turns();
      d.write(7);
      d.close();
      assert.deepEqual(await waiting.wait(), { done: false, value: 7 });
      assert.deepEqual(await d.next(), { done: false, value: 7 });
      assert.equal((await c.next()).done, true);
      assert.equal((await d.next()).done, true);
      assert.equal(c.dup().closed, true, 'a duplicate of a closed channel is closed');
    },
  );

  test('a detached duplicate stops receiving and the others carry on', bounded, async () => {
    const c = new Chan<number>();
    const d = c.dup();
    c.write(1);
    d.detach();
    c.write(2);
    assert.deepEqual(drain(c), [1, 2]);
    assert.deepEqual(await d.next(), { done: false, value: 1 });
    assert.equal((await d.next()).done, true);
    assert.throws(() => d.write(3), ChanClosedError);
  });

  test('every broadcast reader gets every item once, in order', bounded, async () => {
    const c = new Chan<number>();
    const readers: Task<number[]>[] = [];
    for (let r = 0; r < 4; r++) {
      const mine = c.dup();
      readers.push(
        spawn(async () => {
          const seen: number[] = [];
          for await (const v of mine) seen.push(v);
          return seen;
        }),
      );
    }
    for (let i = 0; i < 100; i++) {
      c.write(i);
      if (i % 7 === 0) await turns(2);
    }
    c.close();
    const want = Array.from({ length: 100 }, (_, i) => i);
    for (const r of readers) assert.deepEqual(await r.wait(), want);
    assert.deepEqual(drain(c), want, 'the original end kept its own copy');
  });
});

describe('Chan under cancellation', () => {
  test(
    'a reader cancelled while blocked takes nothing: the item goes to the next reader',
    bounded,
    async () => {
      const c = new Chan<number>();
      const a = spawn(() => c.read());
      const b = spawn(() => c.read());
      await turns();
      await a.cancel();
      c.write(1);
      assert.equal(await b.wait(), 1);
      assert.equal(c.size, 0);
    },
  );

  test('a reader handed an item just before its cancellation returns it', bounded, async () => {
    const c = new Chan<number>();
    const got: number[] = [];
    const t = spawn(async () => {
      got.push(await c.read());
      await checkpoint();
      got.push(await c.read());
    });
    await turns();
    c.write(1); // handed to the blocked reader...
    c.write(2);
    await t.cancel(); // ...which is cancelled before it runs again
    assert.deepEqual(got, [1]);
    assert.deepEqual(drain(c), [2], 'the second item is still there, exactly once');
  });

  test(
    'a cancelled writer raises before writing; under mask it writes (write never blocks)',
    bounded,
    async () => {
      const c = new Chan<number>();
      await cancelScope(async (scope) => {
        scope.cancel();
        assert.throws(() => c.write(1), isCancellation);
        await mask(async () => c.write(2));
      });
      assert.deepEqual(drain(c), [2]);
    },
  );

  test('a for await loop cancelled mid-way loses no item', bounded, async () => {
    using clock = useTestClock();
    const c = new Chan<number>();
    const seen: number[] = [];
    const t = spawn(async () => {
      for await (const v of c) {
        seen.push(v);
        await sleep(10);
      }
    });
    for (let i = 0; i < 10; i++) c.write(i);
    await clock.advance(25);
    await t.cancel();
    assert.deepEqual([...seen, ...drain(c)], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  // The classic hazard: in a channel built from MVars, a reader or writer interrupted between
  // its take and its put left the channel's lock empty and every later reader deadlocked.
  test(
    'readers and writers cancelled mid-operation leave the channel working',
    bounded,
    async () => {
      const c = new Chan<number>();
      const written: number[] = [];
      const got: number[] = [];
      let next = 0;
      const tasks: Task<void>[] = [];
      for (let round = 0; round < 50; round++) {
        tasks.push(
          spawn(async () => {
            for (;;) got.push(await c.read());
          }),
          spawn(async () => {
            for (;;) {
              await checkpoint();
              const v = next++;
              c.write(v);
              written.push(v);
            }
          }),
        );
        await turns(round % 5);
        // Cancel a reader and a writer wherever they happen to be.
        const victims = tasks.splice(0, 2);
        for (const v of victims) void v.cancel();
        await turns(round % 3);
      }
      for (const t of tasks) await t.cancel();
      // No item was lost or duplicated...
      assert.deepEqual([...got, ...drain(c)], written);
      // ...and the channel still works for a new reader and writer.
      const reader = spawn(() => c.read());
      c.write(-1);
      assert.equal(await reader.wait(), -1);
      assert.ok(written.length > 50, 'the writers did write');
    },
  );
});

describe('Chan: cancellation injected at every checkpoint', () => {
  // Invariant: the items read, then those left in the channel, are exactly the items written.
  test(
    'read, next, tryRead, for await and write neither lose nor duplicate an item',
    bounded,
    async () => {
      type S = { c: Chan<number>; written: number[]; got: number[] };
      const { checkpoints } = await injectCancellation<S>({
        setup: () => ({ c: new Chan<number>(), written: [], got: [] }),
        scenario: async ({ c, written, got }) => {
          const writer = spawn(async () => {
            for (let i = 0; i < 6; i++) {
              await checkpoint();
              c.write(i);
              written.push(i);
            }
          });
          got.push(await c.read());
          const n = await c.next();
          if (!n.done) got.push(n.value);
          const t = c.tryRead();
          if (t) got.push(t.value);
          for await (const v of c) {
            got.push(v);
            if (v >= 4) break;
          }
          await writer.wait();
        },
        invariant: ({ c, written, got }) => {
          assert.deepEqual([...got, ...drain(c)], written);
        },
      });
      assert.ok(checkpoints >= 10, `only ${checkpoints} checkpoints`);
    },
  );

  // Invariant: a broadcast reader, cancelled anywhere, reads a prefix of the writes and keeps the rest.
  test('a duplicate reader cancelled anywhere keeps its copy of every item', bounded, async () => {
    type S = { c: Chan<number>; d: Chan<number>; written: number[]; got: number[] };
    await injectCancellation<S>({
      setup: () => {
        const c = new Chan<number>();
        return { c, d: c.dup(), written: [], got: [] };
      },
      scenario: async ({ c, d, written, got }) => {
        const writer = spawn(async () => {
          for (let i = 0; i < 4; i++) {
            await checkpoint();
            c.write(i);
            written.push(i);
          }
          c.close();
        });
        for await (const v of d) got.push(v);
        await writer.wait();
      },
      invariant: ({ c, d, written, got }) => {
        assert.deepEqual([...got, ...drain(d)], written);
        assert.deepEqual(drain(c), written);
      },
    });
  });
});
