/**
 * Shared helpers for every `bench/<name>.ts`: calibrated batches, warm-up, candidates run in
 * alternating rounds in one process, medians, and ratio tables against a named baseline.
 *
 * What the numbers mean:
 * 1. A candidate is a batch function `run(n)` that performs n operations; its cost is the
 *    elapsed time of one batch divided by n (so a candidate may keep its loop inside its own
 *    runtime, as Effect's and Effection's do).
 * 2. Every candidate of a group runs once per round, in an order rotated each round, so slow
 *    drifts of the machine (thermal, other processes) spread over all of them; the figure
 *    reported is the median over rounds, with the spread (min–max) beside it.
 * 3. Each candidate is warmed up (about a second by default) before it is measured. The heap
 *    is deliberately NOT collected between batches: a forced full GC flushes compiled code and
 *    type feedback, and kept Effect's runtime 3–4× slower than it is when warm. A candidate may
 *    therefore pay for some garbage another left behind; rotation spreads that over all.
 *
 * Knobs (environment): `BENCH_ROUNDS` (default 9), `BENCH_MS` (ms per batch, default 100),
 * `BENCH_WARMUP_MS` (default 1000), `BENCH_QUICK=1` (3 rounds of 20 ms: a smoke run, not a measurement).
 */
import { availableParallelism, cpus } from 'node:os';

/** One contender in a comparison. */
export interface Candidate {
  /** Row label in the table. */
  readonly name: string;
  /** Performs `n` operations (sync or async) and returns when all are done. */
  readonly run: (n: number) => unknown;
}

/** The measured cost of one candidate. */
export interface Measurement {
  readonly name: string;
  /** Median ns per operation over the rounds. */
  readonly median: number;
  readonly min: number;
  readonly max: number;
  /** Operations per batch after calibration. */
  readonly batch: number;
  readonly rounds: number;
}

/** Options for `measure`. */
export interface MeasureOptions {
  /** Rounds per candidate. Default: `BENCH_ROUNDS` or 9. */
  rounds?: number;
  /** Target duration of one batch in ms. Default: `BENCH_MS` or 100. */
  batchMs?: number;
  /** Warm-up time per candidate in ms. Default: `BENCH_WARMUP_MS` or 1000. */
  warmupMs?: number;
}

const quick = process.env.BENCH_QUICK === '1' || process.argv.includes('--quick');

/** True for a smoke run (`BENCH_QUICK=1` or `--quick`): figures are not meaningful. */
export const isQuick = quick;

function envNumber(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

const defaultRounds = quick ? 3 : envNumber('BENCH_ROUNDS', 9);
const defaultBatchMs = quick ? 20 : envNumber('BENCH_MS', 100);
const defaultWarmupMs = quick ? 50 : envNumber('BENCH_WARMUP_MS', 1000);

const gcFn = (globalThis as { gc?: () => void }).gc;

/** Collects garbage if the process runs with `--expose-gc`; a no-op otherwise. */
export function collect(): void {
  if (gcFn) {
    gcFn();
    gcFn(); // a second pass reclaims what the first one's finalizers released
  }
}

/** Whether `collect()` really collects (heap figures are only meaningful then). */
export const canCollect = gcFn !== undefined;

/** Median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Milliseconds elapsed while `run(n)` performs n operations. */
async function timeBatch(c: Candidate, n: number): Promise<number> {
  const t0 = performance.now();
  await c.run(n);
  return performance.now() - t0;
}

/**
 * Warms a candidate up for `warmupMs` and returns n such that one batch takes about `batchMs`.
 * n is re-derived after every warm-up batch: JIT-compiled code can be several times faster
 * than what the first batches measured (Effect's runtime needs about a second to get there).
 */
async function calibrate(c: Candidate, batchMs: number, warmupMs: number): Promise<number> {
  const start = performance.now();
  let n = 1;
  let ms = await timeBatch(c, n);
  while (ms < batchMs / 4) {
    n *= 2;
    ms = await timeBatch(c, n);
  }
  n = Math.max(1, Math.round((n * batchMs) / ms));
  while (performance.now() - start < warmupMs) {
    ms = await timeBatch(c, n);
    n = Math.max(1, Math.round((n * batchMs) / Math.max(ms, 1e-3)));
  }
  return n;
}

/**
 * Measures every candidate in alternating rounds and returns their medians, in input order.
 * Progress goes to stderr so stdout holds only the tables.
 */
export async function measure(
  candidates: readonly Candidate[],
  options: MeasureOptions = {},
): Promise<Measurement[]> {
  const rounds = options.rounds ?? defaultRounds;
  const batchMs = options.batchMs ?? defaultBatchMs;
  const warmupMs = options.warmupMs ?? defaultWarmupMs;
  const batches: number[] = [];
  for (const c of candidates) batches.push(await calibrate(c, batchMs, warmupMs));
  const samples: number[][] = candidates.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < candidates.length; k++) {
      const i = (k + r) % candidates.length;
      const ms = await timeBatch(candidates[i], batches[i]);
      samples[i].push((ms * 1e6) / batches[i]);
    }
    process.stderr.write('.');
  }
  process.stderr.write('\n');
  return candidates.map((c, i) => ({
    name: c.name,
    median: median(samples[i]),
    min: Math.min(...samples[i]),
    max: Math.max(...samples[i]),
    batch: batches[i],
    rounds,
  }));
}

