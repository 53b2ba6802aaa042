/**
 * The core's costs, side by side with the alternatives, in one process (see lib.ts for method).
 *
 * What it prints, and the targets it checks:
 * 1. spawn+join: quiesce `spawn(fn).wait()` against a raw async call, Effect v4
 *    (`forkChild` + `Fiber.join` inside one `runPromise`) and Effection v4 (`spawn` inside one
 *    `run`). Target: at least 4× cheaper than Effect.
 * 2. `timeout` around an operation that finishes in time, against a bare
 *    setTimeout+clearTimeout pair, `Effect.timeout`, p-timeout and `AbortSignal.timeout` with
 *    `Promise.race`. Target: cheaper than the bare pair (no host timer per call).
 * 3. `checkpoint()` against `await undefined`, outside and inside a task.
 * 4. The building blocks those paths are made of (AsyncLocalStorage.run, Set churn, clock
 *    reads, timer ref toggles), so a profile's suggestions can be checked in the same run.
 * 5. One million sequential timeouts: heap after GC, host timers left, the core's pending
 *    deadlines. Targets: flat heap, no timer left. The same for `AbortSignal.timeout`.
 * 6. With `BENCH_BASELINE=<dir>` (a checkout of another commit, e.g. `git archive <rev> | tar
 *    -x -C <dir>`, with `node_modules` linked in), that checkout's spawn+wait, timeout and
 *    checkpoint run in the same rounds as ours, so a change's cost is a same-run ratio.
 *    Targets: spawn+join and timeout at most 10% slower than the baseline.
 * Target throughout: `await checkpoint()` at most 1.2× `await undefined`, outside and in a task.
 */
import { AsyncLocalStorage, AsyncResource } from 'node:async_hooks';
import { Effect, Fiber } from 'effect';
import { run as effectionRun, spawn as effectionSpawn } from 'effection';
import pTimeout from 'p-timeout';
import { join, resolve } from 'node:path';
import { checkpoint, spawn, timeout } from '../src/core/index.ts';
import { hostTimerActive, pendingDeadlines } from '../src/core/internal.ts';
import {
  activeResources,
  type Candidate,
  canCollect,
  describeMachine,
  formatBytes,
  formatNs,
  isQuick,
  type Measurement,
  measure,
  memory,
  pause,
  pick,
  printRows,
  printTable,
  printVerdicts,
  type Verdict,
} from './lib.ts';

// Results flow into `sink` so no loop body can be optimized away; it is checked at the end.
let sink = 0;
const op = async () => 1;
const noop = () => {};
const LIMIT_MS = 1000;

/** Runs `body(n)` inside a quiesce task, to measure what code inside a task pays. */
const inTask = (body: (n: number) => Promise<void>) => (n: number) => spawn(() => body(n)).wait();

type Core = typeof import('../src/core/index.ts');
const baselineDir = process.env.BENCH_BASELINE;
/** The core of another checkout (see item 6 of the header), or null. */
const before: Core | null = baselineDir
  ? ((await import(join(resolve(baselineDir), 'src/core/index.ts'))) as Core)
  : null;

// ---- 1. spawn + join ----------------------------------------------------------------------

async function rawCall(n: number): Promise<void> {
  for (let i = 0; i < n; i++) sink += await (async () => i)();
}

async function quiesceSpawn(n: number): Promise<void> {
  for (let i = 0; i < n; i++) sink += await spawn(async () => i).wait();
}

function effectFork(n: number): Promise<void> {
  return Effect.runPromise(
    Effect.gen(function* () {
      for (let i = 0; i < n; i++) {
        const fiber = yield* Effect.forkChild(Effect.succeed(i));
        sink += yield* Fiber.join(fiber);
      }
    }),
  );
}

async function effectionSpawnJoin(n: number): Promise<void> {
  await effectionRun(function* () {
    for (let i = 0; i < n; i++) {
      // biome-ignore lint/correctness/useYield: a child that returns at once is what we time
      const task = yield* effectionSpawn(function* () {
        return i;
      });
      sink += yield* task;
    }
  });
}

const spawnCandidates: Candidate[] = [
  { name: 'raw async call', run: rawCall },
  { name: 'quiesce spawn+wait', run: quiesceSpawn },
  { name: 'quiesce spawn+wait in task', run: inTask(quiesceSpawn) },
  { name: 'Effect forkChild+join', run: effectFork },
  { name: 'Effection spawn+join', run: effectionSpawnJoin },
];
if (before) {
  const b = before;
  spawnCandidates.push({
    name: 'baseline spawn+wait',
    run: async (n) => {
      for (let i = 0; i < n; i++) sink += await b.spawn(async () => i).wait();
    },
  });
}

