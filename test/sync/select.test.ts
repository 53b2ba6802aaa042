import assert from 'node:assert/strict';
import { EventEmitter, getEventListeners } from 'node:events';
import { describe, test } from 'node:test';
import { pendingDeadlines } from '../../src/core/clock.ts';
import {
  ArgumentError,
  cancelScope,
  checkpoint,
  isCancellation,
  mask,
  now,
  sleep,
  spawn,
  TaskCancelledError,
} from '../../src/core/index.ts';
import {
  aborted,
  after,
  Chan,
  type ChanRead,
  deadlineAt,
  MVar,
  Queue,
  type SelectEvent,
  Semaphore,
  select,
  taskDone,
} from '../../src/sync/index.ts';
import { injectCancellation, useTestClock } from '../../src/testing/index.ts';
import { bounded, checkLeaks, turns } from './helpers.ts';

checkLeaks();

/** One of every kind of event, none of them ready. */
function allKinds() {
  const chan = new Chan<number>();
  const queue = new Queue<number>(1);
  const mvar = new MVar<number>();
  const sem = new Semaphore(0);
  const ac = new AbortController();
  const gate = new MVar<void>();
  const task = spawn(() => gate.take());
  return { chan, queue, mvar, sem, ac, gate, task };
}

/** A select over one event of every kind, the timer last. */
function selectAll(k: ReturnType<typeof allKinds>, timerMs: number) {
  return select(
    k.chan.readEvent(),
    k.queue.getEvent(),
    k.mvar.takeEvent(),
    k.sem.acquireEvent(),
    aborted(k.ac.signal),
    taskDone(k.task),
    after(timerMs),
  );
}

function assertUntouched(k: ReturnType<typeof allKinds>, except: string) {
  if (except !== 'chan') {
    k.chan.write(1);
    assert.deepEqual(k.chan.tryRead(), { value: 1 }, 'the chan had no reader left');
  }
  if (except !== 'queue') {
    assert.equal(k.queue.tryPut(1), true);
    assert.equal(k.queue.size, 1, 'the queue had no getter left');
  }
  if (except !== 'mvar') {
    k.mvar.tryPut(1);
    assert.equal(k.mvar.isFull, true, 'the MVar had no taker left');
  }
  if (except !== 'sem') {
    k.sem.release();
    assert.equal(k.sem.available, 1, 'the semaphore had no acquirer left');
    assert.equal(k.sem.waiting, 0);
  }
  assert.equal(getEventListeners(k.ac.signal, 'abort').length, 0, 'no abort listener left');
  assert.equal(pendingDeadlines(), 0, 'no deadline left');
}

