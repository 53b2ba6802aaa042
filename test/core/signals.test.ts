import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { describe, test } from 'node:test';
import {
  adopt,
  cancelScope,
  currentSignal,
  isCancellation,
  mask,
  onDiagnostic,
  sleep,
  spawn,
  uninterruptibleMask,
  withSignal,
} from '../../src/core/index.ts';
import { checkLeaks } from '../helpers/leaks.ts';

checkLeaks();

describe('AbortSignal interop', { timeout: 10_000 }, () => {
  test('the current signal aborts when the scope is cancelled, with the Cancelled as reason', async () => {
    let reason: unknown;
    const t = spawn(async () => {
      const signal = currentSignal();
      assert.equal(signal, currentSignal(), 'one controller per scope');
      try {
        await delay(10_000, undefined, { signal });
      } catch (e) {
        reason = signal.reason;
        throw e;
      }
    });
    await sleep(1);
    await t.cancel('bye');
    assert.ok(isCancellation(reason));
  });

  test('a signal asked for inside an already cancelled scope is born aborted', async () => {
    await cancelScope(async (scope) => {
      scope.cancel();
      assert.equal(currentSignal().aborted, true);
    });
  });

  test('under uninterruptibleMask the signal never aborts; under mask it does', async () => {
    const t = spawn(async () => {
      const u = await uninterruptibleMask(async () => currentSignal());
      const m = await mask(async () => currentSignal());
      return { u, m };
    });
    const { u, m } = await t.wait();
    const t2 = spawn(() => uninterruptibleMask(async () => currentSignal()));
    t2.scope.cancel({ kind: 'cancel', at: 0 });
    assert.equal((await t2.wait()).aborted, false);
    assert.equal(u.aborted, false);
    assert.equal(m.aborted, false);
  });

  test('withSignal cancels the body when the external signal aborts, and removes its listener', async () => {
    const ac = new AbortController();
    let cleaned = false;
    const p = withSignal(ac.signal, async () => {
      try {
        await sleep(10_000);
      } finally {
        cleaned = true;
      }
    }).catch((e) => e);
    await sleep(1);
    ac.abort(new Error('client went away'));
    const e = await p;
    assert.equal(e.message, 'client went away');
    assert.equal(cleaned, true);
    const ac2 = new AbortController();
    assert.equal(await withSignal(ac2.signal, async () => 'v'), 'v');
    assert.equal(Object.getOwnPropertySymbols(ac2.signal).length >= 0, true);
  });

  test('adopt: a foreign promise becomes a checkpoint, and cancel waits until it settled', async () => {
    let settle!: () => void;
    let settled = false;
    const foreign = new Promise<void>((r) => {
      settle = () => {
        settled = true;
        r();
      };
    });
    let interrupted = false;
    const t = spawn(async () => {
      try {
        await adopt(foreign);
      } catch (e) {
        interrupted = isCancellation(e);
        throw e;
      }
    });
    await sleep(1);
    const cancelled = t.cancel();
    await sleep(5);
    assert.equal(interrupted, true);
    assert.equal(t.done, false, 'the task waits for its adopted promise');
    settle();
    await cancelled;
    assert.equal(settled, true);
  });

  test('adopt with onExit abandon finishes at once and reports the abandoned promise', async () => {
    const seen: string[] = [];
    const restore = onDiagnostic((d) => seen.push(d.code));
    let settle!: () => void;
    const foreign = new Promise<void>((r) => {
      settle = r;
    });
    const t = spawn(() => adopt(foreign, { onExit: 'abandon' }));
    await sleep(1);
    await t.cancel();
    await sleep(1);
    restore();
    settle();
    assert.deepEqual(seen, ['QUIESCE_ABANDONED_PROMISE']);
  });
});
