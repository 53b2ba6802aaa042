import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { checkpoint, spawn, type Task } from '../../src/core/index.ts';
import { aborted, Chan, MVar, Queue, Semaphore, select } from '../../src/sync/index.ts';
import { checkLeaks, turns } from './helpers.ts';

checkLeaks();

// One step of a random schedule. Producers and consumers are tasks; `cancel` and `abort` hit
// a random one of them wherever it happens to be; `yield` lets the others run a little.
type Step =
  | { t: 'producer'; n: number }
  | { t: 'consumer'; n: number; viaSelect: boolean }
  | { t: 'cancel'; i: number }
  | { t: 'abort'; i: number }
  | { t: 'yield'; n: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant('producer' as const),
      n: fc.integer({ min: 1, max: 8 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant('consumer' as const),
      n: fc.integer({ min: 1, max: 8 }),
      viaSelect: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('cancel' as const), i: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('abort' as const), i: fc.nat() }) },
  {
    weight: 3,
    arbitrary: fc.record({ t: fc.constant('yield' as const), n: fc.integer({ min: 0, max: 6 }) }),
  },
);

/** The operations a channel-like structure offers the schedule. */
interface Pipe {
  /** Adds one item; resolves when it was added (rejects if cancelled or closed: not added). */
  put(v: string): Promise<void> | void;
  get(): Promise<string>;
  getEvent(): ReturnType<Queue<string>['getEvent']>;
  close(): void;
  drain(): string[];
}

let operations = 0;

/**
 * Runs one random schedule and returns what was put (in the order the puts returned), what was
 * got (in the order the gets returned) and what was left.
 */
async function runSchedule(pipe: Pipe, steps: Step[]) {
  const put: string[] = [];
  const got: string[] = [];
  const tasks: Task<void>[] = [];
  const signals: AbortController[] = [];
  let producers = 0;
  for (const s of steps) {
    if (s.t === 'producer') {
      const id = producers++;
      tasks.push(
        spawn(async () => {
          for (let k = 0; k < s.n; k++) {
            await pipe.put(`${id}:${k}`);
            put.push(`${id}:${k}`);
            operations++;
            if (k % 2) await checkpoint();
          }
        }),
      );
    } else if (s.t === 'consumer') {
      const ac = new AbortController();
      signals.push(ac);
      tasks.push(
        spawn(async () => {
          for (let k = 0; k < s.n; k++) {
            if (s.viaSelect) {
              const r = await select(pipe.getEvent(), aborted(ac.signal));
              if (r.index === 1 || r.value.done) return;
              got.push(r.value.value);
            } else {
              got.push(await pipe.get());
            }
            operations++;
          }
        }),
      );
    } else if (s.t === 'cancel' && tasks.length > 0) {
      void tasks[s.i % tasks.length].cancel();
      operations++;
    } else if (s.t === 'abort' && signals.length > 0) {
      signals[s.i % signals.length].abort();
      operations++;
    } else if (s.t === 'yield') {
      await turns(s.n);
    }
  }
  pipe.close();
  for (const t of tasks) await t.result();
  return { put, got, left: pipe.drain() };
}

function queuePipe(capacity: number): Pipe {
  const q = new Queue<string>(capacity);
  return {
    put: (v) => q.put(v),
    get: () => q.get(),
    getEvent: () => q.getEvent(),
    close: () => q.close(),
    drain: () => {
      const out: string[] = [];
      for (let r = q.tryGet(); r; r = q.tryGet()) out.push(r.value);
      return out;
    },
  };
}

function chanPipe(): Pipe {
  const c = new Chan<string>();
  return {
    put: (v) => c.write(v),
    get: () => c.read(),
    getEvent: () => c.readEvent(),
    close: () => c.close(),
    drain: () => {
      const out: string[] = [];
      for (let r = c.tryRead(); r; r = c.tryRead()) out.push(r.value);
      return out;
    },
  };
}

const schedule = fc.array(step, { minLength: 20, maxLength: 120 });

