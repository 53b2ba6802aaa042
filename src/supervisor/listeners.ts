/**
 * The listening sockets the supervisor keeps for the whole of its life.
 *
 * Guarantees:
 * 1. The supervisor never accepts a connection: it binds through a bare libuv handle that is
 *    never put in listening mode in this process (no accept watcher is ever armed here). A
 *    helper process runs `listen(2)` on the shared socket and exits before its event loop
 *    runs, so connections queue from the moment `bindListeners` returns until a worker
 *    accepts them.
 * 2. A socket lives as long as the supervisor holds it, whatever workers come and go: there is
 *    no instant at which the port is closed, so no client is ever refused across a reload.
 * 3. Sockets passed by systemd (`LISTEN_FDS` addressed to this process) are used as they are,
 *    in order, with their `LISTEN_FDNAMES`; the variables are then removed from the
 *    environment so they are not mistaken for the workers' own. They are parsed by net's one
 *    bounded parser, which also checks that each descriptor is a socket.
 * 4. A failure leaves nothing bound: what was bound before it is closed again.
 * 5. A unix path is bound through net's `bindUnixPath`: a stale socket file of ours is replaced
 *    under the lock, anything else is refused. An address in use names who holds it.
 */
import { spawn } from 'node:child_process';
import { lstatSync, unlinkSync } from 'node:fs';
import * as net from 'node:net';
import { getSystemErrorName } from 'node:util';
import { adopt } from '../core/index.ts';
import { ListenError } from '../net/errors.ts';
import { bindUnixPath } from '../net/listener.ts';
import { parseListenFds } from '../net/systemd.ts';
import { formatAddress, type ListenSpec } from './address.ts';
import { describeHolders } from './port-holders.ts';

/** A listening socket owned by the supervisor and handed to every worker. */
export interface Listener {
  /** Its name in `LISTEN_FDNAMES`. */
  readonly name: string;
  /** The address as bound, with the real port (`127.0.0.1:40123`, `unix:/run/x.sock`). */
  readonly address: string;
  /** The descriptor in the supervisor. */
  readonly fd: number;
  /** `'bound'` by the supervisor, or `'systemd'` when socket activation passed it in. */
  readonly origin: 'bound' | 'systemd';
}

/** A libuv TCP or Pipe handle, as `net._createServerHandle` returns it. */
interface RawHandle {
  readonly fd: number;
  getsockname?(out: Record<string, unknown>): number;
  close(cb?: () => void): void;
}

type CreateServerHandle = (
  address: string | null,
  port: number | null,
  addressType: number | null,
  fd?: number,
  flags?: number,
) => RawHandle | number;

// Node's own cluster module binds shared sockets with this function; it creates and binds a
// handle without calling listen(2), which is exactly what guarantee 1 needs.
const createServerHandle = (net as unknown as { _createServerHandle: CreateServerHandle })
  ._createServerHandle;

class OwnedListener implements Listener {
  readonly name: string;
  readonly address: string;
  readonly origin: 'bound' | 'systemd';
  readonly #handle: RawHandle | null;
  readonly #fd: number;
  readonly #unlink: string | null;
  #closed = false;

  constructor(
    name: string,
    address: string,
    origin: 'bound' | 'systemd',
    handle: RawHandle | null,
    fd: number,
    unlink: string | null,
  ) {
    this.name = name;
    this.address = address;
    this.origin = origin;
    this.#handle = handle;
    this.#fd = fd;
    this.#unlink = unlink;
  }

