/**
 * `npm run bench -- net`: servers built on `quiesce/net` against the same servers on raw
 * `node:net`, each server in its own process, the load from another.
 *
 * What is measured, and how:
 * 1. Ping-pong: 50 connections, each sending a 64-byte message (ending in '\n') and waiting
 *    for its whole echo before the next, for a fixed time per round → requests/s, p50/p99
 *    latency (client side) and server CPU per request. Two servers per side: a byte echo
 *    (`read` + `write`; raw: `'data'` → `write`) and a line echo (`readLine` + `write`; raw:
 *    a `'data'` handler that splits lines and writes each back as text).
 * 2. Bulk: 50 connections keeping 4 chunks of 16 KiB in flight each, through the byte
 *    echoes → MiB/s and server CPU per MiB.
 * 3. Memory per idle connection: a fresh server process per sample; after a short warm-up
 *    load, heap and RSS (after a forced collection) with 2,000 idle connections minus before,
 *    divided by 2,000.
 * Every server runs in its own process, started once (memory: once per sample), and answers
 * only the load; the load client is a separate process — `bench/net-load.c` compiled with
 * `cc -O2` when a C compiler exists (a few µs of CPU per request, so the client is never what
 * is measured), else this file re-run with `--client`. Quiesce and raw alternate round by
 * round (the order flips each round), so drifts of a shared machine hit both; each figure is
 * a median over rounds with the spread (min–max) beside it, and `× raw` is the median of the
 * per-round ratios (each quiesce round against the raw round next to it).
 * Targets: ping-pong ≥ 1.0× raw; heap and RSS per idle connection ≤ 1.5× raw.
 * Knobs: `--quick` (a smoke run, figures not meaningful), `BENCH_ROUNDS` (default 7),
 * `BENCH_NET_CLIENT=node` (force the Node client).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { listen, serve } from '../src/net/index.ts';
import {
  describeMachine,
  formatBytes,
  isQuick,
  median,
  memory,
  printRows,
  printVerdicts,
} from './lib.ts';

const CONNS = 50;
const MSG_BYTES = 64;
const BULK_CHUNK = 16 * 1024;
const IDLE_CONNS = isQuick ? 200 : 2000;
const ROUND_MS = isQuick ? 300 : 2000;
const ROUNDS = isQuick ? 1 : Number(process.env.BENCH_ROUNDS) || 7;
const MEMORY_SAMPLES = isQuick ? 1 : 3;
const WARMUP_MS = isQuick ? 200 : 1000;

// ---------------------------------------------------------------------------- the servers

/** The handlers, by name; each runs alone in a process made by `startServer`. */
const servers: Record<string, () => Promise<{ port: number; open: () => number }>> = {
  async 'raw-echo'() {
    // The socket options quiesce uses, so the comparison measures the layer only.
    return rawServer((socket) => {
      socket.on('data', (d: Buffer) => socket.write(d));
    });
  },
  async 'raw-line'() {
    return rawServer((socket) => {
      let rest: Buffer | null = null;
      socket.on('data', (d: Buffer) => {
        const b: Buffer = rest === null ? d : Buffer.concat([rest, d]);
        let from = 0;
        for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, from)) {
          socket.write(`${b.toString('utf8', from, i)}\n`);
          from = i + 1;
        }
        rest = from < b.length ? b.subarray(from) : null;
      });
    });
  },
  async 'quiesce-echo'() {
    const listener = await listen({ host: '127.0.0.1', port: 0 });
    const server = serve(listener, async (conn) => {
      for (let b = await conn.read(); b !== null; b = await conn.read()) await conn.write(b);
    });
    return { port: listener.port!, open: () => server.connections };
  },
  async 'quiesce-line'() {
    const listener = await listen({ host: '127.0.0.1', port: 0 });
    const server = serve(listener, async (conn) => {
      for (let l = await conn.readLine(); l !== null; l = await conn.readLine()) {
        await conn.write(`${l}\n`);
      }
    });
    return { port: listener.port!, open: () => server.connections };
  },
};

async function rawServer(
  onSocket: (s: net.Socket) => void,
): Promise<{ port: number; open: () => number }> {
  let open = 0;
  const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
    open++;
    socket.once('close', () => open--);
    socket.on('end', () => socket.end());
    socket.on('error', () => {});
    onSocket(socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, open: () => open };
}

