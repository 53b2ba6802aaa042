/**
 * `npm run bench -- reload [--quick] [--chaos] [--only quiesce|pm2|node] [--keep-alive on|off]`
 *
 * Reloads under saturating load, three systems side by side in one run, keep-alive off and on:
 * 1. quiesce: `quiesce run --workers 2 --warm-up /:200` over an UNMODIFIED Express app
 *    (examples/apps/express-app.js, which only calls `app.listen(PORT)`), reloaded through its
 *    control socket.
 * 2. PM2: cluster mode, 2 instances, `pm2 reload`, with PM2's recommended graceful set-up
 *    (wait_ready + process.send('ready'), the app closes its server on SIGINT; kill_timeout
 *    5 s). A private PM2_HOME in the run's temporary directory; `pm2 kill`, then the daemon's
 *    pid is killed if it is still there.
 * 3. node:cluster: a primary with 2 workers of the same graceful app and a rolling restart
 *    (fork, wait 'listening', disconnect an old one, wait for its exit; one at a time).
 *
 * Load: a client in its own process (bench/_reload-client.ts), 50 connections back to back
 * for 30 s (8 s with --quick), one request in flight per connection as wrk does, over raw
 * sockets; keep-alive on (persistent connections) or off (`Connection: close`, a new
 * connection per request). Every request is classified as wrk counts it — ok (2xx), non-2xx,
 * connect, read, write, timeout (2 s) — and timed. 10 reloads (3 with --quick), evenly spread
 * after a 3 s warm-up. A request overlapping a reload (from its trigger until the system
 * reports it done — or, if its old workers are still draining then, until they have exited:
 * quiesce reports done when the new generation serves — plus 250 ms) counts as "during
 * reloads", every other one after warm-up as
 * "steady". Printed per system: failures by kind, p50/p99/max steady vs during reloads, the
 * p99 ratio, the longest gap without a 2xx answer, how long one reload took (to "done", and
 * to the old workers gone). Drawn: requests/s
 * and errors per 100 ms, reload moments marked, into docs/benchmarks/reload-keepalive-*.svg
 * (with --quick into the temporary directory, whose path is printed).
 *
 * --drain-spread DUR: passed to `quiesce run` (default: quiesce's own), to compare settings.
 * --warm-up PATH[:N] | off: quiesce's warm-up (default /:200; off: none, quiesce's default).
 *
 * --trace PREFIX: also writes PREFIX-<system>-<on|off>.json per run: the reload marks, every
 * request (start, latency, kind, answering pid, first on its socket) and, for quiesce, the
 * supervisor's output (its log, the app's lines) stamped on arrival, to see where in a reload
 * the time goes.
 *
 * --chaos: instead of plain reloads, in turn: SIGKILL a random worker, a reload, three reloads
 * back to back, a "deploy" whose new workers crash at start (the reload must fail, the old
 * generation keep serving), a reload after the fix. Counts failures the same way; the picture
 * goes to reload-chaos-keepalive-*.svg.
 *
 * Target for quiesce: 0 failed requests of any kind in every row; p99 during reloads ≤ 1.5×
 * steady.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { controlRequest } from '../src/supervisor/control.ts';

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(name);
const value = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : null);
const quick = flag('--quick') || process.env.BENCH_QUICK === '1';
const chaos = flag('--chaos');
const only = value('--only');
const trace = value('--trace');
const drainSpread = value('--drain-spread');
// quiesce's warm-up of new workers (opt-in in quiesce itself, on here: it runs the app's `/`,
// the route this load calls); `--warm-up off` measures quiesce's own default.
const warmUpArg = value('--warm-up') ?? '/:200';
const warmUp = warmUpArg === 'off' ? null : warmUpArg;
const modes =
  value('--keep-alive') === 'on'
    ? [true]
    : value('--keep-alive') === 'off'
      ? [false]
      : [false, true];
const DURATION_MS = Number(value('--duration') ?? (quick ? 8000 : 30_000));
const RELOADS = Number(value('--reloads') ?? (quick ? 3 : 10));
const CONNECTIONS = 50;
const WARMUP_MS = quick ? 1500 : 3000;
const TAIL_MS = 250;
const BUCKET_MS = 100;

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const NODE = process.execPath;
const CLI = join(ROOT, 'src/cli/main.ts');
const PM2 = join(ROOT, 'node_modules/pm2/bin/pm2');
const CLIENT = join(ROOT, 'bench/_reload-client.ts');
const UNMODIFIED = join(ROOT, 'examples/apps/express-app.js');
const GRACEFUL = join(ROOT, 'bench/reload-apps/express-graceful.js');
const MAYBE_CRASH = join(ROOT, 'bench/reload-apps/maybe-crash.js');
const PRIMARY = join(ROOT, 'bench/reload-apps/cluster-primary.js');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const wall = () => performance.timeOrigin + performance.now();

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

/** Collects a child's output; `wait(re)` resolves on the first match after `from`. */
function watch(p: ChildProcess) {
  let buf = '';
  const stamped: [number, string][] = [];
  const waiters = new Set<() => void>();
  const on = (d: string) => {
    buf += d;
    stamped.push([wall(), d]);
    for (const w of waiters) w();
  };
  p.stdout?.setEncoding('utf8').on('data', on);
  p.stderr?.setEncoding('utf8').on('data', on);
  return {
    text: () => buf,
    stamped,
    wait(re: RegExp, ms = 30_000, from = 0): Promise<RegExpExecArray> {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${re}:\n${buf.slice(-2000)}`));
        }, ms);
        const check = () => {
          const m = re.exec(buf.slice(from));
          if (!m) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(m);
        };
        waiters.add(check);
        check();
      });
    },
  };
}

async function waitServing(port: number): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      });
      s.once('data', (d) => {
        s.destroy();
        resolve(d.toString('latin1').startsWith('HTTP/1.1 200'));
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nothing serves on ${port}`);
}

/**
 * A system under test. `reload` resolves when the system says the reload is done; `handedOver`,
 * for a system that says so before its old workers are gone, when they are (its wall time).
 */
interface System {
  readonly name: string;
  start(dir: string): Promise<number>;
  reload(): Promise<{ ok: boolean }>;
  handedOver?(): Promise<number>;
  pids(): Promise<number[]>;
  stop(): Promise<void>;
}

// For --trace: the quiesce supervisor's output (its log and the app's), stamped on arrival.
let logs: ReturnType<typeof watch> | null = null;
function quiesceSystem(crashFile: string): System {
  let sup: ChildProcess | null = null;
  let out: ReturnType<typeof watch> | null = null;
  let drained: Promise<number> | null = null;
  let control = '';
  return {
    name: 'quiesce',
    async start(dir) {
      control = join(dir, 'quiesce.sock');
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
          ...(drainSpread === null ? [] : ['--drain-spread', drainSpread]),
          ...(warmUp === null ? [] : ['--warm-up', warmUp]),
          '--',
        ].concat(['node', MAYBE_CRASH]),
        {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { ...process.env, APP: UNMODIFIED, CRASH_FILE: crashFile, PORT: '8080' },
        },
      );
      out = watch(sup);
      logs = out;
      const m = await out.wait(/listening on 127\.0\.0\.1:(\d+)/);
      await out.wait(/generation 1 serving/);
      return Number(m[1]);
    },
    async reload() {
      const from = out!.text().length;
      const r = await controlRequest(control, { op: 'reload' });
      // "Done" is the new generation serving; the old one drains after that.
      drained = r.ok
        ? out!.wait(/generation \d+ drained after/, 30_000, from).then(wall, () => Number.NaN)
        : null;
      return { ok: r.ok };
    },
    async handedOver() {
      return (await drained) ?? Number.NaN;
    },
    async pids() {
      const r = (await controlRequest(control, { op: 'status' })) as {
        status?: { generations: { state: string; workers: { pid: number | null }[] }[] };
      };
      const serving = r.status?.generations.find((g) => g.state === 'serving');
      return (serving?.workers ?? []).flatMap((w) => (w.pid ? [w.pid] : []));
    },
    async stop() {
      if (!sup || sup.exitCode !== null) return;
      const exited = new Promise((r) => sup!.once('exit', r));
      sup.kill('SIGTERM');
      await exited;
    },
  };
}

