import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  addDeadline,
  hostTimerActive,
  now,
  pendingDeadlines,
  removeDeadline,
} from '../../src/core/clock.ts';
import { sleep, timeout } from '../../src/core/index.ts';
import { useTestClock } from '../../src/testing/index.ts';

describe('the shared deadline structure', { timeout: 20_000 }, () => {
  test('due deadlines fire in deadline order, ties in registration order', async () => {
    using clock = useTestClock();
    const fired: string[] = [];
    addDeadline(now() + 30, () => fired.push('c'));
    addDeadline(now() + 10, () => fired.push('a1'));
    const gone = addDeadline(now() + 20, () => fired.push('removed'));
    addDeadline(now() + 10, () => fired.push('a2'));
    addDeadline(now() + 20, () => fired.push('b'));
    removeDeadline(gone);
    removeDeadline(gone);
    await clock.advance(30);
    assert.deepEqual(fired, ['a1', 'a2', 'b', 'c']);
    assert.equal(pendingDeadlines(), 0);
  });

  test('the heap keeps its order under random insertions and removals', async () => {
    // Invariant: fired times are non-decreasing and exactly the unremoved deadlines fire.
    using clock = useTestClock();
    const fired: number[] = [];
    const expected: number[] = [];
    let seed = 7;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const ds = [];
    for (let i = 0; i < 2000; i++) {
      const at = Math.floor(rnd() * 1000);
      ds.push({ at, d: addDeadline(at, () => fired.push(at)) });
    }
    for (const { at, d } of ds) {
      if (rnd() < 0.3) removeDeadline(d);
      else expected.push(at);
    }
    await clock.advance(1000);
    assert.deepEqual(
      fired,
      expected.sort((a, b) => a - b),
    );
  });

  test('100,000 finished timeouts leave no deadline and no active host timer', async () => {
    for (let i = 0; i < 100_000; i++) await timeout(10_000, async () => i);
    assert.equal(pendingDeadlines(), 0);
    assert.equal(hostTimerActive(), false);
    assert.equal(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length, 0);
  });

  test('a sleep keeps the process alive; nothing does once it is over', async () => {
    const p = sleep(5);
    assert.equal(hostTimerActive(), true);
    await p;
    assert.equal(hostTimerActive(), false);
  });
});
