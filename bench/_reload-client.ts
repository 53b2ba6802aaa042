/**
 * The load client of bench/reload.ts, run in its own process: `--port P --connections N
 * --duration-ms D [--keep-alive] [--timeout-ms T] [--detail]`. N connections send `GET /` back to back
 * (one request in flight per connection, as wrk does) for D ms, over raw sockets so that the
 * client costs little CPU beside the servers it measures. Each request is classified as wrk
 * counts it — ok (2xx), non-2xx, connect, read, write, timeout — and timed. On stdin EOF or
 * at the end it prints one JSON line: per-request records (compact) and nothing else.
 *
 * Invariant: every request started is counted exactly once, by the first of its outcomes.
 */
import * as net from 'node:net';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const PORT = opt('--port', 0);
const CONNECTIONS = opt('--connections', 50);
const DURATION_MS = opt('--duration-ms', 10_000);
const TIMEOUT_MS = opt('--timeout-ms', 2000);
const KEEP_ALIVE = args.includes('--keep-alive');

type Kind = 'ok' | 'non2xx' | 'connect' | 'read' | 'write' | 'timeout';
const KINDS: Kind[] = ['ok', 'non2xx', 'connect', 'read', 'write', 'timeout'];

// Wall-clock ms (shared with the driver, which marks the reloads on the same clock).
const wall = () => performance.timeOrigin + performance.now();
// Records: start ms, latency ms, kind index; flat arrays keep a 30 s run small.
const starts: number[] = [];
const lats: number[] = [];
const kinds: number[] = [];
// --detail (for --trace): which worker answered (the pid in the app's body, 0 if none) and
// whether the request was its socket's first.
const DETAIL = args.includes('--detail');
const pids: number[] = [];
const fresh: number[] = [];
let curPid = 0;
let curFresh = 0;
const end = wall() + DURATION_MS;

const REQUEST = Buffer.from(
  `GET / HTTP/1.1\r\nHost: 127.0.0.1:${PORT}\r\n${KEEP_ALIVE ? '' : 'Connection: close\r\n'}\r\n`,
);

function record(start: number, kind: Kind): void {
  starts.push(Math.round(start));
  lats.push(Math.round((wall() - start) * 100) / 100);
  kinds.push(KINDS.indexOf(kind));
  if (DETAIL) {
    pids.push(curPid);
    fresh.push(curFresh);
  }
}

/** One connection's loop: requests back to back, a new socket after every close. */
async function connectionLoop(): Promise<void> {
  while (wall() < end) await session();
}

/** One socket: as many requests as it carries (one without keep-alive). */
function session(): Promise<void> {
  return new Promise((resolve) => {
    let start = wall();
    let connected = false;
    let settled = true; // no request outstanding
    let buf: Buffer = Buffer.alloc(0);
    let timer: ReturnType<typeof setTimeout> | null = null;
    const sock = net.connect({ port: PORT, host: '127.0.0.1', noDelay: true });
    const finish = (kind: Kind | null) => {
      if (timer) clearTimeout(timer);
      timer = null;
      if (!settled && kind) record(start, kind);
      settled = true;
    };
    let n = 0;
    const send = () => {
      start = wall();
      settled = false;
      buf = Buffer.alloc(0);
      timer = setTimeout(() => {
        finish('timeout');
        sock.destroy();
      }, TIMEOUT_MS);
      sock.write(REQUEST, (e) => {
        if (e) {
          finish('write');
          sock.destroy();
        }
      });
    };
    sock.once('connect', () => {
      connected = true;
      send();
    });
    sock.on('data', (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      const head = buf.indexOf('\r\n\r\n');
      if (head < 0) return;
      const text = buf.subarray(0, head).toString('latin1');
      const m = /content-length:\s*(\d+)/i.exec(text);
      const len = m ? Number(m[1]) : 0;
      if (buf.length < head + 4 + len) return;
      const status = Number(text.slice(9, 12));
      if (DETAIL) {
        const pm = / from (\d+)/.exec(buf.subarray(head + 4).toString('latin1'));
        curPid = pm ? Number(pm[1]) : 0;
        curFresh = n++ === 0 ? 1 : 0;
      }
      const closing = /\r\nconnection:\s*close/i.test(text);
      finish(status >= 200 && status < 300 ? 'ok' : 'non2xx');
      if (KEEP_ALIVE && !closing && wall() < end) send();
      else sock.end();
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (DETAIL) {
        curPid = 0;
        curFresh = n === 0 ? 1 : 0;
      }
      if (!connected) {
        // A refused or failed connect is one failed request (wrk counts it as connect).
        settled = false;
        finish('connect');
      } else if (e.code === 'EPIPE') finish('write');
      else finish('read');
    });
    sock.on('close', () => {
      if (DETAIL) curPid = 0;
      // Closed with a request outstanding and no error: the server hung up on it (read).
      finish('read');
      resolve();
    });
  });
}

await Promise.all(Array.from({ length: CONNECTIONS }, () => connectionLoop()));
const detail = DETAIL ? { pids, fresh } : {};
process.stdout.write(`${JSON.stringify({ starts, lats, kinds, kindNames: KINDS, ...detail })}\n`);
