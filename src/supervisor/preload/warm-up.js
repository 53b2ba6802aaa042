/**
 * Warm-up (`--warm-up PATH[:N]`, opt-in): before a new worker takes a single real connection,
 * it answers N requests for PATH from itself, so that the requests a reload hands it do not pay
 * for the cold start (the interpreter, lazy compilation and the JIT of the app's request path).
 *
 * Why before listening: a worker accepts from the shared queue as soon as it listens on the
 * inherited socket, whether or not the supervisor counts it as ready; a cold worker then
 * serves real clients at several times a warm one's cost per request.
 *
 * Guarantees:
 * 1. Only `QUIESCE_WARM_UP` (`PATH` or `PATH:N`, N from 1 to 100,000, default 200; PATH
 *    starts with `/`)
 *    turns it on; anything else means no warm-up and no change to how the worker listens.
 * 2. The requests reach the app's own server object (its 'request' handlers, its middleware)
 *    over private loopback connections of this process, never through the inherited socket:
 *    no client sees them, and the app sees them as `GET PATH` from 127.0.0.1 with the header
 *    `x-quiesce-warm-up: 1`.
 * 3. The warm-up ends — and the real listen goes ahead — after N answers or the first request
 *    that gets no complete answer within 2 s, and in any case within 10 s; its errors are never
 *    thrown into the app.
 */
import * as net from 'node:net';

/** Requests in flight at once during a warm-up. */
const PARALLEL = 2;
/** Requests pipelined on one warm-up connection. */
const BATCH = 10;
const REQUEST_TIMEOUT_MS = 2000;
const TOTAL_TIMEOUT_MS = 10_000;

/**
 * The warm-up `QUIESCE_WARM_UP` asks for, or null (guarantee 1).
 * @param {NodeJS.ProcessEnv} env
 * @returns {{ path: string, count: number } | null}
 */
export function warmUpSpec(env) {
  const raw = env.QUIESCE_WARM_UP;
  if (typeof raw !== 'string') return null;
  const m = /^(\/[^\s:]*)(?::(\d{1,6}))?$/.exec(raw);
  if (m === null) return null;
  const count = m[2] === undefined ? 200 : Number(m[2]);
  return count >= 1 && count <= 100_000 ? { path: m[1], count } : null;
}

/**
 * Drives `count` requests for `path` into `server`'s connection handler over private loopback
 * connections; resolves with how many got a complete answer (never rejects).
 * @param {import('node:net').Server} server
 * @param {{ path: string, count: number }} spec
 * @param {(this: net.Server, ...args: unknown[]) => net.Server} listen the unpatched listen
 * @returns {Promise<number>}
 */
export function warmUp(server, spec, listen) {
  return new Promise((resolve) => {
    // Half-open as node:http's own sockets are: its parser, not net, decides when to end.
    const side = net.createServer({ allowHalfOpen: true }, (sock) =>
      server.emit('connection', sock),
    );
    let answered = 0;
    let started = 0;
    let running = 0;
    let over = false;
    const finish = () => {
      if (over) return;
      over = true;
      clearTimeout(total);
      side.close();
      resolve(answered);
    };
    const total = setTimeout(finish, TOTAL_TIMEOUT_MS);
    side.on('error', finish);
    const request = (/** @type {boolean} */ last) =>
      `GET ${spec.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-quiesce-warm-up: 1\r\n${last ? 'Connection: close\r\n' : ''}\r\n`;
    const next = () => {
      if (over) return;
      if (started >= spec.count) {
        if (running === 0) finish();
        return;
      }
      // A few requests pipelined on one connection, the last closing it: the app's request
      // path runs as often, at less cost to this (one) process than a connection each.
      const batch = Math.min(BATCH, spec.count - started);
      started += batch;
      running++;
      const addr = /** @type {net.AddressInfo} */ (side.address());
      const c = net.connect({ port: addr.port, host: '127.0.0.1' });
      let text = '';
      let ok = 0;
      c.setEncoding('latin1');
      c.setTimeout(REQUEST_TIMEOUT_MS, () => c.destroy());
      c.on('data', (d) => {
        text += d;
      });
      c.on('end', () => {
        ok = text.match(/HTTP\/1\.1 2\d\d /g)?.length ?? 0;
        c.end();
      });
      c.on('error', () => {});
      c.on('close', () => {
        running--;
        answered += Math.min(ok, batch);
        if (ok < batch) started = spec.count; // the app does not answer this path: stop here
        next();
      });
      let all = '';
      for (let i = 1; i <= batch; i++) all += request(i === batch);
      c.write(all);
    };
    listen.call(side, 0, '127.0.0.1', () => {
      for (let i = 0; i < PARALLEL; i++) next();
    });
  });
}
