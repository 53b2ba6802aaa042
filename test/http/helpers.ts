/**
 * Shared fixtures for the quiesce/http tests: real sockets on 127.0.0.1 (port 0) and real
 * clients (Node's http Agent, raw sockets).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { until as untilWithin } from '../net/helpers.ts';

export { closedOf, delay } from '../net/helpers.ts';

/** net's `until` with a bound generous enough for a loaded machine. */
export function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  return untilWithin(cond, ms);
}

/** Listens on 127.0.0.1, port 0; resolves with the port. */
export async function listenLocal(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

/** One response as a client saw it. */
export interface Got {
  status: number;
  body: string;
  connection: string | undefined;
  reused: boolean;
}

/** A GET through `agent`; rejects with the socket error (its `reused` property says whether the socket was kept alive). */
export function get(port: number, path: string, agent: http.Agent): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body,
          connection: res.headers.connection,
          reused: req.reusedSocket,
        }),
      );
      res.on('error', (e) => reject(Object.assign(e, { reused: req.reusedSocket })));
    });
    req.on('error', (e) => reject(Object.assign(e, { reused: req.reusedSocket })));
  });
}

/** What a raw keep-alive client saw of its connection after its first response. */
export interface RawSeen {
  /** Bytes received (all responses). */
  data: string;
  /** The server's FIN arrived. */
  ended: boolean;
  /** A socket error (ECONNRESET for a reset). */
  error: string | undefined;
}

/**
 * A raw keep-alive client: sends one request, waits for the whole response, then stays idle.
 * `closed` resolves with what it saw when the server closes the connection (it answers a FIN
 * with its own, as HTTP clients do).
 */
export async function idleClient(
  port: number,
  path = '/',
): Promise<{ socket: net.Socket; closed: Promise<RawSeen>; send(path: string): void }> {
  const socket = net.connect({ port, host: '127.0.0.1' });
  const seen: RawSeen = { data: '', ended: false, error: undefined };
  socket.setEncoding('utf8');
  let first: (() => void) | null = null;
  const firstDone = new Promise<void>((r) => (first = r));
  socket.on('data', (d: string) => {
    seen.data += d;
    if (first && /\r\n\r\n[\s\S]*ok/.test(seen.data)) {
      first();
      first = null;
    }
  });
  socket.on('end', () => (seen.ended = true));
  socket.on('error', (e: Error & { code?: string }) => (seen.error ??= e.code ?? e.message));
  const closed = new Promise<RawSeen>((r) => socket.once('close', () => r(seen)));
  const send = (p: string) => socket.write(`GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`);
  await new Promise<void>((r, j) => {
    socket.once('connect', r);
    socket.once('error', j);
  });
  send(path);
  await firstDone;
  return { socket, closed, send };
}

/**
 * 50 keep-alive clients (`agent` with 50 sockets) request in a loop until `stop()` says so or
 * a fresh connection is refused (the listener closed). Invariant checked by callers: no
 * request sent on a reused socket fails.
 */
export function hammer(
  port: number,
  options: { clients?: number; path?: string; stop: () => boolean },
): Promise<{ ok: number; reusedFailures: string[]; freshFailures: number; closeHeaders: number }> {
  const clients = options.clients ?? 50;
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients });
  const out = { ok: 0, reusedFailures: [] as string[], freshFailures: 0, closeHeaders: 0 };
  const one = async () => {
    while (!options.stop()) {
      try {
        const r = await get(port, options.path ?? '/', agent);
        out.ok++;
        if (r.connection === 'close') out.closeHeaders++;
      } catch (e) {
        const err = e as Error & { code?: string; reused?: boolean };
        if (err.reused) out.reusedFailures.push(err.code ?? err.message);
        else {
          out.freshFailures++;
          return; // refused: the server stopped accepting
        }
      }
    }
  };
  return Promise.all(Array.from({ length: clients }, one)).then(() => {
    agent.destroy();
    return out;
  });
}

/**
 * The shutdown scene: 200 raw keep-alive clients made one request each and sit idle,
 * 5 requests to `/slow?ms=1000` are in the handler; then `stop()` (the drain). Returns the 5
 * responses, what each idle client saw, and how long after the last response `stop` resolved.
 */
export async function idleAndInflight<R>(
  port: number,
  active: () => number,
  stop: () => Promise<R>,
): Promise<{ report: R; responses: Got[]; idle: RawSeen[]; afterLastMs: number }> {
  const idle = [];
  for (let i = 0; i < 200; i++) idle.push(await idleClient(port));
  const agent = new http.Agent({ keepAlive: true });
  let last = 0;
  const inflight = Array.from({ length: 5 }, () =>
    get(port, '/slow?ms=1000', agent).then((r) => {
      last = performance.now();
      return r;
    }),
  );
  await until(() => active() === 5);
  const report = await stop();
  const ended = performance.now();
  const responses = await Promise.all(inflight);
  agent.destroy();
  return {
    report,
    responses,
    idle: await Promise.all(idle.map((c) => c.closed)),
    afterLastMs: ended - last,
  };
}
