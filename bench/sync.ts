/**
 * quiesce/sync's costs, side by side with Effect v4 and hand-written promise queues, in one
 * process (see lib.ts for the method: calibrated batches, rotated rounds, medians).
 *
 * What it prints, and the targets of issue 3 it checks:
 * 1. Messages per second through `Chan` (unbounded) and `Queue` (bounded, 64), with 1 producer
 *    and 1 consumer and with 4 and 4, against Effect's `Queue.unbounded`/`Queue.bounded(64)`
 *    (fibers in one `runPromise`) and a plain array-plus-promise queue. Targets: faster than
 *    Effect; within 2× of the plain queue.
 * 2. MVar take/put round trip (two tasks ping-ponging through two MVars) against a plain
 *    promise MVar and Effect `Queue.bounded(1)`. Information only.
 * 3. `select` over 3 events (two channels and a timer) against Effect `raceAll` over two
 *    `Queue.take` and a `sleep`, and a hand-written race with removable waiters and a
 *    setTimeout. Information only.
 *
 * The plain queues keep no cancellation promise at all: a waiter they drop is lost. They are
 * the floor, not an alternative.
 */
import { Effect, Fiber, Queue as EQueue } from 'effect';
import { spawn } from '../src/core/index.ts';
import { after, Chan, MVar, Queue, select } from '../src/sync/index.ts';
import {
  type Candidate,
  describeMachine,
  formatNs,
  type Measurement,
  measure,
  pick,
  printRows,
  printVerdicts,
  type Verdict,
} from './lib.ts';

// Results flow into `sink` so no loop can be optimized away; it is checked at the end.
let sink = 0;
const CAPACITY = 64;
const FAR = 1e9; // a timer that never fires during a run

// ---- the plain floor: an array plus promise resolvers -------------------------------------

/** Unbounded; a waiter returns false if it no longer wants the item (used by plainSelect). */
class PlainChan<T> {
  items: T[] = [];
  waiters: ((v: T) => boolean)[] = [];
  write(v: T): void {
    while (this.waiters.length > 0) if (this.waiters.shift()!(v)) return;
    this.items.push(v);
  }
  read(): Promise<T> {
    if (this.items.length > 0) return Promise.resolve(this.items.shift() as T);
    return new Promise((resolve) => {
      this.waiters.push((v) => {
        resolve(v);
        return true;
      });
    });
  }
}

class PlainQueue<T> {
  items: T[] = [];
  getters: ((v: T) => void)[] = [];
  putters: [T, () => void][] = [];
  readonly capacity: number;
  constructor(capacity: number) {
    this.capacity = capacity;
  }
  put(v: T): Promise<void> {
    const g = this.getters.shift();
    if (g) g(v);
    else if (this.items.length < this.capacity) this.items.push(v);
    else return new Promise((resolve) => this.putters.push([v, resolve]));
    return Promise.resolve();
  }
  get(): Promise<T> {
    if (this.items.length > 0) {
      const v = this.items.shift() as T;
      const p = this.putters.shift();
      if (p) {
        this.items.push(p[0]);
        p[1]();
      }
      return Promise.resolve(v);
    }
    return new Promise((resolve) => this.getters.push(resolve));
  }
}

class PlainMVar<T> {
  full = false;
  value: T | undefined;
  takers: ((v: T) => void)[] = [];
  putters: [T, () => void][] = [];
  take(): Promise<T> {
    if (!this.full) return new Promise((resolve) => this.takers.push(resolve));
    const v = this.value as T;
    const p = this.putters.shift();
    if (p) {
      this.value = p[0];
      p[1]();
    } else {
      this.full = false;
      this.value = undefined;
    }
    return Promise.resolve(v);
  }
  put(v: T): Promise<void> {
    if (this.full) return new Promise((resolve) => this.putters.push([v, resolve]));
    const t = this.takers.shift();
    if (t) t(v);
    else {
      this.full = true;
      this.value = v;
    }
    return Promise.resolve();
  }
}

