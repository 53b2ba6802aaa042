/**
 * `node bench/reload.ts [--quick] [--keep-alive] [--reloads N] [--rate R | --rate 0 --clients N]`
 *
 * Reload under continuous load, three ways side by side in one run, on one machine:
 * 1. quiesce: `quiesce run --workers 2` over a shared socket, reloaded through its control
 *    socket (the worker writes READY=1 when it listens).
 * 2. PM2: cluster mode, 2 instances, `pm2 reload` (wait_ready + process.send('ready'), and the
 *    app closes gracefully on SIGINT — PM2's own recommended set-up). PM2_HOME is a temporary
 *    directory and `pm2 kill` always runs at the end.
 * 3. Node cluster: a primary with 2 workers and a rolling restart (fork, wait 'listening',
 *    disconnect the old one, wait for its exit; one at a time).
 *
 * Every system runs the same HTTP app (written to a temporary directory as plain JS), and the
 * same load: R new requests a second on a fixed schedule (open loop, default 400/s), or with
 * `--rate 0` N clients back to back (closed loop); keep-alive off unless --keep-alive. For
 * each request the outcome (ok, refused, reset, timeout, wrong answer) and the latency are
 * recorded; a request overlapping a reload (from its trigger until the system reports it done,
 * plus 250 ms) counts in the reload window, the others after warm-up in the steady state.
 * Printed: failures by kind, p50/p99/max latency steady vs during reloads, the p99 ratio.
 * Target for quiesce: zero failures, reload p99 within 1.5× of steady p99.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { controlRequest } from '../src/supervisor/control.ts';

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(name);
const opt = (name: string, dflt: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const quick = flag('--quick') || process.env.BENCH_QUICK === '1';
const keepAlive = flag('--keep-alive');
// Reloads per system in all, spread over rounds; each round starts every system afresh, in an
// order rotated per round, so the noise of a shared machine falls on all of them alike.
const ROUNDS = opt('--rounds', quick ? 1 : 3);
const RELOADS = opt('--reloads', quick ? 3 : 12);
const CLIENTS = opt('--clients', 4);
// Requests per second, paced (open loop), or 0 for clients back to back (closed loop).
const RATE = opt('--rate', 400);
// Run one system only (by name prefix: quiesce, pm2, node), for quick looks.
const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : null;
const WARMUP_MS = quick ? 300 : 1000;
const STEADY_MS = quick ? 1000 : 3000;
const GAP_MS = quick ? 200 : 500;
const TAIL_MS = 250;
const REQUEST_TIMEOUT_MS = 5000;

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const NODE = process.execPath;
const CLI = join(ROOT, 'src/cli/main.ts');
const PM2 = join(ROOT, 'node_modules/pm2/bin/pm2');

// The app every system runs: the readiness protocols of all three, graceful on SIGINT/SIGTERM.
const APP = `
const http = require('node:http');
const fs = require('node:fs');
const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end('hello from ' + process.pid + '\\n');
});
const inherited = Number(process.env.LISTEN_FDS || 0) > 0;
server.listen(inherited ? { fd: 3 } : { port: Number(process.env.PORT), host: '127.0.0.1' }, () => {
  if (process.env.QUIESCE_READY_FD) {
    fs.writeSync(Number(process.env.QUIESCE_READY_FD), 'READY=1\\n');
    fs.closeSync(Number(process.env.QUIESCE_READY_FD));
  }
  if (process.send) process.send('ready');
});
const stop = () => { server.close(() => process.exit(0)); server.closeIdleConnections(); };
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
`;

// A Node cluster primary with a rolling restart on SIGHUP; prints "ready" and "reloaded N".
const PRIMARY = `
const cluster = require('node:cluster');
cluster.setupPrimary({ exec: require('node:path').join(__dirname, 'app.cjs') });
const fork = () => new Promise((resolve) => {
  const w = cluster.fork({ PORT: process.env.PORT });
  w.once('listening', () => resolve(w));
});
let workers = [];
let chain = (async () => {
  for (let i = 0; i < 2; i++) workers.push(await fork());
  console.log('ready');
})();
let n = 0;
process.on('SIGHUP', () => {
  chain = chain.then(async () => {
    const next = [];
    for (const old of workers) {
      next.push(await fork());
      const gone = new Promise((r) => old.once('exit', r));
      old.disconnect();
      await gone;
    }
    workers = next;
    console.log('reloaded ' + ++n);
  });
});
process.on('SIGTERM', () => {
  for (const w of Object.values(cluster.workers)) w.disconnect();
  cluster.on('exit', () => { if (Object.keys(cluster.workers).length === 0) process.exit(0); });
  setTimeout(() => process.exit(0), 5000).unref();
});
`;

type Outcome = 'ok' | 'refused' | 'reset' | 'timeout' | 'wrong';
interface Sample {
  start: number;
  end: number;
  outcome: Outcome;
}

const agent = keepAlive ? new http.Agent({ keepAlive: true, maxSockets: CLIENTS }) : undefined;

function request(port: number): Promise<Sample> {
  const start = performance.now();
  return new Promise((resolve) => {
    let done = false;
    const finish = (outcome: Outcome) => {
      if (done) return;
      done = true;
      resolve({ start, end: performance.now(), outcome });
    };
    const req = http.get(
      { host: '127.0.0.1', port, path: '/', agent: agent ?? false, timeout: REQUEST_TIMEOUT_MS },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () =>
          finish(res.statusCode === 200 && body.startsWith('hello from ') ? 'ok' : 'wrong'),
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
          : e.code === 'ECONNRESET' || e.code === 'EPIPE' || e.message === 'socket hang up'
            ? 'reset'
            : 'wrong',
      ),
    );
  });
}

function startLoad(port: number) {
  const samples: Sample[] = [];
  let stopped = false;
  const pending = new Set<Promise<void>>();
  const issue = () => {
    const p = request(port).then((s) => {
      samples.push(s);
      pending.delete(p);
    });
    pending.add(p);
  };
  let loops: Promise<void>[] = [];
  let ticker: ReturnType<typeof setInterval> | null = null;
  if (RATE > 0) {
    // Open loop: a fixed schedule, whatever the answers do (no coordinated omission).
    const t0 = performance.now();
    let issued = 0;
    ticker = setInterval(() => {
      const due = Math.floor(((performance.now() - t0) * RATE) / 1000);
      while (issued < due) {
        issued++;
        issue();
      }
    }, 5);
  } else {
    loops = Array.from({ length: CLIENTS }, async () => {
      while (!stopped) samples.push(await request(port));
    });
  }
  return {
    samples,
    stop: async () => {
      stopped = true;
      if (ticker) clearInterval(ticker);
      await Promise.all([...loops, ...pending]);
      agent?.destroy();
      return samples;
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function run(argv: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(argv[0], argv.slice(1), {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    p.stderr.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    p.on('close', (code) => resolve({ code: code ?? 1, out }));
  });
}

function waitOutput(p: ChildProcess, re: RegExp, ms = 20_000): Promise<RegExpExecArray> {
  let buf = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re}:\n${buf}`)), ms);
    const on = (d: string) => {
      buf += d;
      const m = re.exec(buf);
      if (m) {
        clearTimeout(timer);
        p.stdout?.off('data', on);
        p.stderr?.off('data', on);
        resolve(m);
      }
    };
    p.stdout?.setEncoding('utf8').on('data', on);
    p.stderr?.setEncoding('utf8').on('data', on);
  });
}

async function waitServing(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await request(port)).outcome === 'ok') return;
    await sleep(50);
  }
  throw new Error(`nothing serves on ${port}`);
}

/** A system under test: start it, reload it once, stop it. */
interface System {
  name: string;
  start(dir: string): Promise<number>;
  reload(): Promise<void>;
  stop(): Promise<void>;
}

