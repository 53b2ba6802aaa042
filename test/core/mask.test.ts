import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { block, pollCancel, type Waiter } from '../../src/core/context.ts';
import {
  andFinally,
  bracket,
  checkpoint,
  forkFinally,
  getMaskingState,
  isCancellation,
  mask,
  onException,
  type Result,
  sleep,
  spawn,
  uninterruptibleMask,
} from '../../src/core/index.ts';
import { injectCancellation } from '../../src/testing/index.ts';
import { checkLeaks } from '../helpers/leaks.ts';

checkLeaks();

/** The smallest MVar the masking examples need: take blocks only when empty. */
class Box<T> {
  value: T | undefined;
  full = false;
  takers: Waiter<T>[] = [];
  constructor(v?: T) {
    if (v !== undefined) {
      this.value = v;
      this.full = true;
    }
  }
  take(): Promise<T> {
    if (this.full) {
      pollCancel();
      this.full = false;
      return Promise.resolve(this.value as T);
    }
    return block<T>((w) => {
      this.takers.push(w);
      return () => this.takers.splice(this.takers.indexOf(w), 1);
    });
  }
  put(v: T): void {
    assert.equal(this.full, false, 'put on a full box');
    while (this.takers.length > 0) if (this.takers.shift()!.commit(v)) return;
    this.value = v;
    this.full = true;
  }
}

describe('masking state', { timeout: 10_000 }, () => {
  test('getMaskingState reports the three states', async () => {
    assert.equal(getMaskingState(), 'unmasked');
    assert.equal(await mask(() => getMaskingState()), 'maskedInterruptible');
    assert.equal(await uninterruptibleMask(() => getMaskingState()), 'maskedUninterruptible');
    assert.equal(await mask((restore) => restore(() => getMaskingState())), 'unmasked');
    assert.equal(
      await uninterruptibleMask(() => mask(() => getMaskingState())),
      'maskedUninterruptible',
    );
  });

  test('a task spawned inside a mask is born masked', async () => {
    const state = await mask(() => spawn(() => getMaskingState()).wait());
    assert.equal(state, 'maskedInterruptible');
  });

  test('under mask only an operation that actually blocks is interrupted', async () => {
    const box = new Box(1);
    const log: string[] = [];
    const t = spawn(() =>
      mask(async () => {
        await sleep(5).catch((e) => {
          log.push(isCancellation(e) ? 'blocking sleep interrupted' : 'other');
        });
        await checkpoint();
        log.push('checkpoint passed');
        log.push(`took ${await box.take()} without interruption`);
        await box.take(); // empty: blocks, so it is interruptible
        log.push('unreached');
      }),
    );
    t.scope.cancel({ kind: 'cancel', at: 0 });
    const r = await t.result();
    assert.equal(r.ok, false);
    assert.deepEqual(log, [
      'blocking sleep interrupted',
      'checkpoint passed',
      'took 1 without interruption',
    ]);
  });

  test('uninterruptibleMask defers even blocking operations', async () => {
    let slept = false;
    const t = spawn(() =>
      uninterruptibleMask(async () => {
        await sleep(5);
        slept = true;
      }),
    );
    await t.cancel();
    assert.equal(slept, true);
  });

  test('a take-then-put, fixed with mask: the box is never left empty (every checkpoint)', async () => {
    // Invariant: after any cancellation the box is full, holding the old or the new value.
    const problem = (m: Box<number>, f: (a: number) => Promise<number>) =>
      mask(async (restore) => {
        const a = await m.take();
        let r: number;
        try {
          r = await restore(() => f(a));
        } catch (e) {
          m.put(a);
          throw e;
        }
        m.put(r);
      });
    const { checkpoints } = await injectCancellation({
      setup: () => new Box(1),
      scenario: (m) =>
        problem(m, async (a) => {
          await checkpoint();
          await sleep(1);
          await checkpoint();
          return a + 1;
        }),
      invariant: (m) => {
        assert.equal(m.full, true);
        assert.ok(m.value === 1 || m.value === 2);
      },
    });
    assert.ok(checkpoints >= 3);
  });
});

describe('bracket and friends', { timeout: 10_000 }, () => {
  test('release runs exactly once when acquire returned, at every checkpoint', async () => {
    // Invariant: acquired === released, each at most once.
    await injectCancellation({
      setup: () => ({ acquired: 0, released: 0 }),
      scenario: (s) =>
        bracket(
          async () => {
            await sleep(1);
            s.acquired++;
            return s;
          },
          (x) => {
            x.released++;
          },
          async () => {
            await checkpoint();
            await sleep(1);
            await checkpoint();
          },
        ),
      invariant: (s) => {
        assert.equal(s.released, s.acquired);
        assert.ok(s.acquired <= 1);
      },
    });
  });

  test('a release error does not hide a cancellation; after an ordinary error both are kept', async () => {
    const seen: string[] = [];
    const { onDiagnostic } = await import('../../src/core/index.ts');
    const restore = onDiagnostic((d) => seen.push(d.code));
    const t = spawn(() =>
      bracket(
        () => 1,
        () => {
          throw new Error('release failed');
        },
        () => sleep(10_000),
      ),
    );
    await sleep(1);
    await t.cancel();
    restore();
    const r = await t.result();
    assert.equal((r as { error: { code: string } }).error.code, 'ERR_TASK_CANCELLED');
    assert.deepEqual(seen, ['QUIESCE_SUPPRESSED_ERROR']);

    const e = await bracket(
      () => 1,
      () => {
        throw new Error('release failed');
      },
      () => {
        throw new Error('use failed');
      },
    ).catch((x) => x);
    assert.ok(e instanceof SuppressedError);
    assert.equal((e.error as Error).message, 'release failed');
    assert.equal((e.suppressed as Error).message, 'use failed');
  });

  test('andFinally and onException run their handlers masked', async () => {
    const states: string[] = [];
    await andFinally(
      () => 1,
      () => states.push(getMaskingState()),
    );
    await onException(
      () => {
        throw new Error('x');
      },
      () => states.push(getMaskingState()),
    ).catch(() => {});
    assert.deepEqual(states, ['maskedInterruptible', 'maskedInterruptible']);
  });

  test('forkFinally: the finalizer runs even when the task is cancelled before its first line', async () => {
    const results: Result<unknown>[] = [];
    const t = forkFinally(
      async () => {
        await sleep(10_000);
      },
      (r) => {
        results.push(r);
      },
    );
    await t.cancel();
    assert.equal(results.length, 1);
    assert.equal(results[0].ok, false);
    assert.ok(isCancellation((results[0] as { error: unknown }).error));
  });

  test('forkFinally makes a safe async: its result always arrives (every checkpoint)', async () => {
    // Invariant: exactly one outcome is delivered, whatever checkpoint is cancelled.
    await injectCancellation({
      setup: () => ({ outcomes: 0 }),
      scenario: async (s) => {
        const inner = forkFinally(
          async () => {
            await sleep(1);
            await checkpoint();
            return 1;
          },
          () => {
            s.outcomes++;
          },
        );
        await inner.result();
      },
      invariant: (s) => assert.equal(s.outcomes, 1),
    });
  });
});