/** `1234.5` ns → `"1.23 µs"`; keeps three significant digits. */
export function formatNs(ns: number): string {
  if (ns >= 1e6) return `${(ns / 1e6).toPrecision(3)} ms`;
  if (ns >= 1e3) return `${(ns / 1e3).toPrecision(3)} µs`;
  return `${ns.toPrecision(3)} ns`;
}

/** `1536` → `"1.50 KiB"`, signed. */
export function formatBytes(b: number): string {
  const sign = b < 0 ? '-' : '';
  const a = Math.abs(b);
  if (a >= 2 ** 30) return `${sign}${(a / 2 ** 30).toFixed(2)} GiB`;
  if (a >= 2 ** 20) return `${sign}${(a / 2 ** 20).toFixed(2)} MiB`;
  if (a >= 2 ** 10) return `${sign}${(a / 2 ** 10).toFixed(2)} KiB`;
  return `${sign}${a.toFixed(0)} B`;
}

/** How many times cheaper `fast` is than `slow` (> 1 means `fast` wins). */
export function ratio(slow: Measurement, fast: Measurement): number {
  return slow.median / fast.median;
}

/** Finds a measurement by name; throws if a bench asks for one it did not measure. */
export function pick(ms: readonly Measurement[], name: string): Measurement {
  const m = ms.find((x) => x.name === name);
  if (!m) throw new Error(`bench: no candidate named ${JSON.stringify(name)}`);
  return m;
}

/** Prints rows as an aligned plain-text table (first row is the header). */
export function printRows(rows: readonly (readonly string[])[]): void {
  const widths = rows[0].map((_, j) => Math.max(...rows.map((r) => r[j].length)));
  for (const [i, r] of rows.entries()) {
    const cells = r.map((cell, j) => (j === 0 ? cell.padEnd(widths[j]) : cell.padStart(widths[j])));
    console.log(`  ${cells.join('  ')}`);
    if (i === 0) console.log(`  ${widths.map((w) => '-'.repeat(w)).join('  ')}`);
  }
}

/**
 * Prints one comparison: median per op, spread, and the ratio to `baseline` (`× base` > 1
 * means slower than the baseline).
 */
export function printTable(title: string, ms: readonly Measurement[], baseline: string): void {
  const base = pick(ms, baseline);
  console.log(`\n${title}  (median of ${base.rounds} rounds; ratio vs "${baseline}")`);
  printRows([
    ['candidate', 'median/op', 'min', 'max', `× ${baseline}`],
    ...ms.map((m) => [
      m.name,
      formatNs(m.median),
      formatNs(m.min),
      formatNs(m.max),
      `${(m.median / base.median).toFixed(2)}×`,
    ]),
  ]);
}

/** A line of the final summary: a target, the ratio measured, and whether it was met. */
export interface Verdict {
  readonly target: string;
  readonly measured: string;
  /** null for a line that informs and sets no target. */
  readonly met: boolean | null;
}

/** Prints the final verdicts; returns how many targets were not met. */
export function printVerdicts(title: string, vs: readonly Verdict[]): number {
  console.log(`\n${title}`);
  printRows([
    ['target', 'measured', 'verdict'],
    ...vs.map((v) => [v.target, v.measured, v.met === null ? 'info' : v.met ? 'met' : 'NOT MET']),
  ]);
  return vs.filter((v) => v.met === false).length;
}

/** Heap and RSS now, after a collection if possible. */
export function memory(): { heap: number; rss: number } {
  collect();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, rss: m.rss };
}

/** Counts of what keeps the event loop alive, by kind (`Timeout`, `TCPWRAP`, ...). */
export function activeResources(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of process.getActiveResourcesInfo()) out[k] = (out[k] ?? 0) + 1;
  return out;
}

/** Lets the loop run for `ms` (timers that are due fire meanwhile). */
export function pause(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The machine line every bench prints first, so figures are never read without it. */
export function describeMachine(): string {
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  return `node ${process.version} on ${process.platform}/${process.arch}, ${availableParallelism()} CPUs (${model})${
    canCollect ? '' : ' (no --expose-gc: heap figures are unreliable)'
  }${quick ? ' — QUICK RUN, figures not meaningful' : ''}`;
}