// ---- 2. timeout around an operation that finishes in time ----------------------------------

async function rawAwait(n: number): Promise<void> {
  for (let i = 0; i < n; i++) sink += await op();
}

async function bareTimer(n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const t = setTimeout(noop, LIMIT_MS);
    try {
      sink += await op();
    } finally {
      clearTimeout(t);
    }
  }
}

async function quiesceTimeout(n: number): Promise<void> {
  for (let i = 0; i < n; i++) sink += (await timeout(LIMIT_MS, op)) ?? 0;
}

/** Effect.timeout around the same promise-returning operation as every other candidate. */
function effectTimeout(n: number): Promise<void> {
  return Effect.runPromise(
    Effect.gen(function* () {
      for (let i = 0; i < n; i++) sink += yield* Effect.timeout(Effect.promise(op), LIMIT_MS);
    }),
  );
}

/** Effect's best case: the operation is a pure, synchronous effect (no promise at all). */
function effectTimeoutPure(n: number): Promise<void> {
  return Effect.runPromise(
    Effect.gen(function* () {
      for (let i = 0; i < n; i++) sink += yield* Effect.timeout(Effect.succeed(1), LIMIT_MS);
    }),
  );
}

async function pTimeoutRace(n: number): Promise<void> {
  for (let i = 0; i < n; i++) sink += await pTimeout(op(), { milliseconds: LIMIT_MS });
}

/**
 * A bare pair while other timers of the same duration are pending, as in a server with many
 * requests in flight: Node then keeps the per-duration timer list alive between calls, which
 * makes each pair several times cheaper than when every call creates and drops that list.
 */
async function bareTimerSharedList(n: number): Promise<void> {
  const background = setInterval(noop, LIMIT_MS);
  try {
    await bareTimer(n);
  } finally {
    clearInterval(background);
  }
}

/**
 * The platform idiom: race the operation against an `AbortSignal.timeout`'s abort event.
 * Its limit is 1 ms longer than the others' on purpose: its timers stay pending after the call
 * and would otherwise keep Node's 1000 ms timer list alive for the next candidate, which makes
 * a bare setTimeout+clearTimeout pair look cheaper than it is alone.
 */
