/**
 * Listening sockets: TCP host/port (IPv4 and IPv6), unix socket paths, and descriptors handed
 * over by a parent (systemd's `LISTEN_FDS`, the quiesce supervisor).
 *
 * Guarantees:
 * 1. No accepted connection is lost between `listen` and `serve`: sockets accepted before a
 *    server takes the listener wait, unread, and are handed to it first (or closed when the
 *    listener closes unserved).
 * 2. Accepted sockets are paused and half-open capable: no byte is read before a handler asks,
 *    and a peer's FIN does not close our side behind the handler's back.
 * 3. A stale unix socket file (nobody accepting on it) is replaced; a live one or a file that
 *    is not a socket is an `ListenError`, never deleted.
 * 4. Accept errors never crash the process: they are counted and reported with backoff.
 * 5. `close()` resolves once the listening socket and every connection accepted through it are
 *    closed — nothing of it is left in the event loop.
 */
import { lstatSync, unlinkSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import net from 'node:net';
import { now } from '../core/clock.ts';
import { report } from '../core/diagnostics.ts';
import { ArgumentError } from '../core/errors.ts';
import { ListenError, NoInheritedSocketError } from './errors.ts';
import { claimInherited, releaseInherited } from './systemd.ts';

/** Listen on a TCP port. */
export interface TcpListenOptions {
  /** Port number; 0 picks a free one (read it back from `listener.port`). */
  port: number;
  /** Address to bind. Default: all interfaces (`'::'` dual-stack, or `'0.0.0.0'`), as Node. */
  host?: string;
  /** With an IPv6 host, refuse IPv4-mapped connections. Default: false. */
  ipv6Only?: boolean;
  /** Kernel accept-queue length. Default: 511. */
  backlog?: number;
}

/** Listen on a unix domain socket. */
export interface UnixListenOptions {
  /** Filesystem path of the socket (or `'\0name'` for the Linux abstract namespace). */
  path: string;
  /** Permission bits of the socket file, such as `0o660`. Default: from the process umask. */
  mode?: number;
  /** Replace a stale socket file nobody accepts on. Default: true. */
  removeStale?: boolean;
  /** Kernel accept-queue length. Default: 511. */
  backlog?: number;
}

/** Listen on a descriptor that is already a bound, listening socket. */
export interface FdListenOptions {
  /** The descriptor, such as 3 for the first `LISTEN_FDS` socket. */
  fd: number;
  /** A name for diagnostics (the `LISTEN_FDNAMES` entry). */
  name?: string;
}

/** What `listen` accepts: one of the three forms. */
export type ListenOptions = TcpListenOptions | UnixListenOptions | FdListenOptions;

/** Where a listener listens. */
export type ListenerAddress =
  | { kind: 'tcp'; host: string; port: number; family: 'IPv4' | 'IPv6' }
  | { kind: 'unix'; path: string }
  | { kind: 'fd'; fd: number; name: string | undefined };

/** An accept error as the listener reports it (see `Listener.onAcceptError`). */
export interface AcceptErrorInfo {
  readonly error: Error & { code?: string };
  /** Errors of this listener so far, including this one. */
  readonly count: number;
  /** Errors that arrived since the last report and were not reported on their own. */
  readonly suppressed: number;
}

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 10_000;

/**
 * A listening socket. Create one with `listen` or `listenInherited`; hand it to `serve`.
 * `await using` closes it.
 */
export class Listener implements AsyncDisposable {
  /** The Node server that owns the socket — an escape hatch; `serve` drives it. */
  readonly server: net.Server;
  readonly #address: ListenerAddress;
  #queue: net.Socket[] | null = [];
  #sink: ((socket: net.Socket) => void) | null = null;
  #closing: Promise<void> | null = null;
  #acceptErrors = 0;
  #suppressed = 0;
  #backoffMs = BACKOFF_MIN_MS;
  #quietUntil = Number.NEGATIVE_INFINITY;
  /**
   * Where accept errors go once the backoff lets one through; by default a process warning
   * with code `QUIESCE_ACCEPT_ERROR`. `serve({ onAcceptError })` sets it.
   */
  onAcceptError: ((info: AcceptErrorInfo) => void) | null = null;

  /** @internal use `listen`. */
  constructor(server: net.Server, address: ListenerAddress) {
    this.server = server;
    this.#address = address;
    server.on('connection', (socket: net.Socket) => this.#accepted(socket));
    server.on('error', (e: Error) => this.#acceptError(e));
  }

  /** Where it listens (for TCP with the port actually bound). */
  get address(): ListenerAddress {
    return this.#address;
  }

  /** The bound TCP port, or undefined for unix sockets and descriptors. */
  get port(): number | undefined {
    return this.#address.kind === 'tcp' ? this.#address.port : undefined;
  }

  /** True once `close()` was called: the socket accepts nothing more in this process. */
  get closed(): boolean {
    return this.#closing !== null;
  }

  /** Accept errors seen so far (EMFILE and friends). */
  get acceptErrors(): number {
    return this.#acceptErrors;
  }

  #accepted(socket: net.Socket): void {
    // A socket may fail before anyone reads it; an 'error' without a listener would crash.
    if (this.#sink) {
      this.#sink(socket);
    } else if (this.#queue) {
      socket.on('error', noop);
      this.#queue.push(socket);
    } else {
      socket.destroy();
    }
  }

  #acceptError(e: Error & { code?: string }): void {
    this.#acceptErrors++;
    const t = now();
    if (t < this.#quietUntil) {
      this.#suppressed++;
      return;
    }
    // Errors keep coming: report one, then stay quiet twice as long (a flood of EMFILE must
    // not turn into a flood of log lines); a quiet spell resets the window.
    const quiet = t - this.#quietUntil > this.#backoffMs * 2;
    this.#backoffMs = quiet ? BACKOFF_MIN_MS : Math.min(this.#backoffMs * 2, BACKOFF_MAX_MS);
    this.#quietUntil = t + this.#backoffMs;
    const info: AcceptErrorInfo = {
      error: e,
      count: this.#acceptErrors,
      suppressed: this.#suppressed,
    };
    this.#suppressed = 0;
    if (this.onAcceptError) {
      try {
        this.onAcceptError(info);
        return;
      } catch {
        // fall through to the default report: an accept error must be seen somewhere
      }
    }
    report({
      code: 'QUIESCE_ACCEPT_ERROR',
      message: `accept failed on ${describe(this.#address)}${
        info.suppressed ? ` (${info.suppressed} more since the last report)` : ''
      }`,
      error: e,
    });
  }

  /**
   * @internal hands every accepted socket to `sink`, first those accepted before. Only one
   * sink: `serve` checks `taken` first.
   */
  attach(sink: (socket: net.Socket) => void): void {
    this.#sink = sink;
    const q = this.#queue ?? [];
    this.#queue = null;
    for (const s of q) {
      s.off('error', noop);
      sink(s);
    }
  }

  /** @internal true once a server took this listener. */
  get taken(): boolean {
    return this.#sink !== null;
  }

  /**
   * Stops accepting and resolves once the socket and every connection accepted through it are
   * closed. Connections are not touched: close them (or let `serve` do it) for this to resolve.
   * Sockets accepted but never served are closed here. Idempotent.
   * For an inherited descriptor this closes only this process's copy: the parent's copy keeps
   * the socket open, so clients queue for the next process instead of being refused.
   * **Cancellation**: not a checkpoint; the wait cannot be interrupted (it is bounded by the
   * connections' own lifetimes).
   * @example
   * await listener.close();
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closing = new Promise<void>((resolve) => {
      if (!this.server.listening) {
        resolve();
        return;
      }
      this.server.close(() => resolve());
    });
    const q = this.#queue;
    this.#queue = null;
    if (q) for (const s of q) s.destroy();
    return this.#closing;
  }

  /** Closes the listener (`await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function noop(): void {}

function describe(a: ListenerAddress): string {
  if (a.kind === 'tcp')
    return a.family === 'IPv6' ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
  if (a.kind === 'unix') return a.path;
  return `fd ${a.fd}${a.name ? ` (${a.name})` : ''}`;
}

function newServer(): net.Server {
  return net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
}

function bind(server: net.Server, options: net.ListenOptions, what: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (e: Error & { code?: string }) => {
      server.off('listening', onListening);
      reject(new ListenError(`cannot listen on ${what}: ${e.code ?? e.message}`, e));
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    try {
      server.listen(options);
    } catch (e) {
      server.off('error', onError);
      server.off('listening', onListening);
      reject(new ListenError(`cannot listen on ${what}: ${(e as Error).message}`, e));
    }
  });
}

function validPort(port: unknown): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ArgumentError(`listen: port must be an integer from 0 to 65535, got ${String(port)}`);
  }
  return port;
}

/** Probes a unix socket file: true if something accepts on it. */
function probe(path: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const c = net.connect({ path });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

async function clearStale(path: string): Promise<void> {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT') return;
    throw new ListenError(`cannot listen on ${path}: ${(e as Error).message}`, e);
  }
  if (!st.isSocket()) {
    throw new ListenError(
      `cannot listen on ${path}: the path exists and is not a socket (refusing to delete it)`,
      Object.assign(new Error('EEXIST'), { code: 'EEXIST' }),
    );
  }
  if (await probe(path)) {
    throw new ListenError(
      `cannot listen on ${path}: another process is accepting on it`,
      Object.assign(new Error('EADDRINUSE'), { code: 'EADDRINUSE' }),
    );
  }
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as { code?: string }).code !== 'ENOENT') {
      throw new ListenError(`cannot remove stale socket ${path}: ${(e as Error).message}`, e);
    }
  }
}

