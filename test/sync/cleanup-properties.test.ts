/**
 * Randomized properties: tasks are cancelled wherever they happen to be, and their cleanup
 * *blocks* on the very structure under test (a put-back into a full queue, a modify while
 * another task holds the MVar, a permit acquired while others hold them all). Under the
 * cleanup-window rule that cleanup runs to its end, so the structure's invariants hold and
 * every cleanup after a delivered cancellation finishes. (A task cancelled after its body
 * ended receives the cancellation at its cleanup's first checkpoint instead: that cleanup is
 * then the code being cancelled, and it must raise cleanly, changing nothing.)
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { checkpoint, isCancellation, spawn, type Task } from '../../src/core/index.ts';
import { MVar, Queue, Semaphore } from '../../src/sync/index.ts';
import { checkLeaks, turns } from './helpers.ts';

checkLeaks();

/** One task of a schedule: how long it works, and when (if ever) it is cancelled. */
const plan = fc.array(
  fc.record({
    work: fc.nat({ max: 4 }),
    cancelAfter: fc.oneof(fc.constant(-1), fc.nat({ max: 6 })),
  }),
  { minLength: 2, maxLength: 24 },
);

/**
 * Spawns one task per entry and cancels each after its `cancelAfter` turns; with `cancelRest`,
 * then cancels whatever still runs (a consumer waiting for items nobody will put). Waits for all.
 */
async function runAll(
  entries: { work: number; cancelAfter: number }[],
  body: (work: number) => Promise<void>,
  cancelRest = false,
): Promise<void> {
  const tasks: Task<void>[] = entries.map((e) => spawn(() => body(e.work)));
  const cancels = entries.map(async (e, i) => {
    if (e.cancelAfter < 0) return;
    await turns(e.cancelAfter);
    await tasks[i].cancel();
  });
  await Promise.all(cancels);
  if (cancelRest) await Promise.all(tasks.map((t) => t.cancel('the schedule is over')));
  for (const t of tasks) await t.result();
}

/** A few checkpoints with turns between them: where cancellations land. */
async function work(n: number): Promise<void> {
  for (let i = 0; i <= n; i++) {
    await checkpoint();
    await turns(1);
  }
}

describe('properties: cancellation anywhere, with cleanup that blocks', { timeout: 30_000 }, () => {
  test('MVar: take then put back in finally, and a modify in cleanup, lose no update', async () => {
    // Invariant: the MVar ends full, holding takes-that-returned + cleanup modifies, and the
    // cleanup of every task whose body was cancelled ran to its end.
    await fc.assert(
      fc.asyncProperty(plan, async (entries) => {
        const mv = new MVar(0);
        let taken = 0;
        let cleanups = 0;
        let bodiesCancelled = 0;
        let cleanupsAfterCancel = 0;
        await runAll(entries, async (w) => {
          let cancelled = false;
          try {
            for (let r = 0; r < 2; r++) {
              const v = await mv.take();
              taken++;
              try {
                await work(w);
              } finally {
                await mv.put(v + 1);
              }
            }
          } catch (e) {
            cancelled = isCancellation(e);
            if (cancelled) bodiesCancelled++;
            throw e;
          } finally {
            // Blocks while another task holds the MVar.
            await mv.modify_(async (n) => {
              await turns(1);
              return n + 1;
            });
            cleanups++;
            if (cancelled) cleanupsAfterCancel++;
          }
        });
        assert.equal(cleanupsAfterCancel, bodiesCancelled);
        assert.deepEqual(mv.tryRead(), { value: taken + cleanups });
        assert.equal(mv.waiting, 0);
      }),
      { numRuns: 60 },
    );
  });

  test('Semaphore: a permit acquired in cleanup is granted and returned; never over-granted', async () => {
    // Invariant: at most `permits` held at once, all back at the end, and the cleanup of every
    // task whose body was cancelled ran to its end.
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 3 }), plan, async (permits, entries) => {
        const s = new Semaphore(permits);
        let holding = 0;
        let mostHeld = 0;
        let bodiesCancelled = 0;
        let cleanupsAfterCancel = 0;
        const held = async (n: number, w: number) => {
          holding += n;
          mostHeld = Math.max(mostHeld, holding);
          try {
            await work(w);
          } finally {
            holding -= n;
          }
        };
        await runAll(entries, async (w) => {
          const n = Math.min(permits, 1 + (w % 2));
          let cancelled = false;
          try {
            await s.withPermit(() => held(n, w), n);
          } catch (e) {
            cancelled = isCancellation(e);
            if (cancelled) bodiesCancelled++;
            throw e;
          } finally {
            // Blocks while the others hold every permit.
            await s.withPermit(() => held(1, 1));
            if (cancelled) cleanupsAfterCancel++;
          }
        });
        assert.ok(mostHeld <= permits, `${mostHeld} held at once of ${permits}`);
        assert.equal(holding, 0);
        assert.equal(cleanupsAfterCancel, bodiesCancelled);
        assert.equal(s.available, permits);
        assert.equal(s.waiting, 0);
      }),
      { numRuns: 60 },
    );
  });

  test('Queue: a consumer cancelled mid-item puts it back, blocking while the queue is full', async () => {
    // Invariant: every item whose put returned is processed or still queued, exactly once,
    // and the queue never held more than its capacity.
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 3 }), plan, async (capacity, entries) => {
        const q = new Queue<number>(capacity);
        const produced: number[] = [];
        const processed: number[] = [];
        let next = 0;
        let most = 0;
        let running = entries.length;
        const drained: number[] = [];
        // Takes what is left once everything settles, so a put-back always finds room.
        const drainer = spawn(async () => {
          while (running > 0 || q.size > 0) {
            most = Math.max(most, q.size);
            const r = q.tryGet();
            if (r) drained.push(r.value);
            else await checkpoint();
          }
        });
        await runAll(
          entries,
          async (w) => {
            try {
              if (w % 2 === 0) {
                for (let k = 0; k < 3; k++) {
                  const item = next++;
                  await q.put(item);
                  produced.push(item);
                  most = Math.max(most, q.size);
                  await work(w);
                }
              } else {
                for (let k = 0; k < 3; k++) {
                  const item = await q.get();
                  try {
                    await work(w);
                  } catch (e) {
                    if (isCancellation(e)) await q.put(item); // may block: the queue is full
                    throw e;
                  }
                  processed.push(item);
                }
              }
            } finally {
              running--;
            }
          },
          true,
        );
        await drainer.wait();
        assert.ok(most <= capacity, `${most} items buffered, capacity ${capacity}`);
        const out = [...processed, ...drained].sort((a, b) => a - b);
        assert.deepEqual(
          out,
          [...produced].sort((a, b) => a - b),
        );
      }),
      { numRuns: 80 },
    );
  });
});