async function abortSignalOnce(): Promise<number> {
  const signal = AbortSignal.timeout(LIMIT_MS + 1);
  let onAbort = noop;
  const expired = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([op(), expired]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

async function abortSignalRace(n: number): Promise<void> {
  for (let i = 0; i < n; i++) sink += await abortSignalOnce();
}

const timeoutCandidates: Candidate[] = [
  { name: 'raw await op() (no limit)', run: rawAwait },
  { name: 'setTimeout+clearTimeout', run: bareTimer },
  { name: 'setTimeout+clearTimeout, list shared', run: bareTimerSharedList },
  { name: 'quiesce timeout', run: quiesceTimeout },
  { name: 'quiesce timeout in task', run: inTask(quiesceTimeout) },
  { name: 'Effect.timeout(promise op)', run: effectTimeout },
  { name: 'Effect.timeout(succeed)', run: effectTimeoutPure },
  { name: 'p-timeout', run: pTimeoutRace },
  { name: 'AbortSignal.timeout+race', run: abortSignalRace },
];
if (before) {
  const b = before;
  timeoutCandidates.push({
    name: 'baseline timeout',
    run: async (n) => {
      for (let i = 0; i < n; i++) sink += (await b.timeout(LIMIT_MS, op)) ?? 0;
    },
  });
}

// ---- 3. checkpoint -------------------------------------------------------------------------

async function awaitUndefined(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await undefined;
  sink += n;
}

async function checkpoints(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await checkpoint();
  sink += n;
}

const checkpointCandidates: Candidate[] = [
  { name: 'await undefined', run: awaitUndefined },
  { name: 'quiesce checkpoint', run: checkpoints },
  { name: 'await undefined in task', run: inTask(awaitUndefined) },
  { name: 'quiesce checkpoint in task', run: inTask(checkpoints) },
];
if (before) {
  const b = before;
  const baselineCheckpoints = async (n: number) => {
    for (let i = 0; i < n; i++) await b.checkpoint();
    sink += n;
  };
  checkpointCandidates.push(
    { name: 'baseline checkpoint', run: baselineCheckpoints },
    {
      name: 'baseline checkpoint in task',
      run: (n) => b.spawn(() => baselineCheckpoints(n)).wait(),
    },
  );
}

// ---- 4. building blocks: what the core's hot paths are made of -----------------------------

const als = new AsyncLocalStorage<object>();
const store = { task: null };
const one = (x: number) => x;

function alsRun(n: number): void {
  for (let i = 0; i < n; i++) sink += als.run(store, one, i);
}

function enterOnce(x: number): number {
  als.enterWith(store);
  return x;
}

/** One frame per call instead of two: the resource restores the caller's frame by exchange. */
function alsViaResource(n: number): void {
  for (let i = 0; i < n; i++) sink += new AsyncResource('b').runInAsyncScope(enterOnce, null, i);
}

class Node0 {
  prev: Node0 | null = null;
  next: Node0 | null = null;
}
const setOf = new Set<Node0>();
const listHead = new Node0();

function setChurn(n: number): void {
  for (let i = 0; i < n; i++) {
    const x = new Node0();
    setOf.add(x);
    setOf.delete(x);
  }
}

/** What an intrusive doubly linked list costs for the same add+delete of a fresh node. */
function listChurn(n: number): void {
  for (let i = 0; i < n; i++) {
    const x = new Node0();
    x.next = listHead.next;
    x.prev = listHead;
    if (listHead.next) listHead.next.prev = x;
    listHead.next = x;
    listHead.next = x.next;
    if (x.next) x.next.prev = listHead;
  }
}

function clockReads(n: number): void {
  for (let i = 0; i < n; i++) sink += performance.now() > 0 ? 1 : 0;
}

const parked = setTimeout(noop, 2 ** 30);
parked.unref();
function refToggle(n: number): void {
  for (let i = 0; i < n; i++) {
    parked.ref();
    parked.unref();
  }
}

let lastPromise: Promise<number> | null = null;
function promiseWithResolver(n: number): void {
  for (let i = 0; i < n; i++) {
    let resolve = noop as (v: number) => void;
    lastPromise = new Promise<number>((r) => {
      resolve = r;
    });
    resolve(i);
  }
}

const blockCandidates: Candidate[] = [
  {
    name: 'empty loop (sink += i)',
    run: (n) => {
      for (let i = 0; i < n; i++) sink += one(i);
    },
  },
  { name: 'AsyncLocalStorage.run', run: alsRun },
  { name: 'AsyncResource+enterWith', run: alsViaResource },
  { name: 'Set add+delete (new obj)', run: setChurn },
  { name: 'linked list add+delete', run: listChurn },
  { name: 'performance.now()', run: clockReads },
  { name: 'timer.ref()+unref()', run: refToggle },
  { name: 'new Promise+resolve', run: promiseWithResolver },
];

// ---- 5. a million timeouts -----------------------------------------------------------------

interface LeakReport {
  name: string;
  count: number;
  nsPerOp: number;
  rssGrowth: number;
  heapDelta: number;
  heapDeltaLater: number;
  timersBefore: number;
  timersAfter: number;
  samples: number[];
}

/** Runs `once` `count` times in sequence and reports what is left behind. */
async function leakRun(
  name: string,
  count: number,
  once: () => Promise<number>,
): Promise<LeakReport> {
  const before = memory();
  const timersBefore = activeResources().Timeout ?? 0;
  const samples: number[] = [];
  const step = count / 4;
  let peakRss = before.rss;
  const t0 = performance.now();
  for (let i = 1; i <= count; i++) {
    sink += await once();
    if (i % step === 0) {
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
      samples.push(memory().heap - before.heap);
    }
  }
  const elapsed = performance.now() - t0;
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
  const after = memory();
  const timersAfter = activeResources().Timeout ?? 0;
  // What is still held only because something (a host timer) is pending: let it fire.
  await pause(LIMIT_MS + 200);
  const later = memory();
  return {
    name,
    count,
    nsPerOp: (elapsed * 1e6) / count,
    rssGrowth: peakRss - before.rss,
    heapDelta: after.heap - before.heap,
    heapDeltaLater: later.heap - before.heap,
    timersBefore,
    timersAfter,
    samples,
  };
}

// ---- 6. CPU time against the baseline ----------------------------------------------------

/**
 * The baseline comparison once more in CPU time (`process.cpuUsage`), not wall time: on a
 * shared machine whose load deschedules this process, wall-time medians of two candidates can
 * differ by 2x run to run, while the CPU each one burns stays put. Interleaved rounds; the
 * median and the 20th-80th percentile range per candidate, ns per operation.
 */
async function cpuAgainstBaseline(): Promise<Map<string, number>> {
  const find = (list: Candidate[], name: string) => list.find((c) => c.name === name)!.run;
  const pairs: [string, Candidate['run'], number][] = [
    ['await undefined', awaitUndefined, 1],
    ['quiesce checkpoint', checkpoints, 1],
    ['baseline checkpoint', find(checkpointCandidates, 'baseline checkpoint'), 1],
    ['quiesce spawn+wait', quiesceSpawn, 10],
    ['baseline spawn+wait', find(spawnCandidates, 'baseline spawn+wait'), 10],
    ['quiesce timeout', quiesceTimeout, 4],
    ['baseline timeout', find(timeoutCandidates, 'baseline timeout'), 4],
  ];
  const n = isQuick ? 20_000 : 200_000;
  const rounds = isQuick ? 3 : 21;
  const samples = new Map<string, number[]>(pairs.map(([name]) => [name, []]));
  for (let r = 0; r < rounds; r++) {
    for (const [name, run, div] of pairs) {
      const c0 = process.cpuUsage();
      await run(n / div);
      const c = process.cpuUsage(c0);
      samples.get(name)!.push(((c.user + c.system) * 1e3) / (n / div));
    }
  }
  const at = (xs: number[], p: number) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length * p)];
  const medians = new Map<string, number>();
  const rows: string[][] = [['candidate', 'CPU/op (median)', 'p20', 'p80']];
  for (const [name, xs] of samples) {
    medians.set(name, at(xs, 0.5));
    rows.push([name, formatNs(at(xs, 0.5)), formatNs(at(xs, 0.2)), formatNs(at(xs, 0.8))]);
  }
  console.log(`\nCPU time against the baseline (${rounds} interleaved rounds)`);
  printRows(rows);
  return medians;
}

