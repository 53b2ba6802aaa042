/**
 * Shared by the supervisor tests: start a real `quiesce run` process, talk to it, put load on
 * it, and always clean up every process that was started (by pid), even when a test fails.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type ControlResponse, controlRequest } from '../../src/supervisor/control.ts';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const NODE = process.execPath;
export const CLI = join(ROOT, 'src/cli/main.ts');
export const HELLO = join(ROOT, 'test/supervisor/fixtures/hello-worker.ts');
export const HTTP_WORKER = join(ROOT, 'examples/http-worker.ts');
export const PY_WORKER = join(ROOT, 'examples/python-worker.py');

// Every worker start strips and compiles the TypeScript it imports; Node's compile cache makes
// the second start of the same code several times cheaper, which keeps these tests short. One
// fresh directory per test file (each file runs in its own process), removed after its tests.
const COMPILE_CACHE = mkdtempSync(join(tmpdir(), 'quiesce-test-cache-'));
// The supervisors' runtime directory (default control sockets, compile cache): the test file's
// own, so nothing is ever created under the real <tmpdir>/quiesce-<uid> or $XDG_RUNTIME_DIR.
export const RUNTIME_DIR = mkdtempSync(join(tmpdir(), 'quiesce-test-run-'));
after(() => {
  rmSync(COMPILE_CACHE, { recursive: true, force: true });
  rmSync(RUNTIME_DIR, { recursive: true, force: true });
});

/**
 * An environment for child processes without the test runner's own variables, with the
 * runtime directory pointed at this file's temporary one. `extra` is applied last, so a test
 * can set (or, with `undefined`, remove) any variable — `NOTIFY_SOCKET` and `LISTEN_FDS`
 * included.
 */
export function cleanEnv(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    NODE_COMPILE_CACHE: COMPILE_CACHE,
    ...process.env,
    XDG_RUNTIME_DIR: RUNTIME_DIR,
  };
  for (const k of [
    'NODE_TEST_CONTEXT',
    'NOTIFY_SOCKET',
    'LISTEN_FDS',
    'LISTEN_PID',
    'LISTEN_FDNAMES',
  ]) {
    delete env[k];
  }
  Object.assign(env, extra);
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  return env;
}

function resources(): string[] {
  return process.getActiveResourcesInfo().sort();
}

/**
 * Registers a file-level check that the tests left no process, socket, pipe or timer open:
 * what is active after the last test is what was active before the first. (Node drops a
 * closed handle from the list a little after its 'close', hence the short grace.)
 */