/** A hand-written race of two channel reads and a timer that removes the losers. */
function plainSelect(a: PlainChan<number>, b: PlainChan<number>, ms: number): Promise<number> {
  if (a.items.length > 0) return Promise.resolve(a.items.shift() as number);
  if (b.items.length > 0) return Promise.resolve(b.items.shift() as number);
  return new Promise((resolve) => {
    let done = false;
    const finish = (v: number) => {
      if (done) return false;
      done = true;
      const i = a.waiters.indexOf(wa);
      if (i >= 0) a.waiters.splice(i, 1);
      const j = b.waiters.indexOf(wb);
      if (j >= 0) b.waiters.splice(j, 1);
      clearTimeout(timer);
      resolve(v);
      return true;
    };
    const wa = (v: number) => finish(v);
    const wb = (v: number) => finish(v);
    a.waiters.push(wa);
    b.waiters.push(wb);
    const timer = setTimeout(() => finish(-1), ms);
  });
}

// ---- producer/consumer scenarios ----------------------------------------------------------

/** n messages split over p producers and p consumers; per-message cost is what we time. */
function split(n: number, p: number): number {
  return Math.max(1, Math.ceil(n / p));
}

function quiesceChan(p: number): Candidate {
  return {
    name: 'quiesce Chan',
    run: (n) =>
      spawn(async () => {
        const c = new Chan<number>();
        const per = split(n, p);
        const ts = [];
        for (let k = 0; k < p; k++) {
          ts.push(
            spawn(async () => {
              for (let i = 0; i < per; i++) {
                c.write(i);
                await null;
              }
            }),
            spawn(async () => {
              for (let i = 0; i < per; i++) sink += await c.read();
            }),
          );
        }
        for (const t of ts) await t.wait();
      }).wait(),
  };
}

function quiesceQueue(p: number): Candidate {
  return {
    name: `quiesce Queue(${CAPACITY})`,
    run: (n) =>
      spawn(async () => {
        const q = new Queue<number>(CAPACITY);
        const per = split(n, p);
        const ts = [];
        for (let k = 0; k < p; k++) {
          ts.push(
            spawn(async () => {
              for (let i = 0; i < per; i++) await q.put(i);
            }),
            spawn(async () => {
              for (let i = 0; i < per; i++) sink += await q.get();
            }),
          );
        }
        for (const t of ts) await t.wait();
      }).wait(),
  };
}

function plainChan(p: number): Candidate {
  return {
    name: 'plain array+promise',
    run: async (n) => {
      const c = new PlainChan<number>();
      const per = split(n, p);
      const ts = [];
      for (let k = 0; k < p; k++) {
        ts.push(
          (async () => {
            for (let i = 0; i < per; i++) {
              c.write(i);
              await null;
            }
          })(),
          (async () => {
            for (let i = 0; i < per; i++) sink += await c.read();
          })(),
        );
      }
      await Promise.all(ts);
    },
  };
}

function plainQueue(p: number): Candidate {
  return {
    name: `plain bounded(${CAPACITY})`,
    run: async (n) => {
      const q = new PlainQueue<number>(CAPACITY);
      const per = split(n, p);
      const ts = [];
      for (let k = 0; k < p; k++) {
        ts.push(
          (async () => {
            for (let i = 0; i < per; i++) await q.put(i);
          })(),
          (async () => {
            for (let i = 0; i < per; i++) sink += await q.get();
          })(),
        );
      }
      await Promise.all(ts);
    },
  };
}

function effectQueue(p: number, capacity: number | null): Candidate {
  return {
    name: capacity === null ? 'Effect Queue.unbounded' : `Effect Queue.bounded(${capacity})`,
    run: (n) =>
      Effect.runPromise(
        Effect.gen(function* () {
          const q =
            capacity === null
              ? yield* EQueue.unbounded<number>()
              : yield* EQueue.bounded<number>(capacity);
          const per = split(n, p);
          const fibers = [];
          for (let k = 0; k < p; k++) {
            fibers.push(
              yield* Effect.forkChild(
                Effect.gen(function* () {
                  for (let i = 0; i < per; i++) yield* EQueue.offer(q, i);
                }),
              ),
              yield* Effect.forkChild(
                Effect.gen(function* () {
                  for (let i = 0; i < per; i++) sink += yield* EQueue.take(q);
                }),
              ),
            );
          }
          for (const f of fibers) yield* Fiber.join(f);
        }),
      ),
  };
}