  get fd(): number {
    return this.#fd;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#handle?.close();
    if (this.#unlink) {
      try {
        if (lstatSync(this.#unlink).isSocket()) unlinkSync(this.#unlink);
      } catch {}
    }
  }
}

/** The set of listeners a supervisor owns; `close()` releases them all. */
export class ListenerSet {
  readonly listeners: readonly Listener[];
  readonly #owned: OwnedListener[];

  constructor(owned: OwnedListener[]) {
    this.#owned = owned;
    this.listeners = owned;
  }

  /** Closes every socket (and removes the unix socket files this supervisor created). */
  close(): void {
    for (const l of this.#owned) l.close();
  }
}

const HINTS: Record<string, string> = {
  EADDRINUSE: 'address already in use (is another server running on it?)',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  EADDRNOTAVAIL: 'the address is not available on this machine',
  EINVAL: 'invalid address',
};

const UNIX_HINTS: Record<string, string> = {
  EACCES: 'permission denied (you cannot create files in the directory of the socket)',
  ENOENT: 'the directory of the socket does not exist',
  ENOTDIR: 'a component of the path is not a directory',
  EROFS: 'the file system is read-only',
};

/** A `ListenError` for `address`, with the errno and the hint that explains it. */
function listenError(address: string, errno: string, hint: string): ListenError {
  return new ListenError(
    `cannot listen on ${address}: ${hint} (${errno})`,
    Object.assign(new Error(errno), { code: errno }),
  );
}

function bindError(address: string, errno: number | string, holders = ''): ListenError {
  const name = typeof errno === 'number' ? getSystemErrorName(errno) : errno;
  if (holders !== '') return listenError(address, name, `address already in use${holders}`);
  return listenError(address, name, HINTS[name] ?? 'the system refused it');
}

function bindTcp(spec: ListenSpec & { address: { kind: 'tcp' } }): OwnedListener {
  const { host, port } = spec.address;
  const type = host === null ? null : net.isIPv6(host) ? 6 : 4;
  const h = createServerHandle(host, port, type);
  if (typeof h === 'number') {
    const name = getSystemErrorName(h);
    const held = name === 'EADDRINUSE' ? describeHolders({ kind: 'tcp', port }) : '';
    throw bindError(formatAddress(spec.address), h, held);
  }
  const out: Record<string, unknown> = {};
  h.getsockname?.(out);
  // libuv keeps EADDRINUSE from bind(2) for listen() to report: the handle comes back, but
  // unbound (port 0). listen(2) on it would quietly pick a random port, so refuse it here.
  if (typeof out.port !== 'number' || out.port === 0) {
    h.close();
    throw bindError(
      formatAddress(spec.address),
      'EADDRINUSE',
      describeHolders({ kind: 'tcp', port }),
    );
  }
  const bound = out.port;
  const shown =
    host === null
      ? `*:${bound}`
      : formatAddress({ kind: 'tcp', host: String(out.address ?? host), port: bound });
  return new OwnedListener(spec.name, shown, 'bound', h, h.fd, null);
}

async function bindUnix(spec: ListenSpec & { address: { kind: 'unix' } }): Promise<OwnedListener> {
  const { path } = spec.address;
  const shown = formatAddress(spec.address);
  try {
    return await bindUnixPath(path, true, async () => {
      const h = createServerHandle(path, -1, -1);
      if (typeof h !== 'number') return new OwnedListener(spec.name, shown, 'bound', h, h.fd, path);
      const name = getSystemErrorName(h);
      throw listenError(shown, name, UNIX_HINTS[name] ?? HINTS[name] ?? 'the system refused it');
    });
  } catch (e) {
    if (!(e instanceof ListenError)) throw e;
    // net says why in its words; shown as the address was given, with the errno, and for an
    // address in use with who holds it.
    const prefix = `cannot listen on ${path}: `;
    if (!e.message.startsWith(prefix)) throw e;
    const why = e.message.slice(prefix.length).replace(/ \([A-Z]+\)$/, '');
    const held = e.errno === 'EADDRINUSE' ? describeHolders({ kind: 'unix', path }) : '';
    throw listenError(shown, e.errno ?? 'EINVAL', `${why}${held}`);
  }
}

// Runs listen(2) on each descriptor passed as fd 3, 4, … and exits within the same turn, before
// libuv polls: the helper never accepts. Exit status 10+i says which descriptor failed.
const LISTEN_HELPER = `
const net = require('node:net');
const n = Number(process.argv[1]);
for (let i = 0; i < n; i++) {
  const s = net.createServer();
  s.on('error', () => {});
  s.listen({ fd: 3 + i, backlog: Number(process.argv[2]) });
  if (!s._handle) process.exit(10 + i);
}
process.exit(0);
`;

async function startListening(owned: OwnedListener[], backlog: number): Promise<void> {
  if (owned.length === 0) return;
  const child = spawn(
    process.execPath,
    ['-e', LISTEN_HELPER, String(owned.length), String(backlog)],
    {
      stdio: ['ignore', 'ignore', 'inherit', ...owned.map((l) => l.fd)],
      env: { PATH: process.env.PATH ?? '' },
    },
  );
  const code = await adopt(
    new Promise<number | string>((resolve) => {
      child.once('error', (e) => resolve(e.message));
      child.once('exit', (c, sig) => resolve(c ?? `killed by ${sig}`));
    }),
  );
  if (code === 0) return;
  const failed = typeof code === 'number' && code >= 10 ? owned[code - 10] : undefined;
  if (failed) throw listenError(failed.address, 'EINVAL', 'listen(2) failed');
  throw listenError(owned.map((l) => l.address).join(', '), 'EHELPER', `listen helper: ${code}`);
}

function describeInherited(fd: number): { handle: RawHandle | null; address: string } {
  // Opening the descriptor in a handle only to read its address: never listened on here.
  let h: RawHandle | number;
  try {
    h = createServerHandle(null, null, null, fd);
  } catch {
    return { handle: null, address: `fd ${fd}` };
  }
  if (typeof h === 'number') return { handle: null, address: `fd ${fd}` };
  const out: Record<string, unknown> = {};
  if (h.getsockname && h.getsockname(out) === 0 && typeof out.port === 'number') {
    const host = String(out.address);
    return { handle: h, address: formatAddress({ kind: 'tcp', host, port: out.port }) };
  }
  return { handle: h, address: `fd ${fd} (unix)` };
}

/** Options for `bindListeners`. */
export interface BindOptions {
  /** Use sockets passed by systemd socket activation (default true). */
  systemd?: boolean;
  /** The environment to read `LISTEN_FDS` from (and remove it from). Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** listen(2) backlog for the sockets bound here. Default 511, Node's own. */
  backlog?: number;
}

/**
 * Takes the systemd sockets (if any were passed to this process), then binds every `spec`,
 * puts the bound sockets in listening mode without ever accepting on them, and returns the
 * set in that order — the order workers will see them in, from fd 3.
 * **Cancellation**: a checkpoint while the listen helper runs; on cancellation or failure
 * everything bound so far is closed.
 * @example
 * const set = await bindListeners([parseListenSpec('127.0.0.1:0')]);
 * console.log(set.listeners[0].address); // 127.0.0.1:40123
 */
export async function bindListeners(
  specs: readonly ListenSpec[],
  options?: BindOptions,
): Promise<ListenerSet> {
  const env = options?.env ?? process.env;
  const owned: OwnedListener[] = [];
  const fresh: OwnedListener[] = [];
  try {
    if (options?.systemd !== false) {
      for (const { fd, name } of parseListenFds(env, process.pid)) {
        const { handle, address } = describeInherited(fd);
        owned.push(new OwnedListener(name, address, 'systemd', handle, fd, null));
      }
      delete env.LISTEN_FDS;
      delete env.LISTEN_FDNAMES;
      delete env.LISTEN_PID;
    }
    for (const spec of specs) {
      const l =
        spec.address.kind === 'unix'
          ? await bindUnix(spec as ListenSpec & { address: { kind: 'unix' } })
          : bindTcp(spec as ListenSpec & { address: { kind: 'tcp' } });
      owned.push(l);
      fresh.push(l);
    }
    await startListening(fresh, options?.backlog ?? 511);
    return new ListenerSet(owned);
  } catch (e) {
    for (const l of owned) l.close();
    throw e;
  }
}
