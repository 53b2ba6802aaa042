/**
 * The one seam through which the library reads time and arms timers, and the shared deadline
 * structure every `sleep`, `timeout` and deadline scope registers in.
 *
 * Guarantees:
 * 1. One host timer at most, whatever the number of pending deadlines: registering and
 *    removing a deadline costs a heap operation, never a `setTimeout`/`clearTimeout` pair.
 * 2. A removed deadline leaves nothing behind: the heap holds exactly the pending entries, so
 *    a million finished timeouts leave an empty heap and no host timer keeping the loop alive.
 * 3. Due entries fire in deadline order, ties in registration order.
 */

/** A source of time and host timers; the test clock in `quiesce/testing` is another one. */
export interface Clock {
  /** Milliseconds on a monotonic scale. */
  now(): number;
  /** Arms a one-shot host timer; returns a handle for `clearTimer`. */
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
  /** Whether an armed timer keeps the process alive; optional, as a test clock has no loop. */
  refTimer?(handle: unknown, ref: boolean): void;
}

/** The real clock: `performance.now()` and the host's timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimer: (fn, ms) => setTimeout(fn, ms),
  clearTimer: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
  refTimer: (handle, ref) => {
    const t = handle as ReturnType<typeof setTimeout>;
    if (ref) t.ref();
    else t.unref();
  },
};

/** A pending deadline. `index` is its place in the heap, -1 once fired or removed. */
export interface Deadline {
  at: number;
  seq: number;
  index: number;
  fire: (arg: any) => void;
  /** What `fire` is called with: one shared callback can serve many deadlines. */
  arg: unknown;
}

// Invariant: heap[i].index === i for every i, and heap[parent(i)] <= heap[i] by (at, seq).
const heap: Deadline[] = [];
let seq = 0;
let clock: Clock = systemClock;
// The single host timer, armed for `armedAt`; it may be armed earlier than heap[0].at after a
// removal (it then fires, finds nothing due, and re-arms), never later.
// Invariant: timerRefed === (heap.length > 0) whenever timer is set, so an empty heap never
// keeps the process alive, yet emptying and refilling it costs a ref toggle, not a new timer.
let timer: unknown;
let timerRefed = false;
let armedAt = Number.POSITIVE_INFINITY;
const MAX_DELAY = 0x7fffffff;

/** Milliseconds on the clock now in force. */
export function now(): number {
  return clock.now();
}

/**
 * Replaces the clock; pending deadlines are re-armed on the new one. Returns the previous clock.
 * For tests (see `quiesce/testing`); never call it while deadlines of real work are pending.
 */
export function installClock(next: Clock): Clock {
  const prev = clock;
  disarm();
  clock = next;
  arm();
  return prev;
}

function less(a: Deadline, b: Deadline): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

function place(d: Deadline, i: number): void {
  heap[i] = d;
  d.index = i;
}

function siftUp(i: number): void {
  const d = heap[i];
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (!less(d, heap[p])) break;
    place(heap[p], i);
    i = p;
  }
  place(d, i);
}

function siftDown(i: number): void {
  const d = heap[i];
  const n = heap.length;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= n) break;
    const r = l + 1;
    const c = r < n && less(heap[r], heap[l]) ? r : l;
    if (!less(heap[c], d)) break;
    place(heap[c], i);
    i = c;
  }
  place(d, i);
}

function disarm(): void {
  if (timer !== undefined) {
    clock.clearTimer(timer);
    timer = undefined;
    timerRefed = false;
    armedAt = Number.POSITIVE_INFINITY;
  }
}

function setRef(ref: boolean): void {
  if (timerRefed !== ref && timer !== undefined) {
    timerRefed = ref;
    clock.refTimer?.(timer, ref);
  }
}

function arm(): void {
  if (heap.length === 0) {
    // Nothing pending: no host timer may keep the process alive (guarantee 2).
    if (clock.refTimer) setRef(false);
    else disarm();
    return;
  }
  const at = heap[0].at;
  if (timer !== undefined && armedAt <= at) {
    setRef(true);
    return;
  }
  disarm();
  // Host timers overflow past 2^31-1 ms (Node clamps to 1 ms and would spin): arm for the
  // longest delay allowed; the timer then fires early, finds nothing due, and re-arms.
  const t = clock.now();
  const delay = Math.min(MAX_DELAY, Math.max(0, at - t));
  armedAt = t + delay;
  timer = clock.setTimer(onTimer, delay);
  timerRefed = true;
}

function onTimer(): void {
  timer = undefined;
  timerRefed = false;
  armedAt = Number.POSITIVE_INFINITY;
  const t = clock.now();
  // Fire everything due, in order. A callback may add or remove deadlines; the loop re-reads.
  // If one throws, the error escapes as an uncaught exception, but the timer is re-armed
  // first, so later deadlines never stall.
  try {
    while (heap.length > 0 && heap[0].at <= t) {
      const d = heap[0];
      removeDeadline(d);
      d.fire(d.arg);
    }
  } finally {
    arm();
  }
}

/** Registers `fire(arg)` to run once at clock time `at` (absolute, ms). */
export function addDeadline<A = undefined>(at: number, fire: (arg: A) => void, arg?: A): Deadline {
  const d: Deadline = { at, seq: seq++, index: heap.length, fire, arg };
  heap.push(d);
  siftUp(d.index);
  if (at < armedAt || !timerRefed) arm();
  return d;
}

/** Removes a pending deadline; a no-op on one that fired or was removed. */
export function removeDeadline(d: Deadline): void {
  const i = d.index;
  if (i < 0) return;
  d.index = -1;
  const last = heap.pop()!;
  if (last !== d) {
    place(last, i);
    siftUp(i);
    siftDown(last.index);
  }
  // The host timer is left armed (guarantee 1): it fires early, finds nothing due and re-arms.
  // When the heap empties it stops keeping the process alive at once.
  if (heap.length === 0) arm();
}

/** How many deadlines are pending (for leak checks). */
export function pendingDeadlines(): number {
  return heap.length;
}

/** Whether a host timer is armed and keeps the process alive (for leak checks). */
export function hostTimerActive(): boolean {
  return timer !== undefined && timerRefed;
}
