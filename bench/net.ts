/**
 * `npm run bench -- net`: echo servers through `quiesce/net` against a raw `node:net` echo
 * server, side by side in the same run.
 *
 * What is measured, and how:
 * 1. Ping-pong: 50 connections, each sending a 64-byte message and waiting for its echo before
 *    the next, for a fixed time per round → requests/s and p50/p99 latency.
 * 2. Bulk: 50 connections streaming 16 KiB chunks with up to 4 in flight each → MB/s.
 * 3. Memory per idle connection: 2,000 open connections that send nothing, heap and RSS of the
 *    server process after a collection, per connection.
 * The servers run in this process; the load comes from a child process (this file re-run with
 * `--client`), so client work never shares the servers' event loop. Candidates alternate
 * round by round; the figures are medians over rounds.
 * Target (DESIGN §4): quiesce echo throughput ≥ 0.95× raw.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { listen, type Server, serve } from '../src/net/index.ts';
import {
  describeMachine,
  formatBytes,
  isQuick,
  median,
  memory,
  pause,
  printRows,
  printVerdicts,
} from './lib.ts';

const CONNS = 50;
const PING_BYTES = 64;
const BULK_CHUNK = 16 * 1024;
const BULK_WINDOW = 4;
const IDLE_CONNS = isQuick ? 200 : 2000;
const ROUND_MS = isQuick ? 300 : 2000;
const ROUNDS = isQuick ? 1 : 7;

// ---------------------------------------------------------------------------- the client

interface PingResult {
  requests: number;
  ms: number;
  p50: number;
  p99: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

async function connectAll(port: number, n: number): Promise<net.Socket[]> {
  const out: net.Socket[] = [];
  for (let i = 0; i < n; i++) {
    out.push(
      await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ port, host: '127.0.0.1', noDelay: true });
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      }),
    );
  }
  return out;
}

async function closeAll(sockets: net.Socket[]): Promise<void> {
  await Promise.all(
    sockets.map(
      (s) =>
        new Promise<void>((r) => {
          if (s.closed) return r();
          s.once('close', () => r());
          s.end();
          setTimeout(() => s.destroy(), 1000).unref();
        }),
    ),
  );
}

async function pingPong(port: number, ms: number): Promise<PingResult> {
  const sockets = await connectAll(port, CONNS);
  const msg = Buffer.alloc(PING_BYTES, 120);
  let lat: number[] = [];
  let requests = 0;
  const end = performance.now() + ms;
  const t0 = performance.now();
  await Promise.all(
    sockets.map(
      (s) =>
        new Promise<void>((resolve) => {
          let got = 0;
          let sentAt = 0;
          const send = () => {
            sentAt = performance.now();
            s.write(msg);
          };
          s.on('data', (d: Buffer) => {
            got += d.length;
            if (got < PING_BYTES) return;
            got -= PING_BYTES;
            const now = performance.now();
            lat.push(now - sentAt);
            requests++;
            if (now < end) send();
            else resolve();
          });
          send();
        }),
    ),
  );
  const elapsed = performance.now() - t0;
  await closeAll(sockets);
  const sorted = Float64Array.from(lat).sort();
  lat = [];
  return { requests, ms: elapsed, p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

async function bulk(port: number, ms: number): Promise<{ bytes: number; ms: number }> {
  const sockets = await connectAll(port, CONNS);
  const chunk = Buffer.alloc(BULK_CHUNK, 7);
  let bytes = 0;
  const end = performance.now() + ms;
  const t0 = performance.now();
  await Promise.all(
    sockets.map(
      (s) =>
        new Promise<void>((resolve) => {
          let inFlight = 0; // bytes sent and not yet echoed
          let stopping = false;
          const fill = () => {
            while (!stopping && inFlight < BULK_WINDOW * BULK_CHUNK) {
              inFlight += BULK_CHUNK;
              s.write(chunk);
            }
          };
          s.on('data', (d: Buffer) => {
            bytes += d.length;
            inFlight -= d.length;
            if (performance.now() >= end) stopping = true;
            if (stopping) {
              if (inFlight <= 0) resolve();
            } else fill();
          });
          fill();
        }),
    ),
  );
  const elapsed = performance.now() - t0;
  await closeAll(sockets);
  return { bytes, ms: elapsed };
}

async function clientMain(): Promise<void> {
  let idle: net.Socket[] = [];
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const cmd = JSON.parse(line) as { op: string; port: number; ms: number; n: number };
    let out: unknown;
    if (cmd.op === 'ping') out = await pingPong(cmd.port, cmd.ms);
    else if (cmd.op === 'bulk') out = await bulk(cmd.port, cmd.ms);
    else if (cmd.op === 'idle') {
      idle = await connectAll(cmd.port, cmd.n);
      out = { opened: idle.length };
    } else if (cmd.op === 'close-idle') {
      await closeAll(idle);
      idle = [];
      out = { closed: true };
    } else break;
    process.stdout.write(`${JSON.stringify(out)}\n`);
  }
}

// ---------------------------------------------------------------------------- the servers

interface Candidate {
  name: string;
  port: number;
  /** Open connections right now, as the server counts them. */
  open(): number;
  stop(): Promise<void>;
}