function pm2System(crashFile: string): System {
  let home = '';
  const pm2 = (...a: string[]) => run([NODE, PM2, ...a], { PM2_HOME: home });
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
              script: MAYBE_CRASH,
              exec_mode: 'cluster',
              instances: 2,
              wait_ready: true,
              listen_timeout: 10_000,
              kill_timeout: 5000,
              autorestart: true,
              env: { PORT: String(port), APP: GRACEFUL, CRASH_FILE: crashFile },
            },
          ],
        }),
      );
      const r = await pm2('start', eco);
      if (r.code !== 0) throw new Error(`pm2 start failed:\n${r.out}`);
      await waitServing(port);
      return port;
    },
    async reload() {
      const r = await pm2('reload', 'bench');
      return { ok: r.code === 0 };
    },
    async pids() {
      const r = await pm2('jlist');
      try {
        const list = JSON.parse(r.out.slice(r.out.indexOf('['))) as { pid: number }[];
        return list.map((p) => p.pid).filter((p) => p > 0);
      } catch {
        return [];
      }
    },
    async stop() {
      if (!home) return;
      const pidFile = join(home, 'pm2.pid');
      const daemon = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) : 0;
      await pm2('kill');
      if (daemon > 0) {
        try {
          process.kill(daemon, 'SIGKILL');
        } catch {}
      }
    },
  };
}