describe('select: which event wins', () => {
  test(
    'when several are ready at the call, the first in argument order wins and the rest are untouched',
    bounded,
    async () => {
      const a = new Chan<string>();
      const b = new Chan<string>();
      a.write('a');
      b.write('b');
      const r = await select(b.readEvent(), a.readEvent());
      assert.equal(r.index, 0);
      assert.deepEqual(r.value, { done: false, value: 'b' });
      assert.deepEqual(a.tryRead(), { value: 'a' });
    },
  );

  test(
    'the result names the event that fired, and its type narrows on index',
    bounded,
    async () => {
      const c = new Chan<number>();
      const timer = after(1_000_000);
      c.write(5);
      const r = await select(timer, c.readEvent());
      assert.equal(r.event, r.index === 1 ? r.event : timer);
      if (r.index === 1) {
        const v: ChanRead<number> = r.value;
        assert.deepEqual(v, { done: false, value: 5 });
      } else {
        assert.fail('the timer cannot have fired');
      }
    },
  );

  for (const kind of ['chan', 'queue', 'mvar', 'sem', 'abort', 'task', 'timer'] as const) {
    test(
      `a blocked select woken by ${kind} commits only it; the losers leave no trace`,
      bounded,
      async () => {
        using clock = useTestClock();
        const k = allKinds();
        const sel = spawn(() => selectAll(k, 50));
        await turns();
        assert.equal(sel.done, false);
        if (kind === 'chan') k.chan.write(7);
        if (kind === 'queue') await k.queue.put(7);
        if (kind === 'mvar') await k.mvar.put(7);
        if (kind === 'sem') k.sem.release();
        if (kind === 'abort') k.ac.abort('stop');
        if (kind === 'task') await k.gate.put();
        if (kind === 'timer') await clock.advance(50);
        const r = await sel.wait();
        const expected = {
          chan: [0, { done: false, value: 7 }],
          queue: [1, { done: false, value: 7 }],
          mvar: [2, 7],
          sem: [3, undefined],
          abort: [4, 'stop'],
          task: [5, { ok: true, value: undefined }],
          timer: [6, undefined],
        }[kind];
        assert.deepEqual([r.index, r.value], expected);
        if (kind === 'sem') k.sem.release(); // the winner holds the permit
        if (kind !== 'task') await k.gate.put();
        await k.task.wait();
        assertUntouched(k, kind);
      },
    );
  }

  test(
    'two events firing in the same turn: exactly one commits, the other keeps its item',
    bounded,
    async () => {
      const a = new Chan<string>();
      const b = new Chan<string>();
      const sel = spawn(() => select(a.readEvent(), b.readEvent()));
      const plain = spawn(() => b.read());
      await turns();
      a.write('a');
      b.write('b'); // the select already won: this item goes to the plain reader behind it
      const r = await sel.wait();
      assert.equal(r.index, 0);
      assert.equal(await plain.wait(), 'b');
      assert.equal(b.size, 0);
    },
  );

  test(
    'a producer whose commit returns false keeps its value for the next waiter',
    bounded,
    async () => {
      // A deliberately lazy event: its unregister does nothing, so it still holds the select's
      // waiter after another case won. The protocol makes that harmless.
      const held: { commit(v: number): boolean }[] = [];
      const lazy: SelectEvent<number> = {
        poll: () => undefined,
        register(w) {
          held.push(w);
          return () => {};
        },
      };
      const c = new Chan<number>();
      const sel = spawn(() => select(lazy, c.readEvent()));
      await turns();
      c.write(1);
      assert.equal((await sel.wait()).index, 1);
      assert.equal(held[0].commit(2), false, 'the loser refuses the value');
    },
  );

  test('a closed channel and a closed queue are results, not exceptions', bounded, async () => {
    const c = new Chan<number>();
    const q = new Queue<number>(1);
    c.close();
    q.close();
    assert.deepEqual((await select(c.readEvent())).value, { done: true, value: undefined });
    assert.deepEqual((await select(q.getEvent())).value, { done: true, value: undefined });
    const c2 = new Chan<number>();
    const sel = spawn(() => select(c2.readEvent(), after(1_000_000)));
    await turns();
    c2.close();
    assert.deepEqual((await sel.wait()).value, { done: true, value: undefined });
  });

  test('mvar.readEvent leaves the MVar full; takeEvent empties it', bounded, async () => {
    const mv = new MVar(3);
    assert.equal((await select(mv.readEvent())).value, 3);
    assert.equal(mv.isFull, true);
    assert.equal((await select(mv.takeEvent())).value, 3);
    assert.equal(mv.isFull, false);
  });
});

