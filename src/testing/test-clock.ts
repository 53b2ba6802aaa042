import { type Clock, installClock, pendingYields } from '../core/internal.ts';

function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Lets every pending promise continuation run: one full macrotask turn, and more while code
 * that yielded after a long stretch (a checkpoint, a re-raised cancellation) has not resumed —
 * so a test's view does not depend on how busy the machine was (at most 100 turns).
 */
export async function flush(): Promise<void> {
  await turn();
  for (let i = 0; i < 100 && pendingYields() > 0; i++) await turn();
}

/**
 * A virtual clock for tests: time stands still until `advance` moves it, firing every timer
 * that falls due, in order, and letting the code woken by each one run before the next.
 * `sleep`, `timeout`, deadlines and `after` all read it while it is installed.
 */
export class TestClock implements Clock, Disposable {
  #now: number;
  #timers = new Map<number, { at: number; fn: () => void }>();
  #ids = 1;
  #previous: Clock | null = null;

  constructor(start = 0) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimer(fn: () => void, ms: number): unknown {
    const id = this.#ids++;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fn });
    return id;
  }

  clearTimer(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  /** How many timers are armed on this clock. */
  get pendingTimers(): number {
    return this.#timers.size;
  }

  /**
   * Moves time forward by `ms`, firing due timers in order; after each one (and at the end) the
   * woken code runs until it blocks again.
   */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    await flush();
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | null = null;
      for (const e of this.#timers)
        if (e[1].at <= target && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.#timers.delete(next[0]);
      this.#now = Math.max(this.#now, next[1].at);
      next[1].fn();
      await flush();
    }
    this.#now = target;
    await flush();
  }

  /** Makes this the library's clock; `dispose` (or `using`) puts the previous one back. */
  install(): this {
    this.#previous = installClock(this);
    return this;
  }

  [Symbol.dispose](): void {
    if (this.#previous) installClock(this.#previous);
    this.#previous = null;
  }
}

/**
 * Installs a fresh virtual clock starting at 0 and returns it; `using clock = useTestClock()`
 * restores the real clock at block exit.
 * @example
 * using clock = useTestClock();
 * const p = timeout(1000, () => sleep(5000));
 * await clock.advance(1000);
 * assert.equal(await p, undefined);
 */
export function useTestClock(start = 0): TestClock {
  return new TestClock(start).install();
}
