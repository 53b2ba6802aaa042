import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  attempt,
  dumpTasks,
  isCancellation,
  onDiagnostic,
  rethrowCancellation,
  sleep,
  spawn,
  timeout,
} from '../../src/core/index.ts';
import { checkLeaks } from '../helpers/leaks.ts';

checkLeaks();

describe('catch-alls: never eat another’s asynchronous exception', {
  timeout: 10_000,
}, () => {
  test('a catch-all written with rethrowCancellation lets a cancellation through', async () => {
    const caught: unknown[] = [];
    const t = spawn(async () => {
      for (;;) {
        try {
          await sleep(10_000);
        } catch (e) {
          rethrowCancellation(e);
          caught.push(e);
        }
      }
    });
    await sleep(1);
    await t.cancel();
    assert.deepEqual(caught, []);
    assert.equal(t.done, true);
  });

  test('attempt catches only synchronous errors', async () => {
    const r = await attempt(() => {
      throw new Error('sync');
    });
    assert.equal(r.ok, false);
    const t = spawn(() => attempt(() => sleep(10_000)));
    await sleep(1);
    await t.cancel();
    const out = await t.result();
    assert.equal((out as { error: { code: string } }).error.code, 'ERR_TASK_CANCELLED');
  });

  test('a timeout expiry inside a catch-all still reaches its timeout', async () => {
    const v = await timeout(5, async () => {
      try {
        await sleep(10_000);
      } catch (e) {
        rethrowCancellation(e);
      }
      return 'swallowed';
    });
    assert.equal(v, undefined);
  });

  test('isCancellation is true for cancellations only', async () => {
    let c: unknown;
    const t = spawn(async () => {
      try {
        await sleep(10_000);
      } catch (e) {
        c = e;
        throw e;
      }
    });
    await sleep(1);
    await t.cancel();
    assert.equal(isCancellation(c), true);
    assert.equal(isCancellation(new Error('x')), false);
    assert.equal(isCancellation(null), false);
    const r = await t.result();
    assert.equal(isCancellation((r as { error: unknown }).error), false);
  });
});

describe('diagnostics', { timeout: 10_000 }, () => {
  test('every cancellation records its cause: who, why, which deadline', async () => {
    let cause: unknown;
    const victim = spawn(
      async () => {
        try {
          await sleep(10_000);
        } catch (e) {
          if (isCancellation(e)) cause = e.cancelCause;
          throw e;
        }
      },
      { name: 'victim' },
    );
    const killer = spawn(
      async () => {
        await sleep(1);
        await victim.cancel('maintenance');
      },
      { name: 'killer' },
    );
    await killer.wait();
    assert.deepEqual(
      { ...(cause as object), at: 0 },
      {
        kind: 'cancel',
        reason: 'maintenance',
        by: 'killer',
        at: 0,
      },
    );
    let deadlineCause: { kind: string; deadline?: number } | undefined;
    await timeout(2, async () => {
      try {
        await sleep(1000);
      } catch (e) {
        if (isCancellation(e)) deadlineCause = e.cancelCause;
        throw e;
      }
    });
    assert.equal(deadlineCause?.kind, 'deadline');
    assert.equal(typeof deadlineCause?.deadline, 'number');
  });

  test('the live task tree can be dumped', async () => {
    const parent = spawn(
      async () => {
        spawn(() => sleep(10_000), { name: 'worker' });
        await sleep(10_000);
      },
      { name: 'server' },
    );
    await sleep(1);
    const dump = dumpTasks();
    assert.match(dump, /server running\n\s+#\d+ worker running/);
    await parent.cancel();
  });

  test('a failed task nobody waited for is reported', async () => {
    const seen: string[] = [];
    const restore = onDiagnostic((d) => seen.push(d.code));
    spawn(async () => {
      throw new Error('lost');
    });
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    restore();
    assert.deepEqual(seen, ['QUIESCE_UNOBSERVED_TASK_ERROR']);
  });
});