describe('properties: random interleavings with cancellations', () => {
  test('over 10,000 operations, Chan and Queue conserve every item in order', {
    timeout: 60_000,
  }, async () => {
    operations = 0;
    // Invariant: the items got, then those left, are exactly the items put, in the same order.
    await fc.assert(
      fc.asyncProperty(schedule, async (steps) => {
        const { put, got, left } = await runSchedule(chanPipe(), steps);
        assert.deepEqual([...got, ...left], put);
      }),
      { numRuns: 150 },
    );
    // Invariant: the same for a bounded queue of any capacity, rendezvous included.
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 4 }), schedule, async (capacity, steps) => {
        const { put, got, left } = await runSchedule(queuePipe(capacity), steps);
        assert.deepEqual([...got, ...left], put);
      }),
      { numRuns: 250 },
    );
    assert.ok(operations >= 10_000, `only ${operations} operations ran`);
  });

  test('an MVar counter under random modifies and cancellations counts exactly the modifies that returned', {
    timeout: 30_000,
  }, async () => {
    // Invariant: the MVar ends full, holding the number of modify_ calls that returned.
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(fc.constant(-1), fc.nat({ max: 6 })), { minLength: 10, maxLength: 80 }),
        async (plan) => {
          const mv = new MVar(0);
          let returned = 0;
          const tasks: Task<void>[] = [];
          for (const p of plan) {
            if (p === -1 && tasks.length > 0) void tasks[returned % tasks.length].cancel();
            else {
              tasks.push(
                spawn(async () => {
                  for (let k = 0; k < 3; k++) {
                    await mv.modify_(async (n) => {
                      await turns(p);
                      return n + 1;
                    });
                    returned++;
                  }
                }),
              );
            }
            await turns(p);
          }
          for (const t of tasks) await t.result();
          assert.deepEqual(mv.tryRead(), { value: returned });
        },
      ),
      { numRuns: 60 },
    );
  });

  test('a semaphore under random acquirers and cancellations conserves its permits', {
    timeout: 30_000,
  }, async () => {
    // Invariant: never more holders than permits, and every permit is back at the end.
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.array(
          fc.record({
            cancel: fc.boolean(),
            n: fc.integer({ min: 1, max: 3 }),
            wait: fc.nat({ max: 5 }),
          }),
          {
            minLength: 10,
            maxLength: 80,
          },
        ),
        async (permits, plan) => {
          const s = new Semaphore(permits);
          let holding = 0;
          // Recorded here and asserted at the end: an assert inside a task would only fail
          // that task, whose error `result()` hands back rather than throws.
          let mostHeld = 0;
          const tasks: Task<void>[] = [];
          for (const p of plan) {
            if (p.cancel && tasks.length > 0) void tasks[p.wait % tasks.length].cancel();
            else {
              const n = Math.min(p.n, permits);
              tasks.push(
                spawn(() =>
                  s.withPermit(async () => {
                    holding += n;
                    mostHeld = Math.max(mostHeld, holding);
                    try {
                      await turns(p.wait);
                    } finally {
                      holding -= n;
                    }
                  }, n),
                ),
              );
            }
            await turns(p.wait);
          }
          for (const t of tasks) await t.result();
          assert.ok(mostHeld <= permits, `${mostHeld} permits held at once of ${permits}`);
          assert.equal(holding, 0);
          assert.equal(s.available, permits);
          assert.equal(s.waiting, 0);
        },
      ),
      { numRuns: 60 },
    );
  });

  test('1,000 races of a write against the cancel of the blocked reader deliver each item exactly once', {
    timeout: 30_000,
  }, async () => {
    // Invariant: the item is read or left in the channel — never both, never neither.
    for (let i = 0; i < 1000; i++) {
      const c = new Chan<number>();
      const got: number[] = [];
      const reader = spawn(async () => {
        got.push(await c.read());
        await checkpoint();
      });
      await turns(i % 3);
      // Both in one synchronous turn, in either order: the reader has not run in between.
      if (i % 2 === 0) c.write(i);
      const cancelling = reader.cancel();
      if (i % 2 === 1) c.write(i);
      await cancelling;
      const left = c.tryRead();
      assert.deepEqual([...got, ...(left ? [left.value] : [])], [i], `race ${i}`);
    }
  });

  test('1,000 races of a select between two channels written in the same turn commit exactly one', {
    timeout: 30_000,
  }, async () => {
    // Invariant: one item selected, the other still in its channel.
    for (let i = 0; i < 1000; i++) {
      const a = new Chan<string>();
      const b = new Chan<string>();
      const sel = spawn(() => select(a.readEvent(), b.readEvent()));
      await turns(i % 3);
      if (i % 2) {
        a.write('a');
        b.write('b');
      } else {
        b.write('b');
        a.write('a');
      }
      const r = await sel.wait();
      assert.equal(r.value.done, false);
      assert.equal(a.size + b.size, 1, `race ${i}`);
    }
  });
});