async function listenUnix(o: UnixListenOptions): Promise<Listener> {
  if (typeof o.path !== 'string' || o.path === '') {
    throw new ArgumentError('listen: path must be a non-empty string');
  }
  if (o.mode !== undefined && (!Number.isInteger(o.mode) || o.mode < 0 || o.mode > 0o777)) {
    throw new ArgumentError(`listen: mode must be permission bits such as 0o660, got ${o.mode}`);
  }
  const abstract = o.path.startsWith('\0');
  if (!abstract && o.removeStale !== false) await clearStale(o.path);
  const server = newServer();
  // The socket file is created by bind() with the umask applied: narrowing the umask around
  // the synchronous bind means no client can connect through looser permissions meanwhile.
  let oldMask: number | undefined;
  if (o.mode !== undefined && !abstract) {
    try {
      oldMask = process.umask(0o777 & ~o.mode);
    } catch {
      oldMask = undefined; // worker threads may not change the umask; chmod below still applies
    }
  }
  try {
    await bind(server, { path: o.path, backlog: o.backlog }, o.path);
  } finally {
    if (oldMask !== undefined) process.umask(oldMask);
  }
  if (o.mode !== undefined && !abstract) {
    try {
      await chmod(o.path, o.mode);
    } catch (e) {
      server.close();
      throw new ListenError(`cannot set mode of ${o.path}: ${(e as Error).message}`, e);
    }
  }
  return new Listener(server, { kind: 'unix', path: o.path });
}