function clusterSystem(crashFile: string): System {
  let primary: ChildProcess | null = null;
  let out: ReturnType<typeof watch> | null = null;
  let n = 0;
  return {
    name: 'node cluster',
    async start() {
      const port = await freePort();
      primary = spawn(NODE, [PRIMARY], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          ...process.env,
          PORT: String(port),
          APP_ENTRY: MAYBE_CRASH,
          APP: GRACEFUL,
          CRASH_FILE: crashFile,
        },
      });
      out = watch(primary);
      await out.wait(/^ready$/m);
      return port;
    },
    async reload() {
      n++;
      const from = out!.text().length;
      primary!.kill('SIGHUP');
      const m = await out!.wait(new RegExp(`^(reloaded|reload failed) ${n}$`, 'm'), 30_000, from);
      return { ok: m[1] === 'reloaded' };
    },
    async pids() {
      const all = [...out!.text().matchAll(/^pids ([\d,]+)$/gm)];
      return all.length ? all[all.length - 1][1].split(',').map(Number) : [];
    },
    async stop() {
      if (!primary || primary.exitCode !== null) return;
      const exited = new Promise((r) => primary!.once('exit', r));
      primary.kill('SIGTERM');
      await exited;
    },
  };
}

type Action = 'reload' | 'kill' | 'back-to-back' | 'crash-deploy';
const CHAOS: Action[] = ['kill', 'reload', 'back-to-back', 'crash-deploy', 'reload', 'kill'];

interface Mark {
  readonly action: Action;
  readonly a: number;
  readonly b: number;
  /** The end of the hand-over: `b`, or later when the old workers outlive it. */
  readonly z: number;
  readonly ok: boolean;
}

async function act(system: System, action: Action, crashFile: string): Promise<boolean> {
  switch (action) {
    case 'reload':
      return (await system.reload()).ok;
    case 'kill': {
      const pids = await system.pids();
      if (pids.length === 0) return false;
      try {
        process.kill(pids[Math.floor(Math.random() * pids.length)], 'SIGKILL');
      } catch {}
      return true;
    }
    case 'back-to-back': {
      const rs = [];
      for (let i = 0; i < 3; i++) rs.push((await system.reload()).ok);
      return rs.every(Boolean);
    }
    case 'crash-deploy': {
      writeFileSync(crashFile, 'crash');
      try {
        // Success here is the right outcome: the reload reported failed.
        return !(await system.reload()).ok;
      } finally {
        writeFileSync(crashFile, 'ok');
      }
    }
  }
}

interface Measured {
  name: string;
  keepAlive: boolean;
  t0: number;
  marks: Mark[];
  starts: number[];
  lats: number[];
  kinds: number[];
  kindNames: string[];
}