/** `--server <name>`: prints `{ port }`, then answers `cpu` and `mem` lines on stdin. */
async function serverMain(name: string): Promise<void> {
  const s = await servers[name]();
  const reply = (x: object) => process.stdout.write(`${JSON.stringify(x)}\n`);
  reply({ port: s.port });
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === 'cpu') {
      const c = process.cpuUsage();
      reply({ us: c.user + c.system });
    } else if (line === 'mem') {
      reply({ ...memory(), open: s.open() });
    }
  }
  process.exit(0); // stdin closed: the driver is done with us
}

// ---------------------------------------------------------------------------- the Node client

/** `--client ping|bulk|idle PORT CONNS [MS BYTES]`: the fallback for machines without `cc`. */
async function clientMain(args: string[]): Promise<void> {
  const [mode, port, n, ms, bytes] = [
    args[0],
    Number(args[1]),
    Number(args[2]),
    Number(args[3]),
    Number(args[4]),
  ];
  const sockets: net.Socket[] = [];
  for (let i = 0; i < n; i++) {
    sockets.push(
      await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ port, host: '127.0.0.1', noDelay: true });
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      }),
    );
  }
  if (mode === 'idle') {
    process.stdout.write(`${JSON.stringify({ opened: n })}\n`);
    process.stdin.resume();
    await new Promise((r) => process.stdin.once('end', r));
    for (const s of sockets) s.destroy();
    return;
  }
  const msg = Buffer.alloc(bytes, 120);
  msg[bytes - 1] = 10;
  const hist = new Uint32Array(200_001);
  let requests = 0;
  let echoed = 0;
  const t0 = performance.now();
  const end = t0 + ms;
  await Promise.all(
    sockets.map(
      (s) =>
        new Promise<void>((resolve) => {
          let got = 0;
          let sentAt = 0;
          let inFlight = 0;
          s.on('close', () => resolve());
          if (mode === 'bulk') {
            s.on('data', (d: Buffer) => {
              echoed += d.length;
              inFlight -= d.length;
              if (performance.now() < end) {
                inFlight += d.length;
                s.write(d); // as many bytes as came back: the window stays full
              } else if (inFlight <= 0) s.destroy();
            });
            for (let i = 0; i < 4; i++) s.write(msg);
            inFlight = 4 * bytes;
            return;
          }
          s.on('data', (d: Buffer) => {
            got += d.length;
            if (got < bytes) return;
            got -= bytes;
            const t = performance.now();
            hist[Math.min(200_000, Math.round((t - sentAt) * 1000))]++;
            requests++;
            if (t >= end) return void s.destroy();
            sentAt = t;
            s.write(msg);
          });
          sentAt = performance.now();
          s.write(msg);
        }),
    ),
  );
  const elapsed = performance.now() - t0;
  const pct = (p: number) => {
    let seen = 0;
    for (let i = 0; i < hist.length; i++)
      if ((seen += hist[i]) > (requests * p) / 100) return i / 1000;
    return 200;
  };
  const out =
    mode === 'bulk'
      ? { bytes: echoed, ms: elapsed }
      : { requests, ms: elapsed, p50: pct(50), p99: pct(99) };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

// ---------------------------------------------------------------------------- the driver

/** A child process speaking one JSON line per request. */
class Child {
  readonly proc: ChildProcess;
  readonly #lines: string[] = [];
  readonly #waiting: { resolve: (line: string) => void; reject: (e: Error) => void }[] = [];
  readonly exited: Promise<void>;
  #exit: Error | null = null;
  constructor(cmd: string, args: string[]) {
    this.proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    this.exited = new Promise((r) =>
      this.proc.once('exit', (code, signal) => {
        this.#exit = new Error(`bench child ${cmd} exited (${code ?? signal}) without an answer`);
        for (const w of this.#waiting.splice(0)) w.reject(this.#exit);
        r();
      }),
    );
    createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      const w = this.#waiting.shift();
      if (w) w.resolve(l);
      else this.#lines.push(l);
    });
  }
  async next<T>(): Promise<T> {
    const l =
      this.#lines.shift() ??
      (await new Promise<string>((resolve, reject) => {
        if (this.#exit) reject(this.#exit);
        else this.#waiting.push({ resolve, reject });
      }));
    return JSON.parse(l) as T;
  }
  ask<T>(line: string): Promise<T> {
    this.proc.stdin!.write(`${line}\n`);
    return this.next<T>();
  }
  async close(): Promise<void> {
    this.proc.stdin!.end();
    await this.exited;
  }
}

class Server {
  readonly name: string;
  readonly child: Child;
  port = 0;
  constructor(name: string) {
    this.name = name;
    this.child = new Child(process.execPath, [
      '--expose-gc',
      import.meta.filename,
      '--server',
      name,
    ]);
  }
  async ready(): Promise<this> {
    this.port = (await this.child.next<{ port: number }>()).port;
    return this;
  }
  async cpuUs(): Promise<number> {
    return (await this.child.ask<{ us: number }>('cpu')).us;
  }
  mem(): Promise<{ heap: number; rss: number; open: number }> {
    return this.child.ask('mem');
  }
}

