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
 * 3. A stale unix socket file of ours (connecting is refused) is replaced; a live one — busy
 *    ones included —, another user's, or a file that is not a socket is a `ListenError`, never
 *    deleted. Of several
 *    `listen` calls racing over one stale file exactly one wins (`bindUnixPath`, `lockPath`).
 * 4. Accept errors never crash the process: they are counted and reported with backoff.
 * 5. `close()` resolves once the listening socket and every connection accepted through it are
 *    closed — nothing of it is left in the event loop.
 */
import { createHash } from 'node:crypto';
import { chmodSync, lstatSync, type Stats, statSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname, resolve } from 'node:path';
import { ArgumentError } from '../core/index.ts';
import { now, report } from '../core/internal.ts';
import { ListenError, NoInheritedSocketError } from './errors.ts';
import { describeError, observeHookResult } from './hooks.ts';
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
  onAcceptError: ((info: AcceptErrorInfo) => unknown) | null = null;

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
        observeHookResult(this.onAcceptError(info), (hookError) =>
          report({
            code: 'QUIESCE_HANDLER_ERROR',
            message: `onAcceptError of ${describe(this.#address)} failed while reporting an accept error (${describeError(e)})`,
            error: hookError,
          }),
        );
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

function validBacklog(backlog: unknown): number | undefined {
  if (backlog === undefined) return undefined;
  if (typeof backlog !== 'number' || !Number.isInteger(backlog) || backlog < 0) {
    throw new ArgumentError(`listen: backlog must be an integer >= 0, got ${String(backlog)}`);
  }
  return backlog;
}

function errorCode(e: unknown): string | undefined {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : undefined;
}

function inUse(path: string, why: string): ListenError {
  return new ListenError(
    `cannot listen on ${path}: ${why}`,
    Object.assign(new Error('EADDRINUSE'), { code: 'EADDRINUSE' }),
  );
}

/**
 * Connects to a unix socket file to learn whether something listens on it: 'live' (it
 * accepted), 'stale' (ECONNREFUSED: a socket file nobody listens on), 'gone' (ENOENT), or
 * another connect error code. Only 'stale' may be replaced: a live server whose accept queue
 * is full answers EAGAIN, and it is not ours to take over.
 */
function probe(path: string): Promise<string> {
  return new Promise<string>((resolve) => {
    const c = net.connect({ path });
    c.once('connect', () => {
      c.destroy();
      resolve('live');
    });
    c.once('error', (e) => {
      const code = errorCode(e);
      resolve(code === 'ECONNREFUSED' ? 'stale' : code === 'ENOENT' ? 'gone' : (code ?? 'error'));
    });
  });
}

/**
 * Binds and listens on `o.path` with the socket file created with `o.mode`. Node's `listen`
 * makes the bind(2) and listen(2) calls synchronously and reports their outcome one tick
 * later, so the umask is narrowed only for the duration of that synchronous call — no other
 * code of this thread runs meanwhile, and no client ever finds looser permissions. The chmod
 * right after (same tick, before any accept) makes the bits exact where the umask cannot
 * (a worker thread may not change it; a default ACL overrides it); only then is there a window,
 * of microseconds, in which a client could connect through the looser bits.
 */
function bindPath(server: net.Server, o: UnixListenOptions, abstract: boolean): Promise<void> {
  const mode = abstract ? undefined : o.mode;
  let oldMask: number | undefined;
  if (mode !== undefined) {
    try {
      oldMask = process.umask(0o777 & ~mode);
    } catch {
      oldMask = undefined; // a worker thread: the chmod below alone applies the mode
    }
  }
  let bound: Promise<void>;
  try {
    bound = bind(server, { path: o.path, backlog: o.backlog }, o.path);
  } finally {
    if (oldMask !== undefined) process.umask(oldMask);
  }
  // `listening` is already true here iff bind(2) and listen(2) succeeded: never chmod a path
  // we did not bind (it may be another process's socket).
  if (mode !== undefined && server.listening) {
    try {
      chmodSync(o.path, mode);
    } catch (e) {
      server.close();
      bound.catch(noop);
      return Promise.reject(
        new ListenError(`cannot set mode of ${o.path}: ${(e as Error).message}`, e),
      );
    }
  }
  return bound;
}

/** A clearer error for a failed unix bind: libuv reports a missing directory as EACCES. */
function explainBindError(path: string, e: unknown): unknown {
  if (!(e instanceof ListenError) || e.errno !== 'EACCES') return e;
  const dir = dirname(path);
  try {
    if (!statSync(dir).isDirectory()) {
      return new ListenError(
        `cannot listen on ${path}: ${dir} is not a directory`,
        Object.assign(new Error('ENOTDIR'), { code: 'ENOTDIR' }),
      );
    }
  } catch (err) {
    const code = errorCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      return new ListenError(
        `cannot listen on ${path}: the directory ${dir} does not exist`,
        Object.assign(new Error('ENOENT'), { code: 'ENOENT' }),
      );
    }
  }
  return e;
}

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch (e) {
    if (errorCode(e) === 'ENOENT') return null;
    throw new ListenError(`cannot listen on ${path}: ${(e as Error).message}`, e);
  }
}

function uid(): number | null {
  return typeof process.getuid === 'function' ? process.getuid() : null;
}