// ---- MVar round trip ----------------------------------------------------------------------

const mvarCandidates: Candidate[] = [
  {
    name: 'quiesce MVar',
    run: (n) =>
      spawn(async () => {
        const ping = new MVar<number>();
        const pong = new MVar<number>();
        const echo = spawn(async () => {
          for (let i = 0; i < n; i++) await pong.put(await ping.take());
        });
        for (let i = 0; i < n; i++) {
          await ping.put(i);
          sink += await pong.take();
        }
        await echo.wait();
      }).wait(),
  },
  {
    name: 'plain promise MVar',
    run: async (n) => {
      const ping = new PlainMVar<number>();
      const pong = new PlainMVar<number>();
      const echo = (async () => {
        for (let i = 0; i < n; i++) await pong.put(await ping.take());
      })();
      for (let i = 0; i < n; i++) {
        await ping.put(i);
        sink += await pong.take();
      }
      await echo;
    },
  },
  {
    name: 'Effect Queue.bounded(1)',
    run: (n) =>
      Effect.runPromise(
        Effect.gen(function* () {
          const ping = yield* EQueue.bounded<number>(1);
          const pong = yield* EQueue.bounded<number>(1);
          const echo = yield* Effect.forkChild(
            Effect.gen(function* () {
              for (let i = 0; i < n; i++) yield* EQueue.offer(pong, yield* EQueue.take(ping));
            }),
          );
          for (let i = 0; i < n; i++) {
            yield* EQueue.offer(ping, i);
            sink += yield* EQueue.take(pong);
          }
          yield* Fiber.join(echo);
        }),
      ),
  },
];

// ---- select over 3 events -----------------------------------------------------------------

const selectCandidates: Candidate[] = [
  {
    name: 'quiesce select',
    run: (n) =>
      spawn(async () => {
        const a = new Chan<number>();
        const b = new Chan<number>();
        const producer = spawn(async () => {
          for (let i = 0; i < n; i++) {
            (i & 1 ? a : b).write(i);
            await null;
          }
        });
        for (let i = 0; i < n; i++) {
          const r = await select(a.readEvent(), b.readEvent(), after(FAR));
          if (r.index !== 2 && !r.value.done) sink += r.value.value;
        }
        await producer.wait();
      }).wait(),
  },
  {
    name: 'plain race+setTimeout',
    run: async (n) => {
      const a = new PlainChan<number>();
      const b = new PlainChan<number>();
      const producer = (async () => {
        for (let i = 0; i < n; i++) {
          (i & 1 ? a : b).write(i);
          await null;
        }
      })();
      for (let i = 0; i < n; i++) sink += await plainSelect(a, b, FAR);
      await producer;
    },
  },
  {
    name: 'Effect raceAll',
    run: (n) =>
      Effect.runPromise(
        Effect.gen(function* () {
          const a = yield* EQueue.unbounded<number>();
          const b = yield* EQueue.unbounded<number>();
          const producer = yield* Effect.forkChild(
            Effect.gen(function* () {
              for (let i = 0; i < n; i++) {
                yield* EQueue.offer(i & 1 ? a : b, i);
                yield* Effect.yieldNow;
              }
            }),
          );
          for (let i = 0; i < n; i++) {
            sink += yield* Effect.raceAll([
              EQueue.take(a),
              EQueue.take(b),
              Effect.as(Effect.sleep(FAR), -1),
            ]);
          }
          yield* Fiber.join(producer);
        }),
      ),
  },
];

// ---- report -------------------------------------------------------------------------------