interface Ping {
  requests: number;
  ms: number;
  p50: number;
  p99: number;
}

/** Starts the load client: the C one if it could be built, else the Node one. */
function client(loadBin: string | null, args: (string | number)[]): Child {
  const a = args.map(String);
  return loadBin
    ? new Child(loadBin, a)
    : new Child(process.execPath, [import.meta.filename, '--client', ...a]);
}

async function load<T>(loadBin: string | null, args: (string | number)[]): Promise<T> {
  const c = client(loadBin, args);
  const out = await c.next<T>();
  await c.exited;
  return out;
}

/** Builds bench/net-load.c into `dir`; null when there is no C compiler (or it fails). */
function buildClient(dir: string): string | null {
  if (process.env.BENCH_NET_CLIENT === 'node') return null;
  const bin = join(dir, 'net-load');
  try {
    execFileSync('cc', ['-O2', '-o', bin, join(import.meta.dirname, 'net-load.c')], {
      stdio: 'pipe',
    });
    return bin;
  } catch {
    return null;
  }
}

function spread(xs: readonly number[], digits: number): string {
  return `${median(xs).toFixed(digits)} [${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}]`;
}

/** Runs `pairs` of (raw, quiesce) servers in alternating rounds of `measure`. */
async function alternate<T>(
  pair: readonly [Server, Server],
  measureOne: (s: Server) => Promise<T>,
): Promise<[T[], T[]]> {
  const out: [T[], T[]] = [[], []];
  for (let r = 0; r < ROUNDS; r++) {
    for (const i of r % 2 === 0 ? [0, 1] : [1, 0]) out[i].push(await measureOne(pair[i]));
    process.stderr.write('.');
  }
  return out;
}

