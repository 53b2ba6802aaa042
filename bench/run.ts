/**
 * `npm run bench [-- name...] [-- --quick]`: runs the benchmarks, each in its own process.
 *
 * Guarantees:
 * 1. Every `bench/<name>.ts` except `run.ts` and `lib.ts` is a benchmark and is picked up
 *    without registering it here; with names given, only those run, in the order given.
 * 2. Benchmarks run one after the other, never side by side (they would measure each other),
 *    each in a fresh Node process (`process.execPath`, `--expose-gc`), so one bench's heap,
 *    JIT state and leftover timers cannot skew the next.
 * 3. A named benchmark that does not exist is reported and skipped, never fatal; the exit code
 *    is non-zero only if a benchmark failed or nothing at all could run.
 * 4. Flags (`--quick`) are passed on to every benchmark, and so is everything after the first
 *    flag: a flag's value (`reload --only quiesce --keep-alive on`) is not taken for a name.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const benchDir = import.meta.dirname;
const notBenches = new Set(['run', 'lib']);

function available(): string[] {
  return readdirSync(benchDir)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => f.slice(0, -3))
    .filter((n) => !notBenches.has(n) && !n.startsWith('_'))
    .sort();
}

/** Runs one bench file to completion, output straight to our terminal; resolves its exit code. */
function runOne(name: string, flags: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--expose-gc', join(benchDir, `${name}.ts`), ...flags], {
      stdio: 'inherit',
    });
    child.on('error', (e) => {
      console.error(`bench ${name}: could not start: ${e.message}`);
      resolve(1);
    });
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const first = args.findIndex((a) => a.startsWith('-'));
  const flags = first < 0 ? [] : args.slice(first);
  const names = (first < 0 ? args : args.slice(0, first)).map((a) =>
    a.replace(/^bench\/|\.ts$/g, ''),
  );
  const all = available();
  let chosen = all;
  if (names.length > 0) {
    chosen = [];
    for (const n of names) {
      if (all.includes(n)) chosen.push(n);
      else
        console.error(`bench: no bench/${n}.ts — skipped (available: ${all.join(', ') || 'none'})`);
    }
  }
  if (chosen.length === 0) {
    console.error('bench: nothing to run');
    return 1;
  }
  const failed: string[] = [];
  for (const name of chosen) {
    console.log(`\n=== bench/${name}.ts ===`);
    const t0 = performance.now();
    const code = await runOne(name, flags);
    const s = ((performance.now() - t0) / 1000).toFixed(1);
    console.log(
      `=== bench/${name}.ts: ${code === 0 ? 'done' : `FAILED (exit ${code})`} in ${s} s ===`,
    );
    if (code !== 0) failed.push(name);
  }
  if (failed.length > 0) console.error(`bench: failed: ${failed.join(', ')}`);
  return failed.length > 0 ? 1 : 0;
}

process.exitCode = await main();
