/**
 * The starvation probe for operations that report a pending cancellation as a rejection
 * without blocking.
 */
import { onDiagnostic, sleep, spawn } from '../../src/core/index.ts';

/**
 * How late (real ms) a 5 ms timer fires while a force-cancelled task calls `op` in a loop and
 * swallows every rejection. The loop stops when the timer fires, or after 1 s: a rejection
 * that never yields to the event loop shows as about 1000.
 */
export async function timerDelayUnderSwallowingLoop(op: () => Promise<unknown>): Promise<number> {
  let stop = false;
  const t = spawn(async () => {
    try {
      await sleep(60_000);
    } catch {
      // the forced cancellation, the first of many swallowed below
    }
    const until = performance.now() + 1000;
    while (!stop && performance.now() < until) {
      try {
        await op();
      } catch {
        // swallowed, over and over
      }
    }
  });
  await sleep(1);
  // The task finishes normally: its swallowed-cancellation report is expected here.
  const restore = onDiagnostic(() => {});
  try {
    void t.cancel(undefined, { force: true }); // level-triggered: every `op` raises at once
    const set = performance.now();
    const fired = await new Promise<number>((r) => setTimeout(() => r(performance.now()), 5));
    stop = true;
    await t.joined();
    return fired - set;
  } finally {
    restore();
  }
}
