/**
 * Shared fixtures for the quiesce/net tests: real sockets on 127.0.0.1, port 0.
 */
import net from 'node:net';
import { Connection } from '../../src/net/connection.ts';

/** A connected pair: our `Connection` on the accepted side and a raw client socket. */
export interface Pair {
  conn: Connection;
  client: net.Socket;
  /** Destroys both ends and waits until both sockets are closed. */
  close(): Promise<void>;
}

/** Accepts one connection on a throwaway listener and wraps the accepted socket. */
export async function pair(settings?: { idleTimeoutMs?: number }): Promise<Pair> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  client.on('error', () => {});
  const socket = await accepted;
  // Stops accepting now; 'close' comes once the accepted socket has closed too.
  const serverClosed = new Promise<void>((r) => server.close(() => r()));
  const conn = new Connection(socket, settings);
  await new Promise<void>((r) => (client.connecting ? client.once('connect', r) : r()));
  return {
    conn,
    client,
    async close() {
      client.destroy();
      conn.destroy();
      await Promise.all([conn.closed, closedOf(client), serverClosed]);
    },
  };
}

/** Resolves when `s` has emitted 'close' (at once if it already has). */
export function closedOf(s: net.Socket): Promise<void> {
  if (s.closed) return Promise.resolve();
  return new Promise((r) => s.once('close', () => r()));
}

/** What a client saw of one connection, start to close. */
export interface Seen {
  data: string;
  /** The peer's FIN arrived ('end'). */
  ended: boolean;
  /** The socket error code, if any (ECONNRESET for a reset). */
  error: string | undefined;
}

/**
 * Collects everything `socket` receives until it closes. Like an ordinary client it ends its
 * side when the peer does, unless `endOnEnd` is false (a peer that never closes).
 */
export function collect(socket: net.Socket, options?: { endOnEnd?: boolean }): Promise<Seen> {
  const seen: Seen = { data: '', ended: false, error: undefined };
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => {
    seen.data += d;
  });
  socket.on('end', () => {
    seen.ended = true;
    if (options?.endOnEnd !== false) socket.end();
  });
  socket.on('error', (e: Error & { code?: string }) => {
    seen.error ??= e.code ?? e.message;
  });
  return new Promise((r) => socket.once('close', () => r(seen)));
}

/** Connects a raw client to `port` on 127.0.0.1; resolves once connected, rejects on error. */
export function dial(port: number, options?: { allowHalfOpen?: boolean }): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: options?.allowHalfOpen });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/**
 * A client that connects, sends `send` (if any) — then ends its side too with `end: true` —
 * and returns what it saw; it ends its side anyway once the server ends.
 */
export async function converse(
  port: number,
  send?: string,
  options?: { end?: boolean },
): Promise<Seen> {
  const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const seen = collect(s);
  s.once('connect', () => {
    if (send !== undefined) s.write(send);
    if (options?.end) s.end();
  });
  return seen;
}

/** Waits for `ms` of real time (tests whose subject is the kernel use real time). */
export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` every 5 ms until it holds or `ms` passes; returns whether it held. */
export async function until(cond: () => boolean, ms = 2000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await delay(5);
  }
  return true;
}