async function rawEcho(): Promise<Candidate> {
  // The same socket options quiesce uses, so the comparison measures the layer only.
  const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
    socket.on('data', (d) => socket.write(d));
    socket.on('end', () => socket.end());
    socket.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  let open = 0;
  server.on('connection', (s) => {
    open++;
    s.once('close', () => open--);
  });
  return {
    name: 'node:net (raw)',
    port: (server.address() as net.AddressInfo).port,
    open: () => open,
    stop: () => new Promise((r) => server.close(() => r())),
  };
}

async function quiesceEcho(): Promise<Candidate> {
  const listener = await listen({ host: '127.0.0.1', port: 0 });
  const server: Server = serve(listener, async (conn) => {
    for (let b = await conn.read(); b !== null; b = await conn.read()) await conn.write(b);
  });
  return {
    name: 'quiesce/net',
    port: listener.port!,
    open: () => server.connections,
    stop: async () => {
      await server.shutdown({ drainTimeoutMs: 1000 });
    },
  };
}

// ---------------------------------------------------------------------------- the driver

class Client {
  readonly #child: ChildProcess;
  readonly #waiting: ((line: string) => void)[] = [];
  constructor() {
    this.#child = spawn(process.execPath, [import.meta.filename, '--client'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    createInterface({ input: this.#child.stdout! }).on('line', (l) => this.#waiting.shift()?.(l));
  }
  ask<T>(cmd: object): Promise<T> {
    return new Promise<T>((resolve) => {
      this.#waiting.push((l) => resolve(JSON.parse(l) as T));
      this.#child.stdin!.write(`${JSON.stringify(cmd)}\n`);
    });
  }
  async close(): Promise<void> {
    const exited = new Promise<void>((r) => this.#child.once('exit', () => r()));
    this.#child.stdin!.end();
    await exited;
  }
}

async function main(): Promise<void> {
  console.log(describeMachine());
  console.log(
    `echo: ${CONNS} connections, ${ROUNDS} round(s) of ${ROUND_MS} ms per candidate and load, load from a child process`,
  );
  const candidates = [await rawEcho(), await quiesceEcho()];
  const client = new Client();
  const ping = candidates.map(() => [] as PingResult[]);
  const pingCpu = candidates.map(() => [] as number[]);
  const bulkRates = candidates.map(() => [] as number[]);
  const bulkCpu = candidates.map(() => [] as number[]);
  // Warm-up: JIT both paths before anything counts.
  for (const c of candidates) {
    await client.ask({ op: 'ping', port: c.port, ms: isQuick ? 100 : 500 });
    await client.ask({ op: 'bulk', port: c.port, ms: isQuick ? 100 : 500 });
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (let k = 0; k < candidates.length; k++) {
      const i = (k + r) % candidates.length;
      const c = candidates[i];
      // The servers are the only work in this process, so its CPU time is theirs.
      let cpu = process.cpuUsage();
      const p = await client.ask<PingResult>({ op: 'ping', port: c.port, ms: ROUND_MS });
      cpu = process.cpuUsage(cpu);
      ping[i].push(p);
      pingCpu[i].push((cpu.user + cpu.system) / p.requests);
      cpu = process.cpuUsage();
      const b = await client.ask<{ bytes: number; ms: number }>({
        op: 'bulk',
        port: c.port,
        ms: ROUND_MS,
      });
      cpu = process.cpuUsage(cpu);
      bulkRates[i].push(b.bytes / 2 ** 20 / (b.ms / 1000));
      bulkCpu[i].push((cpu.user + cpu.system) / (b.bytes / 2 ** 20));
    }
    process.stderr.write('.');
  }
  process.stderr.write('\n');

  // Memory per idle connection, one candidate at a time.
  const perConn: { heap: number; rss: number }[] = [];
  for (const c of candidates) {
    await pause(50);
    const m0 = memory();
    await client.ask({ op: 'idle', port: c.port, n: IDLE_CONNS });
    while (c.open() < IDLE_CONNS) await pause(10);
    await pause(100);
    const m1 = memory();
    perConn.push({ heap: (m1.heap - m0.heap) / IDLE_CONNS, rss: (m1.rss - m0.rss) / IDLE_CONNS });
    await client.ask({ op: 'close-idle' });
    while (c.open() > 0) await pause(10);
  }

  await client.close();
  for (const c of candidates) await c.stop();

  const rps = ping.map((rs) => median(rs.map((x) => x.requests / (x.ms / 1000))));
  const p50 = ping.map((rs) => median(rs.map((x) => x.p50)));
  const p99 = ping.map((rs) => median(rs.map((x) => x.p99)));
  const mbs = bulkRates.map((xs) => median(xs));
  const cpuReq = pingCpu.map((xs) => median(xs));
  const cpuMiB = bulkCpu.map((xs) => median(xs));
  console.log(`\nping-pong, ${PING_BYTES} B messages (median of ${ROUNDS} rounds)`);
  printRows([
    ['candidate', 'req/s', 'p50', 'p99', 'server CPU/req', '× raw req/s'],
    ...candidates.map((c, i) => [
      c.name,
      rps[i].toFixed(0),
      `${p50[i].toFixed(3)} ms`,
      `${p99[i].toFixed(3)} ms`,
      `${cpuReq[i].toFixed(1)} µs`,
      `${(rps[i] / rps[0]).toFixed(3)}×`,
    ]),
  ]);
  console.log(`\nbulk, ${BULK_CHUNK / 1024} KiB chunks, ${BULK_WINDOW} in flight per connection`);
  printRows([
    ['candidate', 'MiB/s', 'server CPU/MiB', '× raw'],
    ...candidates.map((c, i) => [
      c.name,
      mbs[i].toFixed(1),
      `${(cpuMiB[i] / 1000).toFixed(2)} ms`,
      `${(mbs[i] / mbs[0]).toFixed(3)}×`,
    ]),
  ]);
  console.log(`\nmemory per idle connection (${IDLE_CONNS} connections, server process)`);
  printRows([
    ['candidate', 'heap', 'rss'],
    ...candidates.map((c, i) => [
      c.name,
      formatBytes(perConn[i].heap),
      formatBytes(perConn[i].rss),
    ]),
  ]);
  const missed = printVerdicts('targets', [
    {
      target: 'ping-pong req/s ≥ 0.95× raw',
      measured: `${(rps[1] / rps[0]).toFixed(3)}×`,
      met: rps[1] / rps[0] >= 0.95,
    },
    {
      target: 'bulk MiB/s ≥ 0.95× raw',
      measured: `${(mbs[1] / mbs[0]).toFixed(3)}×`,
      met: mbs[1] / mbs[0] >= 0.95,
    },
  ]);
  if (missed > 0 && !isQuick) console.log(`${missed} target(s) not met`);
}

if (process.argv.includes('--client')) await clientMain();
else await main();
