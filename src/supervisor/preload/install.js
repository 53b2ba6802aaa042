/**
 * The preload's work in a process that holds the supervisor's sockets (see index.js for the
 * guarantees): listen mapping, readiness, handing on, drain.
 */
import { closeSync, fstatSync, writeSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { passOnToChildren } from './pass-on.js';
import { LISTEN_ENV, listenRequest, matchListen } from './sockets.js';
import { shutdownOnSignal, trackServer } from './shutdown.js';
import { warmUp, warmUpSpec } from './warm-up.js';

/**
 * Maps listens onto the inherited sockets, reports readiness, hands the sockets on while
 * this process does not listen, and arms the drain (index.js, guarantees 2-5).
 * @param {import('./sockets.js').Inherited[]} sockets
 */
export function install(sockets) {
  const ready = readyChannel(process.env.QUIESCE_READY_FD);
  let listening = false;
  const waiting = new Set(sockets);
  const warm = warmUpSpec(process.env);
  passOnToChildren(sockets, ready?.fd ?? null, () => !listening);
  if (consecutiveFromThree(sockets)) process.env.LISTEN_PID = String(process.pid);

  const listen = net.Server.prototype.listen;
  /** @this {net.Server} @param {unknown[]} args */
  function quiesceListen(...args) {
    trackServer(this);
    const sock = matchListen(listenRequest(args, process.cwd()), sockets);
    if (sock === null) return listen.apply(this, /** @type {any} */ (args));
    sock.claimed = true;
    if (!listening) {
      listening = true;
      // Children of the app are not workers: they must not find the sockets (nor report).
      delete process.env[LISTEN_ENV];
      shutdownOnSignal(process.env);
    }
    this.once('listening', () => {
      waiting.delete(sock);
      if (waiting.size === 0) ready?.say();
    });
    const real = /** @type {any} */ (onDescriptor(args, sock.fd));
    // Plain HTTP only: the warm-up speaks HTTP/1.1 in clear (an https server listens at once).
    if (warm === null || !(this instanceof http.Server)) {
      return listen.apply(this, real);
    }
    // After the app's synchronous set-up (routes added right after listen() count), and
    // before the first real connection (warm-up.js).
    setImmediate(() =>
      warmUp(this, warm, /** @type {any} */ (listen)).then(() => listen.apply(this, real)),
    );
    return this;
  }
  net.Server.prototype.listen = /** @type {any} */ (quiesceListen);
}

/**
 * The same listen call, on descriptor `fd` instead of a port or path: the callback and the
 * options that still apply (backlog, signal) are kept.
 * @param {unknown[]} args
 * @param {number} fd
 * @returns {unknown[]}
 */
function onDescriptor(args, fd) {
  const last = args[args.length - 1];
  const cb = typeof last === 'function' ? [last] : [];
  const first = args[0];
  if (first !== null && typeof first === 'object') {
    const o = /** @type {Record<string, unknown>} */ (first);
    /** @type {Record<string, unknown>} */
    const opts = { fd };
    if (o.backlog !== undefined) opts.backlog = o.backlog;
    if (o.signal !== undefined) opts.signal = o.signal;
    return [opts, ...cb];
  }
  return [{ fd }, ...cb];
}

/**
 * LISTEN_FDS describes sockets from fd 3 on; only then may this process claim them as its own.
 * @param {readonly import('./sockets.js').Inherited[]} sockets
 */
function consecutiveFromThree(sockets) {
  return (
    Number(process.env.LISTEN_FDS) === sockets.length && sockets.every((s, i) => s.fd === 3 + i)
  );
}

/**
 * The readiness descriptor, checked now and again before the write: if the app closed it
 * (it called notifyReady itself) the number may by then be someone else's descriptor, and
 * `READY=1` must not land in it.
 * @param {string | undefined} raw
 */
function readyChannel(raw) {
  const fd = raw !== undefined && /^\d+$/.test(raw) ? Number(raw) : -1;
  if (fd < 3) return null;
  const id = identity(fd);
  if (id === null) return null;
  let said = false;
  return {
    fd,
    say() {
      if (said) return;
      said = true;
      if (identity(fd) !== id || process.env.QUIESCE_READY_FD !== raw) return;
      delete process.env.QUIESCE_READY_FD;
      try {
        writeSync(fd, 'READY=1\n');
      } catch {}
      try {
        closeSync(fd);
      } catch {}
    },
  };
}

/** `dev:ino` of a pipe or socket descriptor, or null. @param {number} fd */
function identity(fd) {
  try {
    const st = fstatSync(fd);
    return st.isSocket() || st.isFIFO() ? `${st.dev}:${st.ino}` : null;
  } catch {
    return null;
  }
}