async function measure(system: System, dir: string, keepAlive: boolean): Promise<Measured> {
  const crashFile = join(dir, 'crash-mode');
  writeFileSync(crashFile, 'ok');
  const port = await system.start(dir);
  try {
    await waitServing(port);
    const client = spawn(
      NODE,
      [
        CLIENT,
        '--port',
        String(port),
        '--connections',
        String(CONNECTIONS),
        '--duration-ms',
        String(DURATION_MS),
      ].concat(keepAlive ? ['--keep-alive'] : [], trace ? ['--detail'] : []),
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let json = '';
    client.stdout!.setEncoding('utf8').on('data', (d: string) => {
      json += d;
    });
    const done = new Promise<void>((r) => client.once('close', () => r()));
    const t0 = wall();
    const actions: Action[] = chaos
      ? CHAOS
      : Array.from({ length: RELOADS }, () => 'reload' as const);
    const span = DURATION_MS - WARMUP_MS - 2000;
    const marks: Mark[] = [];
    for (let i = 0; i < actions.length; i++) {
      const due = t0 + WARMUP_MS + (span * i) / actions.length;
      if (wall() < due) await sleep(due - wall());
      const a = wall();
      const ok = await act(system, actions[i], crashFile);
      const b = wall();
      const over = actions[i] === 'reload' && ok ? await system.handedOver?.() : undefined;
      marks.push({ action: actions[i], a, b, z: Math.max(b, over || b), ok });
    }
    await done;
    const r = JSON.parse(json) as Omit<Measured, 'name' | 'keepAlive' | 't0' | 'marks'>;
    if (trace) {
      writeFileSync(
        `${trace}-${system.name.split(' ')[0]}-${keepAlive ? 'on' : 'off'}.json`,
        JSON.stringify({ t0, marks, ...r, logs: logs?.stamped ?? [] }),
      );
    }
    return { name: system.name, keepAlive, t0, marks, ...r };
  } finally {
    await system.stop();
  }
}

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

interface Row {
  m: Measured;
  total: number;
  fail: Record<string, number>;
  steady: number[];
  during: number[];
  gapMs: number;
  reloadMs: number;
  /** Trigger to the end of the hand-over (old workers gone). */
  handMs: number;
  buckets: { ok: number[]; err: number[] };
}

function analyse(m: Measured): Row {
  const fail: Record<string, number> = {};
  for (const k of m.kindNames) if (k !== 'ok') fail[k] = 0;
  const steady: number[] = [];
  const during: number[] = [];
  const okEnds: number[] = [];
  const n = Math.ceil(DURATION_MS / BUCKET_MS) + 20;
  const buckets = { ok: new Array<number>(n).fill(0), err: new Array<number>(n).fill(0) };
  const windows = m.marks.map((k) => [k.a, k.z + TAIL_MS]);
  for (let i = 0; i < m.starts.length; i++) {
    const start = m.starts[i];
    const endAt = start + m.lats[i];
    const kind = m.kindNames[m.kinds[i]];
    const b = Math.min(n - 1, Math.max(0, Math.floor((endAt - m.t0) / BUCKET_MS)));
    if (kind === 'ok') {
      buckets.ok[b]++;
      okEnds.push(endAt);
    } else {
      buckets.err[b]++;
      fail[kind]++;
    }
    if (kind !== 'ok' || start < m.t0 + WARMUP_MS) continue;
    const inWindow = windows.some(([a, z]) => endAt >= a && start <= z);
    (inWindow ? during : steady).push(m.lats[i]);
  }
  okEnds.sort((a, b) => a - b);
  let gapMs = 0;
  for (let i = 1; i < okEnds.length; i++) {
    if (okEnds[i] < m.t0 + WARMUP_MS) continue;
    gapMs = Math.max(gapMs, okEnds[i] - okEnds[i - 1]);
  }
  const took = m.marks.filter((k) => k.action === 'reload').map((k) => k.b - k.a);
  return {
    m,
    total: m.starts.length,
    fail,
    steady,
    during,
    gapMs,
    reloadMs: pct(took, 50),
    handMs: pct(
      m.marks.filter((k) => k.action === 'reload').map((k) => k.z - k.a),
      50,
    ),
    buckets,
  };
}

const f = (x: number) => (Number.isNaN(x) ? '-' : x < 10 ? x.toFixed(2) : x.toFixed(1));
const lat = (xs: number[]) => `${f(pct(xs, 50))} / ${f(pct(xs, 99))} / ${f(pct(xs, 100))}`;

function table(rows: Row[]): string {
  const kinds = ['connect', 'read', 'write', 'timeout', 'non2xx'];
  const head = [
    'system',
    'keep-alive',
    'requests',
    ...kinds,
    'steady p50/p99/max',
    'during reloads',
    'p99 ratio',
    'longest gap',
    'reload took',
    'old gone',
  ];
  const body = rows.map((r) => [
    r.m.name,
    r.m.keepAlive ? 'on' : 'off',
    String(r.total),
    ...kinds.map((k) => String(r.fail[k] ?? 0)),
    lat(r.steady),
    lat(r.during),
    `${(pct(r.during, 99) / pct(r.steady, 99)).toFixed(2)}×`,
    `${Math.round(r.gapMs)} ms`,
    Number.isNaN(r.reloadMs) ? '-' : `${Math.round(r.reloadMs)} ms`,
    Number.isNaN(r.handMs) ? '-' : `${Math.round(r.handMs)} ms`,
  ]);
  const all = [head, ...body];
  const w = head.map((_, c) => Math.max(...all.map((r) => r[c].length)));
  return all
    .map((r) =>
      r
        .map((cell, c) => cell.padEnd(w[c]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** requests/s and errors per 100 ms per system, reload moments marked: one panel per system. */
function svg(rows: Row[], title: string): string {
  const W = 960;
  const panelH = 150;
  const errH = 40;
  const left = 60;
  const right = 20;
  const top = 56;
  const gap = 40;
  const H = top + rows.length * (panelH + errH + gap) + 20;
  const plotW = W - left - right;
  const secs = DURATION_MS / 1000;
  const x = (ms: number) => left + (ms / DURATION_MS) * plotW;
  const maxRate = Math.max(1, ...rows.flatMap((r) => r.buckets.ok)) * (1000 / BUCKET_MS);
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${left}" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`,
  ];
  rows.forEach((r, i) => {
    const y0 = top + i * (panelH + errH + gap);
    const failed = Object.values(r.fail).reduce((a, b) => a + b, 0);
    out.push(
      `<text x="${left}" y="${y0 + 12}" font-weight="bold">${esc(r.m.name)}: ${failed} failed of ${r.total} requests, longest gap without a 2xx ${Math.round(r.gapMs)} ms</text>`,
    );
    const py = y0 + 20;
    out.push(
      `<rect x="${left}" y="${py}" width="${plotW}" height="${panelH}" fill="#f7f7f7" stroke="#ccc"/>`,
    );
    for (const k of r.m.marks) {
      const xa = x(k.a - r.m.t0);
      const xb = Math.max(xa + 1, x(k.b - r.m.t0));
      const color =
        k.action === 'reload' || k.action === 'back-to-back'
          ? '#4a7bd0'
          : k.action === 'kill'
            ? '#d08a4a'
            : '#a04ad0';
      out.push(
        `<rect x="${xa.toFixed(1)}" y="${py}" width="${(xb - xa).toFixed(1)}" height="${panelH + errH + 6}" fill="${color}" fill-opacity="0.18"/>`,
      );
      out.push(
        `<line x1="${xa.toFixed(1)}" y1="${py}" x2="${xa.toFixed(1)}" y2="${py + panelH + errH + 6}" stroke="${color}" stroke-dasharray="3,2"/>`,
      );
    }
    const pts = r.buckets.ok
      .slice(0, Math.ceil(DURATION_MS / BUCKET_MS))
      .map(
        (c, b) =>
          `${x(b * BUCKET_MS + BUCKET_MS / 2).toFixed(1)},${(py + panelH - (c * (1000 / BUCKET_MS) * panelH) / maxRate).toFixed(1)}`,
      );
    out.push(
      `<polyline points="${pts.join(' ')}" fill="none" stroke="#1b5e20" stroke-width="1.2"/>`,
    );
    out.push(
      `<text x="${left - 6}" y="${py + 10}" text-anchor="end">${Math.round(maxRate)}</text>`,
    );
    out.push(`<text x="${left - 6}" y="${py + panelH}" text-anchor="end">0</text>`);
    out.push(
      `<text x="8" y="${py + panelH / 2}" transform="rotate(-90 14 ${py + panelH / 2})">2xx/s</text>`,
    );
    const ey = py + panelH + 6;
    const maxErr = Math.max(1, ...r.buckets.err);
    out.push(
      `<rect x="${left}" y="${ey}" width="${plotW}" height="${errH}" fill="#fff5f5" stroke="#ecc"/>`,
    );
    r.buckets.err.forEach((c, b) => {
      if (c === 0 || b * BUCKET_MS > DURATION_MS) return;
      const h = (c / maxErr) * errH;
      out.push(
        `<rect x="${x(b * BUCKET_MS).toFixed(1)}" y="${(ey + errH - h).toFixed(1)}" width="${Math.max(1, plotW / (DURATION_MS / BUCKET_MS)).toFixed(1)}" height="${h.toFixed(1)}" fill="#c62828"/>`,
      );
    });
    out.push(
      `<text x="${left - 6}" y="${ey + errH}" text-anchor="end" fill="#c62828">${failed === 0 ? '0 errors' : `max ${maxErr}`}</text>`,
    );
    for (let s = 0; s <= secs; s += 5) {
      out.push(
        `<text x="${x(s * 1000).toFixed(1)}" y="${ey + errH + 14}" text-anchor="middle" fill="#666">${s}s</text>`,
      );
    }
  });
  out.push(
    `<text x="${left}" y="40" fill="#666">green: 2xx/s per 100 ms · red: failed requests per 100 ms · shaded: reload (blue), SIGKILL (orange), crashing deploy (purple)</text>`,
    '</svg>',
  );
  return `${out.join('\n')}\n`;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-bench-reload-'));
  const systems = [quiesceSystem, pm2System, clusterSystem];
  const rows: Row[] = [];
  try {
    for (const keepAlive of modes) {
      const group: Row[] = [];
      for (const make of systems) {
        const system = make(join(dir, 'crash-mode'));
        if (only && !system.name.startsWith(only)) continue;
        process.stderr.write(
          `bench reload: ${system.name}, keep-alive ${keepAlive ? 'on' : 'off'}${chaos ? ', chaos' : ''}…\n`,
        );
        group.push(analyse(await measure(system, dir, keepAlive)));
      }
      rows.push(...group);
      const name = `reload${chaos ? '-chaos' : ''}-keepalive-${keepAlive ? 'on' : 'off'}.svg`;
      const file = quick ? join(tmpdir(), name) : join(ROOT, 'docs/benchmarks', name);
      const what = chaos
        ? 'chaos (SIGKILL, back-to-back reloads, crashing deploy)'
        : `${RELOADS} reloads`;
      writeFileSync(
        file,
        svg(
          group,
          `${what} under ${CONNECTIONS} connections, keep-alive ${keepAlive ? 'on' : 'off'}${quick ? ' (quick: not a measurement)' : ''}`,
        ),
      );
      process.stderr.write(`bench reload: wrote ${file}\n`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(
    `\nreload under load: ${chaos ? `chaos (${CHAOS.join(', ')})` : `${RELOADS} reloads`} per run, ` +
      `${CONNECTIONS} connections for ${DURATION_MS / 1000} s, 2 workers, Node ${process.version}, ` +
      `${cpus().length} CPUs, load average ${loadavg()[0].toFixed(1)}, sched_autogroup ${autogroup()}, quiesce --warm-up ${warmUp ?? 'off'}${quick ? ' (QUICK: not a measurement)' : ''}`,
  );
  console.log(
    'latency in ms, p50 / p99 / max; "during reloads" = requests overlapping a reload (+250 ms)\n',
  );
  console.log(table(rows));
  for (const r of rows) {
    const bad = r.m.marks.filter((k) => !k.ok).map((k) => k.action);
    if (bad.length)
      console.log(
        `${r.m.name} (keep-alive ${r.m.keepAlive ? 'on' : 'off'}): actions that did not go as intended: ${bad.join(', ')}`,
      );
  }
  const q = rows.filter((r) => r.m.name === 'quiesce');
  if (q.length) {
    const failed = q.reduce((a, r) => a + Object.values(r.fail).reduce((x, y) => x + y, 0), 0);
    const ratios = q.map((r) => pct(r.during, 99) / pct(r.steady, 99));
    console.log(
      `\nquiesce target: 0 failures (${failed}), reload p99 ≤ 1.5× steady (${ratios.map((x) => `${x.toFixed(2)}×`).join(', ')}): ` +
        (failed === 0 && ratios.every((x) => x <= 1.5) ? 'met' : 'NOT met'),
    );
  }
}

await main();

/**
 * Whether the kernel schedules by session ('on'), which shapes this bench: a quiesce worker
 * leads its own session, so each worker is a scheduling group of its own beside the load
 * client's (see docs/benchmarks/reload.md, "Warm-up").
 */
function autogroup(): string {
  try {
    return readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1'
      ? 'on'
      : 'off';
  } catch {
    return 'n/a';
  }
}