/** Throws unless the file at `path` is a socket of ours that may be replaced if stale. */
function refuseToReplace(path: string, st: Stats, removeStale: boolean): void {
  if (!st.isSocket()) {
    throw new ListenError(
      `cannot listen on ${path}: the path exists and is not a socket (refusing to delete it)`,
      Object.assign(new Error('EEXIST'), { code: 'EEXIST' }),
    );
  }
  if (!removeStale) throw inUse(path, 'a socket file is there (removeStale is false)');
  const me = uid();
  if (me !== null && st.uid !== me) {
    throw inUse(
      path,
      `a socket file of uid ${st.uid} is there, not ours (refusing to replace it; ` +
        'remove it yourself if nothing uses it)',
    );
  }
}

/**
 * @internal binds a unix socket at `path` with `attempt` (which throws a `ListenError`), and
 * when the path is taken by a stale socket file of ours — connecting is refused — replaces it
 * under the lock (`lockPath`) and attempts once more. A live socket, a file that is not a
 * socket, or someone else's socket is a `ListenError`, never deleted. `listen` and the
 * supervisor (which binds without listening) both bind through here.
 */
export async function bindUnixPath<T>(
  path: string,
  removeStale: boolean,
  attempt: () => Promise<T>,
): Promise<T> {
  // Bind first: the kernel's bind(2) is the only check that two starting servers cannot both
  // pass. A stale file is looked at only when the bind failed because of it.
  try {
    return await attempt();
  } catch (e) {
    if (!(e instanceof ListenError) || e.errno !== 'EADDRINUSE' || path.startsWith('\0')) {
      throw explainBindError(path, e);
    }
  }
  const found = lstatOrNull(path);
  if (found !== null) refuseToReplace(path, found, removeStale);
  // Replacing a stale file takes a lock named after the path: two servers starting at once
  // both find the file stale, and without the lock the second would unlink the socket the
  // first has just bound (and both would "succeed").
  const lock = await lockPath(path);
  if (lock === null) throw inUse(path, 'another listen() is replacing the stale socket file');
  try {
    // Looked at again under the lock: whoever held it before has bound by now, so its socket
    // is seen live. null: the file went away meanwhile, so there is nothing to replace.
    const st = lstatOrNull(path);
    if (st !== null) {
      refuseToReplace(path, st, removeStale);
      const state = await probe(path);
      if (state === 'live') throw inUse(path, 'another process is accepting on it');
      if (state !== 'stale' && state !== 'gone') {
        throw inUse(path, `something still listens on it (connecting answered ${state})`);
      }
      try {
        unlinkSync(path);
      } catch (e) {
        if (errorCode(e) !== 'ENOENT') {
          throw new ListenError(`cannot remove stale socket ${path}: ${(e as Error).message}`, e);
        }
      }
    }
    // Once: if this fails too, a process that does not take the lock got the path first.
    try {
      return await attempt();
    } catch (e) {
      if (e instanceof ListenError && e.errno === 'EADDRINUSE') {
        throw inUse(path, 'another process bound it first');
      }
      throw explainBindError(path, e);
    }
  } finally {
    await lock.release();
  }
}

async function listenUnix(o: UnixListenOptions): Promise<Listener> {
  if (typeof o.path !== 'string' || o.path === '') {
    throw new ArgumentError('listen: path must be a non-empty string');
  }
  if (o.mode !== undefined && (!Number.isInteger(o.mode) || o.mode < 0 || o.mode > 0o777)) {
    throw new ArgumentError(`listen: mode must be permission bits such as 0o660, got ${o.mode}`);
  }
  if (o.removeStale !== undefined && typeof o.removeStale !== 'boolean') {
    throw new ArgumentError(`listen: removeStale must be a boolean, got ${String(o.removeStale)}`);
  }
  validBacklog(o.backlog);
  const path = o.path;
  const abstract = path.startsWith('\0');
  const server = await bindUnixPath(path, o.removeStale !== false, async () => {
    const s = newServer();
    await bindPath(s, o, abstract);
    return s;
  });
  return new Listener(server, { kind: 'unix', path });
}

const localLocks = new Set<string>();

/**
 * Takes the lock for replacing the socket file at `path`, or returns null if someone holds it.
 * On Linux the lock is a socket bound in the abstract namespace under a name derived from the
 * absolute path: bind(2) makes taking it atomic across processes, and the kernel frees it when
 * its holder dies, so a crash never leaves a stale lock. Elsewhere it is a lock of this process
 * only (two processes replacing the same stale file in the same millisecond remain a race).
 */
async function lockPath(path: string): Promise<{ release(): Promise<void> } | null> {
  const key = resolve(path);
  if (localLocks.has(key)) return null;
  localLocks.add(key);
  const unlock = () => {
    localLocks.delete(key);
  };
  if (process.platform !== 'linux') return { release: async () => unlock() };
  const name = `\0quiesce-listen-lock-${createHash('sha256').update(key).digest('hex').slice(0, 40)}`;
  const server = net.createServer();
  try {
    await bind(server, { path: name }, 'the stale-socket lock');
  } catch (e) {
    unlock();
    if (e instanceof ListenError && e.errno === 'EADDRINUSE') return null;
    throw e;
  }
  return {
    release: () =>
      new Promise<void>((r) =>
        server.close(() => {
          unlock();
          r();
        }),
      ),
  };
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
  if (o.host !== undefined && typeof o.host !== 'string') {
    throw new ArgumentError(`listen: host must be a string, got ${String(o.host)}`);
  }
  if (o.ipv6Only !== undefined && typeof o.ipv6Only !== 'boolean') {
    throw new ArgumentError(`listen: ipv6Only must be a boolean, got ${String(o.ipv6Only)}`);
  }
  validBacklog(o.backlog);
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