describe('select: timers, signals and tasks', () => {
  test(
    'after(ms) fires on the library clock; after(0) is ready at once; after(Infinity) never',
    bounded,
    async () => {
      using clock = useTestClock();
      assert.equal((await select(new Chan<number>().readEvent(), after(0))).index, 1);
      const sel = spawn(() => select(after(Number.POSITIVE_INFINITY), after(30)));
      await clock.advance(29);
      assert.equal(sel.done, false);
      await clock.advance(1);
      assert.equal((await sel.wait()).index, 1);
      assert.equal(pendingDeadlines(), 0);
    },
  );

  test('an after() made before a loop is one overall deadline', bounded, async () => {
    using clock = useTestClock();
    const c = new Chan<number>();
    const t = spawn(async () => {
      const deadline = after(100);
      let n = 0;
      for (;;) {
        const r = await select(c.readEvent(), deadline);
        if (r.index === 1) return n;
        n++;
      }
    });
    for (let i = 0; i < 5; i++) {
      c.write(i);
      await clock.advance(30);
    }
    assert.equal(await t.wait(), 4, 'items at 0, 30, 60, 90 ms; the deadline at 100 ms');
    assert.equal(c.size, 1, 'the item written at 120 ms was left for others');
  });

  test(
    'deadlineAt(at) fires at an absolute time; a past time is ready at once',
    bounded,
    async () => {
      using clock = useTestClock(1000);
      assert.equal((await select(deadlineAt(now() - 1))).index, 0);
      const sel = spawn(() => select(deadlineAt(1010)));
      await clock.advance(10);
      assert.equal((await sel.wait()).index, 0);
    },
  );

  test(
    'aborted(signal) gives the abort reason, already aborted or later, and leaves no listener',
    bounded,
    async () => {
      assert.equal((await select(aborted(AbortSignal.abort('early')))).value, 'early');
      const ac = new AbortController();
      const sel = spawn(() => select(aborted(ac.signal)));
      await turns();
      assert.equal(getEventListeners(ac.signal, 'abort').length, 1);
      ac.abort('late');
      assert.equal((await sel.wait()).value, 'late');
      assert.equal(getEventListeners(ac.signal, 'abort').length, 0);
    },
  );

  test(
    'taskDone gives the outcome: a value, an error, or a TaskCancelledError',
    bounded,
    async () => {
      const ok = spawn(async () => 1);
      const bad = spawn(async () => {
        throw new Error('bad');
      });
      const cancelled = spawn(() => sleep(Number.POSITIVE_INFINITY));
      await turns();
      await cancelled.cancel();
      assert.deepEqual((await select(taskDone(ok))).value, { ok: true, value: 1 });
      const b = (await select(taskDone(bad))).value;
      assert.ok(!b.ok && b.error instanceof Error && b.error.message === 'bad');
      const c = (await select(taskDone(cancelled))).value;
      assert.ok(!c.ok && c.error instanceof TaskCancelledError);
    },
  );

  test('losing a select leaves the task running', bounded, async () => {
    const gate = new MVar<void>();
    const t = spawn(() => gate.take());
    const c = new Chan<number>();
    c.write(1);
    assert.equal((await select(taskDone(t), c.readEvent())).index, 1);
    await turns();
    assert.equal(t.done, false);
    await gate.put();
    await t.wait();
  });
});

describe('select under cancellation', () => {
  test(
    "the caller's cancellation raises from a blocked select and removes every registration",
    bounded,
    async () => {
      const k = allKinds();
      const sel = spawn(() => selectAll(k, 1_000_000));
      await turns();
      await sel.cancel();
      const r = await sel.result();
      assert.ok(!r.ok && r.error instanceof TaskCancelledError);
      await k.gate.put();
      await k.task.wait();
      assertUntouched(k, 'none');
    },
  );

  test(
    'under mask a select with a ready event does not raise; one that must block does',
    bounded,
    async () => {
      const c = new Chan<number>();
      c.write(1);
      await cancelScope(async (scope) => {
        // Forced: no cleanup window, so every checkpoint below is asked the question afresh.
        scope.cancel(undefined, { force: true });
        await assert.rejects(select(c.readEvent()), isCancellation, 'unmasked: raises');
        await mask(async () => {
          const r = await select(c.readEvent());
          assert.deepEqual(r.value, { done: false, value: 1 });
          await assert.rejects(select(c.readEvent(), after(10)), isCancellation);
        });
      });
      assert.equal(pendingDeadlines(), 0);
    },
  );

  test(
    'an event that throws fails the select with its error and leaves the others untouched',
    bounded,
    async () => {
      const c = new Chan<number>();
      const broken = (where: 'poll' | 'register'): SelectEvent<number> => ({
        poll() {
          if (where === 'poll') throw new Error('poll broke');
          return undefined;
        },
        register() {
          throw new Error('register broke');
        },
      });
      await assert.rejects(select(c.readEvent(), broken('poll')), /poll broke/);
      await assert.rejects(select(c.readEvent(), after(10), broken('register')), /register broke/);
      c.write(1);
      assert.deepEqual(c.tryRead(), { value: 1 }, 'no reader was left registered');
      assert.equal(pendingDeadlines(), 0);
    },
  );

  test('rejects an empty call or an argument that is not an event', bounded, async () => {
    await assert.rejects(select(), ArgumentError);
    await assert.rejects(select({} as SelectEvent<number>), ArgumentError);
    assert.throws(() => after(Number.NaN), ArgumentError);
    assert.throws(() => aborted({} as AbortSignal), ArgumentError);
  });
});