async function listenFd(o: FdListenOptions): Promise<Listener> {
  if (!Number.isInteger(o.fd) || o.fd < 0) {
    throw new ArgumentError(`listen: fd must be a descriptor number, got ${String(o.fd)}`);
  }
  const server = newServer();
  // Node takes `{ fd }` as a handle to listen on (typed as a separate overload).
  await bind(server, { fd: o.fd } as net.ListenOptions, `fd ${o.fd}`);
  return new Listener(server, { kind: 'fd', fd: o.fd, name: o.name });
}

async function listenTcp(o: TcpListenOptions): Promise<Listener> {
  const port = validPort(o.port);
  const server = newServer();
  const what = o.host ? `${o.host}:${port}` : `port ${port}`;
  await bind(server, { port, host: o.host, ipv6Only: o.ipv6Only, backlog: o.backlog }, what);
  const a = server.address() as net.AddressInfo;
  return new Listener(server, {
    kind: 'tcp',
    host: a.address,
    port: a.port,
    family: a.family === 'IPv6' ? 'IPv6' : 'IPv4',
  });
}

/**
 * Opens a listening socket: `{ port, host? }` for TCP (IPv4 or IPv6), `{ path, mode? }` for a
 * unix socket, `{ fd }` for a descriptor that is already listening. Connections accepted before
 * a server takes the listener wait unread (guarantee 1).
 * **Cancellation**: not a checkpoint; binding does not block on the network.
 * @example
 * await using listener = await listen({ host: '127.0.0.1', port: 0 });
 * console.log(listener.port);
 */
export function listen(options: ListenOptions): Promise<Listener> {
  if (typeof options !== 'object' || options === null) {
    return Promise.reject(new ArgumentError('listen(options): options must be an object'));
  }
  if ('fd' in options && options.fd !== undefined) return listenFd(options);
  if ('path' in options && options.path !== undefined) return listenUnix(options);
  if ('port' in options) return listenTcp(options);
  return Promise.reject(
    new ArgumentError('listen(options): give one of { port, host? }, { path } or { fd }'),
  );
}

/** Options for `listenInherited`. */
export interface ListenInheritedOptions {
  /** What to listen on when no socket was inherited (a worker run by hand, say). */
  fallback?: ListenOptions;
}

/**
 * Listens on a socket inherited through `LISTEN_FDS` — the one called `name` in
 * `LISTEN_FDNAMES`, or the only one when `name` is omitted. Without a match it listens on
 * `options.fallback`, or throws `NoInheritedSocketError`. Each inherited socket can be taken once.
 * **Cancellation**: not a checkpoint.
 * @example
 * const listener = await listenInherited('http', { fallback: { port: 8080 } });
 */
export async function listenInherited(
  name?: string,
  options?: ListenInheritedOptions,
): Promise<Listener> {
  const s = claimInherited(name);
  if (!s) {
    if (options?.fallback) return listen(options.fallback);
    throw new NoInheritedSocketError(
      name === undefined
        ? 'no socket was inherited (LISTEN_FDS is not set for this process)'
        : `no inherited socket is called "${name}" (LISTEN_FDNAMES)`,
    );
  }
  try {
    return await listenFd({ fd: s.fd, name: s.name });
  } catch (e) {
    releaseInherited(s.fd);
    throw e;
  }
}