export function checkNoLeftovers(): void {
  let baseline: string[] = [];
  before(() => {
    baseline = resources();
  });
  after(async () => {
    for (let i = 0; i < 40 && resources().join() !== baseline.join(); i++) {
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.deepEqual(resources(), baseline, 'handles left open by the tests');
  });
}

/** A temporary directory removed when the test ends. */
export function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-sup-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** True when `pid` runs now as a worker of the supervisor `supervisorPid` (its environment). */
function workerOf(pid: number, supervisorPid: number): boolean {
  try {
    const env = readFileSync(`/proc/${pid}/environ`, 'utf8');
    return env.split('\0').includes(`QUIESCE_SUPERVISOR_PID=${supervisorPid}`);
  } catch {
    return false;
  }
}

/** SIGKILLs process group `pgid` (a worker and whatever it started), and `pgid` itself. */
function killGroup(pgid: number): void {
  for (const target of [-pgid, pgid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {}
  }
}

/** True while process `pid` exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A running `quiesce run` under test. */
export interface Sup {
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly control: string;
  /** The first TCP listener's port. */
  readonly port: number;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** Every worker pid it has announced (starting/restarting lines). */
  workerPids(): number[];
  /** Resolves with the exit code (or 128+signal) when it exits. */
  readonly exited: Promise<number>;
  waitFor(re: RegExp, ms?: number): Promise<RegExpExecArray>;
  request(op: 'status' | 'reload' | 'stop'): Promise<ControlResponse>;
}

export interface StartOptions {
  /** Options before `--`; `--listen 127.0.0.1:0` and `--control` are added unless given. */
  args?: string[];
  /** The worker command. Default: the Hello/Goodbye fixture. */
  worker?: string[];
  env?: NodeJS.ProcessEnv;
  /** What to wait for before returning. Default: generation 1 serving. */
  until?: RegExp | null;
  /** Extra stdio entries, for the descriptor-leak test. */
  stdio?: (number | 'pipe' | 'ignore')[];
  /** Add no `--listen` (the sockets come from socket activation). */
  noListen?: boolean;
  /** Leave the control socket at its default location (no `--control` added). */
  defaultControl?: boolean;
  /** Spawn through this wrapper argv (e.g. python activating sockets), before node. */
  wrapper?: string[];
  t: TestContext;
  dir: string;
}

/** Starts `quiesce run` and registers its cleanup (supervisor and every worker, by pid). */
/**
 * Starts a supervisor over the fixture worker, whose behaviour each generation reads at start
 * from a mode file (see fixtures/hello-worker.ts); `deploy(mode)` changes what the next
 * generation will do, as a deploy would.
 */
export async function startWithMode(
  t: TestContext,
  mode: string,
  o?: Omit<StartOptions, 't' | 'dir'>,
): Promise<Sup & { deploy(mode: string): void }> {
  const dir = tempDir(t);
  const file = join(dir, 'mode');
  writeFileSync(file, mode);
  const sup = await startSupervisor({ ...o, t, dir, env: { ...o?.env, FIXTURE_MODE_FILE: file } });
  return Object.assign(sup, { deploy: (m: string) => writeFileSync(file, m) });
}

export async function startSupervisor(o: StartOptions): Promise<Sup> {
  const control = join(o.dir, 'control.sock');
  const args = [...(o.args ?? [])];
  if (!o.noListen && !args.some((a) => a.startsWith('--listen') || a === '-l'))
    args.push('--listen', '127.0.0.1:0');
  if (!o.defaultControl && !args.some((a) => a.startsWith('--control') || a === '--no-control')) {
    args.push('--control', control);
  }
  const worker = o.worker ?? [NODE, HELLO];
  const argv = [...(o.wrapper ?? []), NODE, CLI, 'run', ...args, '--', ...worker];
  const proc = spawn(argv[0], argv.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe', ...(o.stdio ?? [])],
    env: cleanEnv(o.env),
  });
  let err = '';
  const watchers = new Set<() => void>();
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    for (const w of watchers) w();
  });
  proc.stdout!.resume();
  // 'close': the process has exited and its stdio pipes are closed (no handle left behind).
  const closed = new Promise<void>((resolve) => proc.once('close', () => resolve()));
  const exited = new Promise<number>((resolve) => {
    proc.once('exit', (code, signal) => {
      resolve(code ?? 128 + (signal === 'SIGKILL' ? 9 : signal === 'SIGTERM' ? 15 : 0));
      for (const w of watchers) w();
    });
  });
  let exitCode: number | null = null;
  exited.then((c) => {
    exitCode = c;
  });
  const workerPids = () =>
    [...err.matchAll(/(?:starting|restarting worker[^:]*): pid ([\d, ?]+)/g)].flatMap((m) =>
      m[1]
        .split(',')
        .map((s) => Number(s.trim()))
        .filter((n) => n > 0),
    );
  const waitFor = (re: RegExp, ms = 30_000) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const check = () => {
        const m = re.exec(err);
        if (m) done(() => resolve(m));
        else if (exitCode !== null) {
          done(() => reject(new Error(`supervisor exited (${exitCode}) before ${re}:\n${err}`)));
        }
      };
      const timer = setTimeout(
        () => done(() => reject(new Error(`timed out waiting for ${re}:\n${err}`))),
        ms,
      );
      const done = (f: () => void) => {
        clearTimeout(timer);
        watchers.delete(check);
        f();
      };
      watchers.add(check);
      check();
    });
  o.t.after(async () => {
    if (exitCode === null) {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    // Only processes that are still this supervisor's workers: pids are recycled fast on a
    // busy machine (pid_max may be 32768), and a stale pid may now be another test's process.
    for (const pid of workerPids()) if (workerOf(pid, proc.pid!)) killGroup(pid);
    await closed;
  });
  const sup: Sup = {
    proc,
    pid: proc.pid!,
    control,
    port: 0,
    stderr: () => err,
    workerPids,
    exited,
    waitFor,
    request: (op) => controlRequest(control, { op }),
  };
  const listening =
    o.until === null ? null : await waitFor(/(?:listening|from systemd) on [^\n]*?:(\d+) /);
  if (o.until !== null) await waitFor(o.until ?? /generation 1 serving/);
  return { ...sup, port: listening ? Number(listening[1]) : 0 };
}