function perSecond(m: Measurement): string {
  const v = 1e9 / m.median;
  return v >= 1e6 ? `${(v / 1e6).toFixed(2)} M/s` : `${(v / 1e3).toFixed(0)} k/s`;
}

function table(title: string, ms: Measurement[], plain: string, effect: string): void {
  const p = pick(ms, plain);
  const e = pick(ms, effect);
  console.log(`\n${title}  (median of ${p.rounds} rounds)`);
  printRows([
    ['candidate', 'per msg', 'msgs/s', 'min', 'max', `× ${plain}`, `× ${effect}`],
    ...ms.map((m) => [
      m.name,
      formatNs(m.median),
      perSecond(m),
      formatNs(m.min),
      formatNs(m.max),
      `${(m.median / p.median).toFixed(2)}×`,
      `${(m.median / e.median).toFixed(2)}×`,
    ]),
  ]);
}

async function main(): Promise<void> {
  const started = performance.now();
  console.log(`bench/sync — ${describeMachine()}`);
  console.log('cost per message (lower is better); ratios > 1 mean slower than that column\n');
  const verdicts: Verdict[] = [];
  const x = (r: number) => `${r.toFixed(2)}×`;

  for (const p of [1, 4]) {
    const label = `${p} producer${p > 1 ? 's' : ''} / ${p} consumer${p > 1 ? 's' : ''}`;
    const chan = await measure([quiesceChan(p), plainChan(p), effectQueue(p, null)]);
    table(`Chan (unbounded), ${label}`, chan, 'plain array+promise', 'Effect Queue.unbounded');
    const queue = await measure([quiesceQueue(p), plainQueue(p), effectQueue(p, CAPACITY)]);
    table(
      `Queue (bounded ${CAPACITY}), ${label}`,
      queue,
      `plain bounded(${CAPACITY})`,
      `Effect Queue.bounded(${CAPACITY})`,
    );
    for (const [name, ms, plain, effect] of [
      ['Chan', chan, 'plain array+promise', 'Effect Queue.unbounded'],
      [
        `Queue(${CAPACITY})`,
        queue,
        `plain bounded(${CAPACITY})`,
        `Effect Queue.bounded(${CAPACITY})`,
      ],
    ] as const) {
      const q = ms[0];
      const e = pick(ms, effect);
      const pl = pick(ms, plain);
      verdicts.push(
        {
          target: `${name} ${p}/${p} faster than Effect`,
          measured: `${x(e.median / q.median)} faster (${perSecond(q)} vs ${perSecond(e)})`,
          met: q.median < e.median,
        },
        {
          target: `${name} ${p}/${p} within 2x of plain`,
          measured: `${x(q.median / pl.median)} the plain cost`,
          met: q.median <= 2 * pl.median,
        },
      );
    }
  }

  const mvar = await measure(mvarCandidates);
  table(
    'MVar take/put round trip (per round trip)',
    mvar,
    'plain promise MVar',
    'Effect Queue.bounded(1)',
  );
  const sel = await measure(selectCandidates);
  table(
    'select over 3 events: 2 channels + a timer (per select)',
    sel,
    'plain race+setTimeout',
    'Effect raceAll',
  );
  for (const [name, ms, plain, effect] of [
    ['MVar round trip', mvar, 'plain promise MVar', 'Effect Queue.bounded(1)'],
    ['select over 3', sel, 'plain race+setTimeout', 'Effect raceAll'],
  ] as const) {
    const q = ms[0];
    verdicts.push({
      target: `${name} (info)`,
      measured: `${x(q.median / pick(ms, plain).median)} plain, ${x(
        pick(ms, effect).median / q.median,
      )} faster than Effect`,
      met: true,
    });
  }

  const missed = printVerdicts('targets (issue 3: quiesce/sync benchmark)', verdicts);
  console.log(
    `\n${missed === 0 ? 'all targets met' : `${missed} target(s) not met`}; ` +
      `bench/sync took ${((performance.now() - started) / 1000).toFixed(1)} s (sink ${sink > 0 ? 'ok' : '?'})`,
  );
}

await main();