describe('select with an event defined outside quiesce/sync', () => {
  /** What quiesce/net does for `conn.readEvent()`: an event over an emitter. */
  function readable(src: EventEmitter & { buffered: string[] }): SelectEvent<void> {
    return {
      poll: () => (src.buffered.length > 0 ? { value: undefined } : undefined),
      register(w) {
        const on = () => {
          w.commit(undefined);
        };
        src.once('readable', on);
        return () => src.off('readable', on);
      },
    };
  }

  test(
    'a readable-style event races a timer without throwing, and leaves no listener',
    bounded,
    async () => {
      using clock = useTestClock();
      const src = Object.assign(new EventEmitter(), { buffered: [] as string[] });
      const first = spawn(() => select(readable(src), after(100)));
      await clock.advance(100);
      assert.equal((await first.wait()).index, 1, 'timed out: a result');
      assert.equal(src.listenerCount('readable'), 0);
      const second = spawn(() => select(readable(src), after(100)));
      await turns();
      src.buffered.push('data');
      src.emit('readable');
      assert.equal((await second.wait()).index, 0);
      assert.equal(src.listenerCount('readable'), 0);
      assert.equal(pendingDeadlines(), 0);
    },
  );
});

describe('select: cancellation injected at every checkpoint', () => {
  // Invariant: each item or permit was selected exactly once or is still where it was put.
  test(
    'a loop of selects over every kind of source conserves items and permits',
    bounded,
    async () => {
      type S = {
        chan: Chan<string>;
        queue: Queue<string>;
        mvar: MVar<string>;
        sem: Semaphore;
        sent: string[];
        got: string[];
        permits: number;
      };
      const { checkpoints } = await injectCancellation<S>({
        setup: () => ({
          chan: new Chan(),
          queue: new Queue(1),
          mvar: new MVar(),
          sem: new Semaphore(0),
          sent: [],
          got: [],
          permits: 0,
        }),
        scenario: async (s) => {
          const producer = spawn(async () => {
            for (let i = 0; i < 2; i++) {
              await checkpoint();
              s.chan.write(`c${i}`);
              s.sent.push(`c${i}`);
              await s.queue.put(`q${i}`);
              s.sent.push(`q${i}`);
              await s.mvar.put(`m${i}`);
              s.sent.push(`m${i}`);
              s.sem.release();
            }
          });
          const deadline = after(1_000_000);
          for (let n = 0; n < 8; n++) {
            const r = await select(
              s.chan.readEvent(),
              s.queue.getEvent(),
              s.mvar.takeEvent(),
              s.sem.acquireEvent(),
              taskDone(producer),
              deadline,
            );
            if (r.index === 0 || r.index === 1) {
              if (!r.value.done) s.got.push(r.value.value);
            } else if (r.index === 2) s.got.push(r.value);
            else if (r.index === 3) s.permits++;
            else break;
          }
          await producer.wait();
        },
        invariant: (s) => {
          const left: string[] = [];
          for (let r = s.chan.tryRead(); r; r = s.chan.tryRead()) left.push(r.value);
          for (let r = s.queue.tryGet(); r; r = s.queue.tryGet()) left.push(r.value);
          const m = s.mvar.tryTake();
          if (m) left.push(m.value);
          assert.deepEqual([...s.got, ...left].sort(), [...s.sent].sort());
          assert.equal(s.permits + s.sem.available, s.sent.filter((x) => x[0] === 'm').length);
        },
      });
      assert.ok(checkpoints >= 10);
    },
  );

  // Invariant: each kind of event, cancelled anywhere, fired and consumed once, or left its source intact.
  const kinds: {
    name: string;
    make: () => {
      event: SelectEvent<unknown>;
      fire: () => unknown;
      check: (won: boolean, fired: boolean) => void;
      cleanup?: () => unknown;
    };
  }[] = [
    {
      name: 'chan.readEvent',
      make: () => {
        const c = new Chan<number>();
        return {
          event: c.readEvent(),
          fire: () => c.write(1),
          check: (won, fired) => assert.equal(c.size, fired && !won ? 1 : 0),
        };
      },
    },
    {
      name: 'queue.getEvent',
      make: () => {
        const q = new Queue<number>(1);
        return {
          event: q.getEvent(),
          fire: () => q.put(1),
          check: (won, fired) => assert.equal(q.size, fired && !won ? 1 : 0),
        };
      },
    },
    {
      name: 'mvar.takeEvent',
      make: () => {
        const m = new MVar<number>();
        return {
          event: m.takeEvent(),
          fire: () => m.put(1),
          check: (won, fired) => assert.equal(m.isFull, fired && !won),
        };
      },
    },
    {
      name: 'mvar.readEvent',
      make: () => {
        const m = new MVar<number>();
        return {
          event: m.readEvent(),
          fire: () => m.put(1),
          check: (_, fired) => assert.equal(m.isFull, fired, 'a read never empties'),
        };
      },
    },
    {
      name: 'sem.acquireEvent',
      make: () => {
        const s = new Semaphore(0);
        return {
          event: s.acquireEvent(),
          fire: () => s.release(),
          check: (won, fired) => assert.equal(s.available, fired && !won ? 1 : 0),
        };
      },
    },
    {
      name: 'aborted',
      make: () => {
        const ac = new AbortController();
        return {
          event: aborted(ac.signal),
          fire: () => ac.abort(),
          check: () => assert.equal(getEventListeners(ac.signal, 'abort').length, 0),
        };
      },
    },
    {
      name: 'taskDone',
      make: () => {
        const gate = new MVar<void>();
        const t = spawn(() => gate.take());
        return {
          event: taskDone(t),
          fire: () => gate.put(),
          // Won means the task really is done; won, lost or cancelled, the select left no
          // registration on the task.
          check: (won) => {
            if (won) assert.equal(t.done, true);
            assert.equal(t.waiting, 0);
          },
          cleanup: async () => {
            gate.tryPut();
            await t.result();
          },
        };
      },
    },
  ];
  for (const kind of kinds) {
    test(
      `${kind.name}: a select cancelled anywhere consumes its event once or not at all`,
      bounded,
      async () => {
        type S = { k: ReturnType<(typeof kind)['make']>; won: boolean; fired: boolean };
        await injectCancellation<S>({
          setup: () => ({ k: kind.make(), won: false, fired: false }),
          scenario: async (s) => {
            const firer = spawn(async () => {
              await checkpoint();
              await s.k.fire();
              s.fired = true;
            });
            const r = await select(s.k.event, after(1_000_000));
            s.won = r.index === 0;
            await firer.wait();
          },
          invariant: async (s) => {
            if (kind.name === 'taskDone') s.k.check(s.won, s.fired);
            await s.k.cleanup?.();
            s.k.check(s.won, s.fired);
          },
        });
      },
    );
  }
});