function quiesceSystem(): System {
  let sup: ChildProcess | null = null;
  let control = '';
  return {
    name: 'quiesce',
    async start(dir) {
      control = join(dir, 'control.sock');
      sup = spawn(
        NODE,
        [
          CLI,
          'run',
          '--listen',
          '127.0.0.1:0',
          '--workers',
          '2',
          '--control',
          control,
          '--',
          NODE,
          join(dir, 'app.cjs'),
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const m = await waitOutput(sup, /listening on 127\.0\.0\.1:(\d+)/);
      await waitOutput(sup, /generation 1 serving/);
      sup.stdout?.resume();
      sup.stderr?.resume();
      return Number(m[1]);
    },
    async reload() {
      const r = await controlRequest(control, { op: 'reload' });
      if (!r.ok) throw new Error(`quiesce reload failed: ${r.error.message}`);
    },
    async stop() {
      if (!sup || sup.exitCode !== null) return;
      const exited = new Promise((r) => sup!.once('exit', r));
      sup.kill('SIGTERM');
      await exited;
    },
  };
}

function pm2System(): System {
  let home = '';
  return {
    name: 'pm2 reload',
    async start(dir) {
      home = join(dir, 'pm2-home');
      const port = await freePort();
      const eco = join(dir, 'ecosystem.json');
      writeFileSync(
        eco,
        JSON.stringify({
          apps: [
            {
              name: 'bench',
              script: join(dir, 'app.cjs'),
              exec_mode: 'cluster',
              instances: 2,
              wait_ready: true,
              listen_timeout: 10_000,
              kill_timeout: 5000,
              autorestart: true,
              env: { PORT: String(port) },
            },
          ],
        }),
      );
      const r = await run([NODE, PM2, 'start', eco], { PM2_HOME: home });
      if (r.code !== 0) throw new Error(`pm2 start failed:\n${r.out}`);
      await waitServing(port);
      return port;
    },
    async reload() {
      const r = await run([NODE, PM2, 'reload', 'bench'], { PM2_HOME: home });
      if (r.code !== 0) throw new Error(`pm2 reload failed:\n${r.out}`);
    },
    async stop() {
      if (home) await run([NODE, PM2, 'kill'], { PM2_HOME: home });
    },
  };
}

function clusterSystem(): System {
  let primary: ChildProcess | null = null;
  let n = 0;
  return {
    name: 'node cluster',
    async start(dir) {
      const port = await freePort();
      primary = spawn(NODE, [join(dir, 'primary.cjs')], {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, PORT: String(port) },
      });
      await waitOutput(primary, /ready/);
      return port;
    },
    async reload() {
      n++;
      const done = waitOutput(primary!, new RegExp(`reloaded ${n}\\b`), 30_000);
      primary!.kill('SIGHUP');
      await done;
    },
    async stop() {
      if (!primary || primary.exitCode !== null) return;
      const exited = new Promise((r) => primary!.once('exit', r));
      primary.kill('SIGTERM');
      await exited;
    },
  };
}

interface Result {
  name: string;
  total: number;
  failures: Record<Outcome, number>;
  steady: number[];
  reload: number[];
  reloadMs: number[];
  /** The p99 ratio of each round on its own. */
  ratios: number[];
}

async function measure(system: System, dir: string, reloads: number): Promise<Result> {
  const port = await system.start(dir);
  try {
    const load = startLoad(port);
    const t0 = performance.now();
    await sleep(WARMUP_MS + STEADY_MS);
    const windows: [number, number][] = [];
    const reloadMs: number[] = [];
    for (let i = 0; i < reloads; i++) {
      const a = performance.now();
      await system.reload();
      const b = performance.now();
      reloadMs.push(b - a);
      windows.push([a, b + TAIL_MS]);
      await sleep(GAP_MS);
    }
    await sleep(TAIL_MS);
    const samples = await load.stop();
    const failures: Record<Outcome, number> = { ok: 0, refused: 0, reset: 0, timeout: 0, wrong: 0 };
    const steady: number[] = [];
    const during: number[] = [];
    for (const s of samples) {
      failures[s.outcome]++;
      if (s.outcome !== 'ok' || s.start < t0 + WARMUP_MS) continue;
      const inWindow = windows.some(([a, b]) => s.end >= a && s.start <= b);
      (inWindow ? during : steady).push(s.end - s.start);
    }
    const total = samples.length;
    failures.ok = 0;
    const ratios = [pct(during, 99) / pct(steady, 99)];
    return { name: system.name, total, failures, steady, reload: during, reloadMs, ratios };
  } finally {
    await system.stop();
  }
}

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

const f = (x: number) => (Number.isNaN(x) ? '-' : x < 10 ? x.toFixed(2) : x.toFixed(1));
const lat = (xs: number[]) => `${f(pct(xs, 50))} / ${f(pct(xs, 99))} / ${f(Math.max(...xs))}`;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-bench-reload-'));
  writeFileSync(join(dir, 'app.cjs'), APP);
  writeFileSync(join(dir, 'primary.cjs'), PRIMARY);
  const systems = [quiesceSystem, pm2System, clusterSystem];
  const results = new Map<string, Result>();
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const reloads = Math.ceil(RELOADS / ROUNDS);
      for (let k = 0; k < systems.length; k++) {
        const system = systems[(k + round) % systems.length]();
        if (only && !system.name.startsWith(only)) continue;
        process.stderr.write(`bench reload: round ${round + 1}/${ROUNDS}, ${system.name}…\n`);
        const r = await measure(system, dir, reloads);
        const acc = results.get(r.name);
        if (!acc) results.set(r.name, r);
        else {
          acc.total += r.total;
          for (const key of Object.keys(acc.failures) as Outcome[])
            acc.failures[key] += r.failures[key];
          acc.steady.push(...r.steady);
          acc.reload.push(...r.reload);
          acc.reloadMs.push(...r.reloadMs);
          acc.ratios.push(...r.ratios);
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const order = ['quiesce', 'pm2 reload', 'node cluster'];
  const all = [...results.values()].sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
  console.log(
    `\nreload under load: ${Math.ceil(RELOADS / ROUNDS) * ROUNDS} reloads per system in ${ROUNDS} ` +
      `round(s), 2 workers, HTTP keep-alive ${keepAlive ? 'on' : 'off'}, ` +
      (RATE > 0 ? `${RATE} requests/s paced` : `${CLIENTS} clients back to back`) +
      `, Node ${process.version}, ${cpus().length} CPUs, load average ${loadavg()[0].toFixed(1)}` +
      (quick ? ' (QUICK: not a measurement)' : ''),
  );
  console.log(
    'latency in ms, p50 / p99 / max; "during" = requests overlapping a reload (+250 ms)\n',
  );
  const rows = [
    [
      'system',
      'requests',
      'refused',
      'reset',
      'timeout',
      'wrong',
      'steady',
      'during reloads',
      'p99 ratio',
      'per round',
      'reload took (median)',
    ],
  ];
  for (const r of all) {
    const took = [...r.reloadMs].sort((a, b) => a - b)[Math.floor(r.reloadMs.length / 2)];
    rows.push([
      r.name,
      String(r.total),
      String(r.failures.refused),
      String(r.failures.reset),
      String(r.failures.timeout),
      String(r.failures.wrong),
      lat(r.steady),
      lat(r.reload),
      `${(pct(r.reload, 99) / pct(r.steady, 99)).toFixed(2)}×`,
      r.ratios.map((x) => x.toFixed(2)).join(' '),
      `${Math.round(took)} ms`,
    ]);
  }
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  for (const r of rows)
    console.log(
      r
        .map((cell, c) => cell.padEnd(w[c]))
        .join('  ')
        .trimEnd(),
    );
  const q = all[0];
  if (q?.name !== 'quiesce') return;
  const failed = q.failures.refused + q.failures.reset + q.failures.timeout + q.failures.wrong;
  const ratio = pct(q.reload, 99) / pct(q.steady, 99);
  console.log(
    `\nquiesce target: 0 failures (${failed}), reload p99 ≤ 1.5× steady (${ratio.toFixed(2)}×): ` +
      (failed === 0 && ratio <= 1.5 ? 'met' : 'NOT met'),
  );
}

await main();