// ---- main ----------------------------------------------------------------------------------

function row(r: LeakReport): string[] {
  return [
    r.name,
    r.count.toLocaleString('en-US'),
    formatNs(r.nsPerOp),
    formatBytes(r.rssGrowth),
    formatBytes(r.heapDelta),
    formatBytes(Math.max(0, r.heapDelta) / r.count),
    formatBytes(r.heapDeltaLater),
    `${r.timersBefore} → ${r.timersAfter}`,
  ];
}

async function main(): Promise<void> {
  const started = performance.now();
  console.log(`bench/core — ${describeMachine()}`);
  console.log(`timeout limit ${LIMIT_MS} ms around \`async () => 1\`; ns per operation\n`);

  const spawnJoin = await measure(spawnCandidates);
  printTable('spawn + join', spawnJoin, 'raw async call');

  const timeouts = await measure(timeoutCandidates);
  printTable(
    'timeout around an operation that finishes in time',
    timeouts,
    'setTimeout+clearTimeout',
  );
  // AbortSignal.timeout leaves a pending host timer per call; let them fire before going on.
  await pause(LIMIT_MS + 200);

  const checks = await measure(checkpointCandidates);
  printTable('checkpoint', checks, 'await undefined');
  const cpu = before ? await cpuAgainstBaseline() : null;

  const blocks = await measure(blockCandidates, { batchMs: 50, warmupMs: 200 });
  printTable(
    'building blocks of the hot paths (synchronous, no await)',
    blocks,
    'empty loop (sink += i)',
  );

  const million = isQuick ? 50_000 : 1_000_000;
  const asCount = isQuick ? 20_000 : 200_000;
  const q = await leakRun('quiesce timeout', million, () =>
    timeout(LIMIT_MS, op).then((v) => v ?? 0),
  );
  const deadlinesLeft = pendingDeadlines();
  const hostTimer = hostTimerActive();
  const a = await leakRun('AbortSignal.timeout+race', asCount, abortSignalOnce);
  console.log(
    `\nsequential timeouts — what is left behind${canCollect ? '' : ' (no gc: unreliable)'}`,
  );
  printRows([
    [
      'run',
      'count',
      'per op',
      'peak RSS +',
      'heap Δ (gc)',
      'retained/call',
      `heap Δ +${LIMIT_MS + 200} ms`,
      'timers',
    ],
    row(q),
    row(a),
  ]);
  console.log(
    `  quiesce heap Δ after each quarter: ${q.samples.map(formatBytes).join(', ')}; ` +
      `pendingDeadlines() = ${deadlinesLeft}, hostTimerActive() = ${hostTimer}`,
  );
  console.log(
    `  AbortSignal.timeout is bounded to ${asCount.toLocaleString('en-US')} calls (its timers are ` +
      `unref'd, so "timers" cannot see them; the heap they pin is freed only when they fire).\n` +
      '  RSS + is measured from the RSS of this process at the start of each run, which earlier ' +
      'sections already grew: the heap columns are the reliable ones.',
  );

  const verdicts = summarize(spawnJoin, timeouts, checks, q, deadlinesLeft, hostTimer);
  if (cpu) {
    const r = (a: string, b: string) => cpu.get(a)! / cpu.get(b)!;
    verdicts.push(
      {
        target: 'CPU: checkpoint <= 1.2x await undefined',
        measured: `${r('quiesce checkpoint', 'await undefined').toFixed(2)}×`,
        met: r('quiesce checkpoint', 'await undefined') <= 1.2,
      },
      {
        target: 'CPU: spawn+join at most 10% slower than the baseline',
        measured: `${r('quiesce spawn+wait', 'baseline spawn+wait').toFixed(2)}×`,
        met: r('quiesce spawn+wait', 'baseline spawn+wait') <= 1.1,
      },
      {
        target: 'CPU: timeout at most 10% slower than the baseline',
        measured: `${r('quiesce timeout', 'baseline timeout').toFixed(2)}×`,
        met: r('quiesce timeout', 'baseline timeout') <= 1.1,
      },
    );
  }
  const missed = printVerdicts('targets', verdicts);
  console.log(
    `\n${missed === 0 ? 'all targets met' : `${missed} target(s) not met`}; ` +
      `bench/core took ${((performance.now() - started) / 1000).toFixed(1)} s (sink ${sink > 0 && lastPromise ? 'ok' : '?'})`,
  );
}