async function main(): Promise<void> {
  console.log(describeMachine());
  const dir = mkdtempSync(join(tmpdir(), 'net-bench-'));
  try {
    const bin = buildClient(dir);
    console.log(
      `${CONNS} connections, ${ROUNDS} alternating round(s) of ${ROUND_MS} ms, each server in its own process, load from ${
        bin ? 'bench/net-load.c (cc -O2)' : 'a Node client process (no cc)'
      }`,
    );
    const names = ['raw-echo', 'quiesce-echo', 'raw-line', 'quiesce-line'];
    const procs = await Promise.all(names.map((n) => new Server(n).ready()));
    const [rawEcho, qEcho, rawLine, qLine] = procs;
    try {
      const ping = async (s: Server, ms: number) => {
        const c0 = await s.cpuUs();
        const p = await load<Ping>(bin, ['ping', s.port, CONNS, ms, MSG_BYTES]);
        const cpu = (await s.cpuUs()) - c0;
        return { ...p, rps: p.requests / (p.ms / 1000), cpu: cpu / p.requests };
      };
      const bulk = async (s: Server, ms: number) => {
        const c0 = await s.cpuUs();
        const b = await load<{ bytes: number; ms: number }>(bin, [
          'bulk',
          s.port,
          CONNS,
          ms,
          BULK_CHUNK,
        ]);
        const cpu = (await s.cpuUs()) - c0;
        const mib = b.bytes / 2 ** 20;
        return { mibs: mib / (b.ms / 1000), cpu: cpu / mib };
      };
      // Warm-up: JIT every path before anything counts.
      for (const s of procs) await ping(s, WARMUP_MS);
      for (const s of [rawEcho, qEcho]) await bulk(s, WARMUP_MS / 2);

      const verdicts = [];
      for (const [title, pair] of [
        ['ping-pong, byte echo (read + write)', [rawEcho, qEcho]],
        ['ping-pong, line echo (readLine + write)', [rawLine, qLine]],
      ] as const) {
        const [raw, q] = await alternate(pair, (s) => ping(s, ROUND_MS));
        const ratios = q.map((x, i) => x.rps / raw[i].rps);
        console.log(`\n${title}, ${MSG_BYTES} B messages: median [min–max] of ${ROUNDS} rounds`);
        printRows([
          ['server', 'req/s', 'p50 ms', 'p99 ms', 'server CPU/req µs', '× raw req/s'],
          ...[raw, q].map((rs, i) => [
            pair[i].name,
            spread(
              rs.map((x) => x.rps),
              0,
            ),
            spread(
              rs.map((x) => x.p50),
              3,
            ),
            spread(
              rs.map((x) => x.p99),
              3,
            ),
            spread(
              rs.map((x) => x.cpu),
              1,
            ),
            i === 0 ? '1' : spread(ratios, 3),
          ]),
        ]);
        // Rounds that disagree by more than 1.5× say the machine was busy, not how fast we are.
        const noisy = Math.max(...ratios) / Math.min(...ratios) > 1.5;
        verdicts.push({
          target: `${title.split(',')[1].trim()}: req/s ≥ 1.0× raw`,
          measured: `${median(ratios).toFixed(3)}× [${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)}]${
            noisy ? ' (rounds disagree: too noisy to judge)' : ''
          }`,
          met: noisy ? null : median(ratios) >= 1,
        });
      }

      const [braw, bq] = await alternate([rawEcho, qEcho], (s) => bulk(s, ROUND_MS));
      const bratios = bq.map((x, i) => x.mibs / braw[i].mibs);
      console.log(`\nbulk, byte echo, ${BULK_CHUNK / 1024} KiB chunks, 4 in flight per connection`);
      printRows([
        ['server', 'MiB/s', 'server CPU/MiB ms', '× raw'],
        ...[braw, bq].map((rs, i) => [
          [rawEcho, qEcho][i].name,
          spread(
            rs.map((x) => x.mibs),
            1,
          ),
          spread(
            rs.map((x) => x.cpu / 1000),
            2,
          ),
          i === 0 ? '1' : spread(bratios, 3),
        ]),
      ]);
      verdicts.push({
        target: 'bulk MiB/s (information)',
        measured: `${median(bratios).toFixed(3)}×`,
        met: null,
      });
      process.stderr.write('\n');

      // Memory: a fresh process per sample, so one sample's garbage is not the next one's.
      const mem: { heap: number; rss: number }[][] = [[], []];
      for (let r = 0; r < MEMORY_SAMPLES; r++) {
        for (const i of r % 2 === 0 ? [0, 1] : [1, 0]) mem[i].push(await idleMemory(bin, names[i]));
        process.stderr.write('.');
      }
      process.stderr.write('\n');
      console.log(
        `\nmemory per idle connection (${IDLE_CONNS} connections, byte echo servers, a fresh process per sample): median [min–max] of ${MEMORY_SAMPLES}`,
      );
      printRows([
        ['server', 'heap B', 'rss B'],
        ...mem.map((xs, i) => [
          names[i],
          spread(
            xs.map((x) => x.heap),
            0,
          ),
          spread(
            xs.map((x) => x.rss),
            0,
          ),
        ]),
      ]);
      for (const k of ['heap', 'rss'] as const) {
        const q = median(mem[1].map((x) => x[k]));
        const raw = median(mem[0].map((x) => x[k]));
        // RSS grows in pages: with few connections (a quick run) raw may not move at all.
        const ratio = raw > 0 ? `${(q / raw).toFixed(2)}×` : 'raw did not grow:';
        verdicts.push({
          target: `${k} per idle connection ≤ 1.5× raw`,
          measured: `${ratio} (${formatBytes(q)} vs ${formatBytes(raw)})`,
          met: raw > 0 ? q / raw <= 1.5 : null,
        });
      }
      const missed = printVerdicts('targets', verdicts);
      if (missed > 0 && !isQuick) console.log(`${missed} target(s) not met`);
    } finally {
      await Promise.all(procs.map((s) => s.child.close()));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Heap and RSS per idle connection of one fresh `name` server process. */
async function idleMemory(
  bin: string | null,
  name: string,
): Promise<{ heap: number; rss: number }> {
  const s = await new Server(name).ready();
  try {
    await load(bin, ['ping', s.port, CONNS, WARMUP_MS / 4, MSG_BYTES]);
    while ((await s.mem()).open > 0) await sleep(10);
    const m0 = await s.mem();
    const idle = client(bin, ['idle', s.port, IDLE_CONNS]);
    await idle.next();
    let m1 = await s.mem();
    while (m1.open < IDLE_CONNS) {
      await sleep(20);
      m1 = await s.mem();
    }
    await sleep(100);
    m1 = await s.mem();
    await idle.close();
    return { heap: (m1.heap - m0.heap) / IDLE_CONNS, rss: (m1.rss - m0.rss) / IDLE_CONNS };
  } finally {
    await s.child.close();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const at = process.argv.indexOf('--server');
if (at >= 0) await serverMain(process.argv[at + 1]);
else if (process.argv.includes('--client')) {
  await clientMain(process.argv.slice(process.argv.indexOf('--client') + 1));
} else await main();