/** Runs the CLI to completion; returns its status and output. */
export function runCli(
  args: string[],
  options?: { env?: NodeJS.ProcessEnv; timeoutMs?: number; uid?: number; wrapper?: string[] },
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const argv = [...(options?.wrapper ?? []), NODE, CLI, ...args];
    const p = spawn(argv[0], argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: cleanEnv(options?.env),
    });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    p.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`quiesce ${args.join(' ')} timed out:\n${stderr}`));
    }, options?.timeoutMs ?? 15_000);
    p.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? 128 + (signal === 'SIGKILL' ? 9 : 15), stdout, stderr });
    });
  });
}

/** How one client connection ended. */
export type Outcome = 'ok' | 'refused' | 'reset' | 'timeout' | 'wrong';

const EXPECTED = 'Hello.\nGoodbye.\n';

/** One Hello/Goodbye exchange: connect, read to EOF, compare. */
export function hello(port: number, timeoutMs = 5000, host = '127.0.0.1'): Promise<Outcome> {
  return new Promise((resolve) => {
    const c = net.connect(port, host);
    let data = '';
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    const finish = (o: Outcome) => {
      clearTimeout(timer);
      c.destroy();
      resolve(o);
    };
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      data += d;
    });
    c.on('end', () => finish(data === EXPECTED ? 'ok' : 'wrong'));
    c.on('error', (e: NodeJS.ErrnoException) =>
      finish(
        e.code === 'ECONNREFUSED'
          ? 'refused'
          : e.code === 'ECONNRESET' || e.code === 'EPIPE'
            ? 'reset'
            : 'wrong',
      ),
    );
  });
}

/** One HTTP GET with keep-alive off; 'ok' when the body looks like http-worker's. */
export function httpGet(port: number, path = '/', timeoutMs = 5000): Promise<Outcome> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (o: Outcome) => {
      if (settled) return;
      settled = true;
      req.destroy();
      resolve(o);
    };
    const req: http.ClientRequest = http.get(
      { host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () =>
          finish(
            res.statusCode === 200 && /^hello from generation \d+/.test(body) ? 'ok' : 'wrong',
          ),
        );
        res.on('error', () => finish('reset'));
      },
    );
    req.on('timeout', () => {
      req.destroy();
      finish('timeout');
    });
    req.on('error', (e: NodeJS.ErrnoException) =>
      finish(
        e.code === 'ECONNREFUSED'
          ? 'refused'
          : e.code === 'ECONNRESET' || e.code === 'EPIPE'
            ? 'reset'
            : 'wrong',
      ),
    );
  });
}

/** Counts of outcomes of a load run. */
export type Tally = Record<Outcome, number>;

/**
 * Clients opening connections back to back until `stop()` (or `maxMs`, or `maxConnections`),
 * `concurrency` at a time. The invariant the tests check: every outcome is 'ok'.
 */
export function load(
  one: () => Promise<Outcome>,
  options?: { concurrency?: number; maxMs?: number; maxConnections?: number },
): { stop: () => Promise<Tally>; tally: Tally } {
  const tally: Tally = { ok: 0, refused: 0, reset: 0, timeout: 0, wrong: 0 };
  const concurrency = options?.concurrency ?? 4;
  const deadline = Date.now() + (options?.maxMs ?? 30_000);
  const max = options?.maxConnections ?? 100_000;
  let stopped = false;
  let started = 0;
  const loops = Array.from({ length: concurrency }, async () => {
    while (!stopped && Date.now() < deadline && started < max) {
      started++;
      tally[await one()]++;
    }
  });
  return {
    tally,
    stop: async () => {
      stopped = true;
      await Promise.all(loops);
      return tally;
    },
  };
}

/** Kills a helper process (by pid) and waits until it and its pipes are closed. */
export async function killAndWait(p: ChildProcess): Promise<void> {
  const closed = new Promise<void>((resolve) => p.once('close', () => resolve()));
  if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  else if (p.stdout?.closed !== false && p.stderr?.closed !== false) return; // 'close' came
  await closed;
}

/** Resolves when `pred` holds, polling; throws after `ms`. */
export async function until(
  pred: () => boolean | Promise<boolean>,
  ms = 10_000,
  what = 'condition',
) {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