function summarize(
  spawnJoin: Measurement[],
  timeouts: Measurement[],
  checks: Measurement[],
  q: LeakReport,
  deadlinesLeft: number,
  hostTimer: boolean,
): Verdict[] {
  const qs = pick(spawnJoin, 'quiesce spawn+wait');
  const eff = pick(spawnJoin, 'Effect forkChild+join');
  const raw = pick(spawnJoin, 'raw async call');
  const qt = pick(timeouts, 'quiesce timeout');
  const bare = pick(timeouts, 'setTimeout+clearTimeout');
  const x = (r: number) => `${r.toFixed(2)}×`;
  const au = pick(checks, 'await undefined');
  const cp = pick(checks, 'quiesce checkpoint');
  const auTask = pick(checks, 'await undefined in task');
  const cpTask = pick(checks, 'quiesce checkpoint in task');
  const baseline: Verdict[] = [];
  if (before) {
    const bs = pick(spawnJoin, 'baseline spawn+wait');
    const bt = pick(timeouts, 'baseline timeout');
    baseline.push(
      {
        target: 'spawn+join at most 10% slower than the baseline',
        measured: `${x(qs.median / bs.median)} (${formatNs(qs.median)} vs ${formatNs(bs.median)})`,
        met: qs.median <= 1.1 * bs.median,
      },
      {
        target: 'timeout at most 10% slower than the baseline',
        measured: `${x(qt.median / bt.median)} (${formatNs(qt.median)} vs ${formatNs(bt.median)})`,
        met: qt.median <= 1.1 * bt.median,
      },
    );
  }
  return [
    {
      target: 'checkpoint <= 1.2x await undefined',
      measured: `${x(cp.median / au.median)} (${formatNs(cp.median)} vs ${formatNs(au.median)})`,
      met: cp.median <= 1.2 * au.median,
    },
    {
      target: 'checkpoint in a task <= 1.2x await undefined in a task',
      measured: `${x(cpTask.median / auTask.median)} (${formatNs(cpTask.median)} vs ${formatNs(auTask.median)})`,
      met: cpTask.median <= 1.2 * auTask.median,
    },
    ...baseline,
    {
      target: 'spawn+join >= 4x cheaper than Effect fork+join',
      measured: `${x(eff.median / qs.median)} (${formatNs(qs.median)} vs ${formatNs(eff.median)})`,
      met: eff.median / qs.median >= 4,
    },
    {
      target: 'spawn+join close to a raw async call',
      measured: `${x(qs.median / raw.median)} the raw call`,
      met: null,
    },
    {
      target: 'timeout cheaper than setTimeout+clearTimeout',
      measured: `${x(bare.median / qt.median)} (${formatNs(qt.median)} vs ${formatNs(bare.median)})`,
      met: qt.median < bare.median,
    },
    {
      target: `flat heap after ${q.count.toLocaleString('en-US')} timeouts (< 1 MiB)`,
      measured: formatBytes(q.heapDelta),
      met: canCollect && q.heapDelta < 2 ** 20,
    },
    {
      target: 'zero leftover timers and deadlines',
      measured: `timers ${q.timersBefore}→${q.timersAfter}, deadlines ${deadlinesLeft}, host ${hostTimer ? 'ref' : 'idle'}`,
      met: q.timersAfter <= q.timersBefore && deadlinesLeft === 0 && !hostTimer,
    },
  ];
}

await main();
