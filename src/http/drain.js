/**
 * The HTTP drain engine: closes a `node:http`/`node:https` server's connections without losing
 * a request, and without quiesce's core, so it also runs preloaded into an unmodified app on
 * any Node >= 20 (plain JavaScript, `node:` built-ins only). `serveHttp` builds request tasks,
 * budget phases and readiness on top of it.
 *
 * Guarantees, and who keeps them:
 * 1. From drain start the newest response of each connection whose headers are not yet
 *    written carries `Connection: close`, and its connection is closed once that response is
 *    sent; requests pipelined behind it that have arrived by then are answered first (only the
 *    last says close). A request that arrives behind a `Connection: close` already sent is
 *    never passed to the app (`onRequest`, `closeLast`, `enterDrainNow`). With `spreadMs`,
 *    each connection gets its own moment, uniformly at random within that window from drain
 *    start (or from its accept, if later), and this holds for it from that moment on;
 *    responses before it keep the connection open.
 * 2. A connection is never closed while its client may be sending on it: one idle for less
 *    than `minIdleMs` is left until its next response (which carries `Connection: close`) or
 *    until it has been idle that long; a connection that received bytes since its last
 *    response is waiting for a request and is not idle (`#closeIdle`).
 * 3. A connection is closed gracefully — FIN after our data, the peer's leftover bytes read and
 *    discarded up to `lingerMaxBytes` or `lingerMs`, then close — never `destroy()` on a healthy
 *    peer (`#closeGracefully`, also installed as the socket's `destroySoon` during the drain,
 *    which is what node:http calls after a `Connection: close` response).
 * 4. Accepted-but-silent sockets hold nothing: they are idle since their accept (rule 2).
 * 5. The drain is bounded: at `deadlineMs` `onDeadline` runs (serveHttp cancels its request
 *    tasks there), after `graceMs` more every socket still open is destroyed and counted as
 *    forced; the promise resolves once every socket (and the listener) is closed.
 * 6. Closing the listener does not reset the kernel's accept queue: it stays open until one
 *    event-loop turn passes without a new connection (`#acceptUntilQuiet`).
 *
 * 7. Drain start and end are published on `node:diagnostics_channel` channels
 *    `quiesce.http.drain.start` (`{ server, atStart }`) and `quiesce.http.drain.end`
 *    (`{ server, report }`), for metrics without a callback.
 *
 * Cost model: one property on each socket, one `close` listener per connection and per
 * response, and a patched `server.emit` (it must see `upgrade`/`connect`/`checkContinue`
 * without listening to them, since a listener changes what node:http does).
 */

import diagnosticsChannel from 'node:diagnostics_channel';

/** @typedef {import('node:net').Socket} Socket */
/** @typedef {import('node:http').IncomingMessage} IncomingMessage */
/** @typedef {import('node:http').ServerResponse} ServerResponse */
/** @typedef {import('node:net').Server} NetServer */
/** @typedef {'active' | 'idle' | 'upgraded' | 'closing'} ConnectionState */

/**
 * @typedef {object} DrainOptions
 * @property {number} [minIdleMs] A connection idle for less than this is not closed yet (the
 *   client may be sending its next request). Default: 1000.
 * @property {number} [lingerMs] How long a graceful close waits for the peer's EOF. Default: 2000.
 * @property {number} [lingerMaxBytes] Leftover bytes a graceful close reads and discards before
 *   it gives up and destroys. Default: 65536.
 * @property {(socket: Socket, req: IncomingMessage) => void} [onUpgraded] Called at drain start
 *   (or at the upgrade, if already draining) for each upgraded connection (WebSocket, CONNECT):
 *   send a close frame (1001) and end it. Left open, it is destroyed at the final deadline.
 * @property {boolean} [interceptClose] For an app that closes the server itself: its
 *   `server.close(cb)` starts `drain({ deadlineMs: closeDeadlineMs })` instead (and `cb` runs
 *   when the server has closed, as node's does), and `closeIdleConnections()` does nothing
 *   once draining (node's destroys connections whose client may be sending). Default: false.
 * @property {number} [closeDeadlineMs] The drain deadline of an intercepted `close()`.
 *   Default: 30000.
 */

/**
 * @typedef {object} DrainRunOptions
 * @property {number} [deadlineMs] From `drain()`, how long requests may run before `onDeadline`;
 *   `Infinity` or `< 0`: no deadline. Default: 30000.
 * @property {number} [graceMs] After the deadline, how long before every socket still open is
 *   destroyed. Default: 0.
 * @property {boolean} [closeListener] Stop accepting (close the listening socket) once its
 *   accept queue is quiet. Default: true.
 * @property {() => void} [onDeadline] Called once at the deadline, before the grace period.
 * @property {number} [spreadMs] Spread the `Connection: close` hand-over of busy keep-alive
 *   connections over this window from drain start: each connection is closed at its first
 *   response after a moment of its own, uniformly at random within the window, so that its
 *   clients do not all reconnect in the same few milliseconds (to workers that may be cold).
 *   At most the deadline. Idle connections follow `minIdleMs` as ever. Default: 0 (at once).
 * @property {Promise<unknown>} [listenerClosed] With `closeListener: false`: resolves when
 *   whoever owns the listening socket has closed it; the drain ends only after it (and after
 *   the connections accepted until then).
 */

/**
 * @typedef {object} ConnectionCounts
 * @property {number} active A request in progress.
 * @property {number} idle Between requests (or accepted and silent).
 * @property {number} upgraded Upgraded (WebSocket) or CONNECT tunnels.
 * @property {number} closing Closing gracefully.
 */

/**
 * @typedef {object} DrainReport
 * @property {ConnectionCounts} atStart Connections by state when the drain began.
 * @property {number} requestsCompleted Requests whose response was sent during the drain.
 * @property {number} requestsAborted Requests that ended during the drain without a full
 *   response (client gone, or cut at the deadline).
 * @property {number} closedAfterResponse Connections closed after a `Connection: close` response.
 * @property {number} idleClosed Idle connections closed gracefully (`silentClosed` included).
 * @property {number} silentClosed Of those, connections that never sent a request.
 * @property {number} upgradedNotified Upgraded connections handed to `onUpgraded`.
 * @property {number} lingerTimeouts Graceful closes that gave up waiting (time or bytes).
 * @property {number} forcedCloses Sockets destroyed at the final deadline.
 * @property {number} pipelinedDropped Requests that arrived pipelined behind a response that
 *   had already said `Connection: close` (or on a connection closing gracefully), since
 *   `attachDrain`: not passed to the app, as RFC 9112 requires; the client sees the connection
 *   close without their responses and may retry them.
 * @property {boolean} deadlineReached Whether the deadline came before the last socket closed.
 * @property {number} durationMs From `drain()` to the last socket closed.
 */

/**
 * @typedef {object} DrainStats
 * @property {ConnectionCounts} connections Open connections by state.
 * @property {number} accepted Connections seen so far.
 * @property {number} requests Requests seen so far.
 * @property {boolean} draining Whether `drain()` was called.
 */

/**
 * @typedef {object} DrainHandle
 * @property {(options?: DrainRunOptions) => Promise<DrainReport>} drain Starts the drain (the
 *   first call) and resolves with its report once every socket is closed; a later call with
 *   a shorter deadline brings it forward.
 * @property {() => DrainStats} stats Counters now.
 * @property {boolean} draining Whether `drain()` was called.
 * @property {AbortSignal} drainSignal Aborted at drain start (end SSE streams on it).
 * @property {() => void} detach Stops tracking (only before `drain()`).
 */

const kConn = Symbol('quiesce.http.connection');
/** `{ server, atStart }` when a drain begins (node:diagnostics_channel). */
const startChannel = diagnosticsChannel.channel('quiesce.http.drain.start');
/** `{ server, report }` when a drain ends. */
const endChannel = diagnosticsChannel.channel('quiesce.http.drain.end');
const kAttached = Symbol('quiesce.http.drain');
const kDrain = Symbol('quiesce.http.drain.engine');

/** The "is this a number option" check, with the one-line error a user mistake deserves. */
function num(/** @type {string} */ name, /** @type {unknown} */ v, /** @type {number} */ dflt) {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || Number.isNaN(v) || v < 0) {
    throw new TypeError(`attachDrain: ${name} must be a number >= 0, got ${String(v)}`);
  }
  return v;
}

class Conn {
  /**
   * @param {Socket} socket
   * @param {Drain} drain
   */
  constructor(socket, drain) {
    this.socket = socket;
    this.drain = drain;
    /** @type {ConnectionState} */
    this.state = 'idle';
    this.idleSince = performance.now();
    // Invariant: state === 'idle' implies no response of this connection is pending, and a
    // socket.bytesRead above readAtIdle means a request is arriving (the parser has not
    // emitted it yet), so the connection is not closable (guarantee 2).
    this.readAtIdle = socket.bytesRead;
    this.inflight = 0;
    this.requests = 0;
    /** @type {ServerResponse | null} */
    this.res = null;
    /** @type {IncomingMessage | null} */
    this.upgradeReq = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    /**
     * Draining with `spreadMs`: pending until this connection's moment, during which its
     * responses keep it open.
     * @type {ReturnType<typeof setTimeout> | null}
     */
    this.spreadTimer = null;
    /** @type {ServerResponse | null} the response that is to say `Connection: close` (see closeLast) */
    this.closeRes = null;
    /** `closeRes.shouldKeepAlive` before the drain set it false */
    this.closeResKeepAlive = true;
  }
}

class Drain {
  /**
   * @param {NetServer} server
   * @param {Required<Pick<DrainOptions, 'minIdleMs' | 'lingerMs' | 'lingerMaxBytes'>> & Pick<DrainOptions, 'onUpgraded'>} o
   */
  constructor(server, o) {
    this.server = server;
    this.o = o;
    /** @type {Set<Conn>} */
    this.conns = new Set();
    this.accepted = 0;
    this.requestCount = 0;
    this.draining = false;
    /** @type {AbortController | null} */
    this.controller = null;
    /** @type {Promise<DrainReport> | null} */
    this.done = null;
    this.t0 = 0;
    this.deadlineAt = Number.POSITIVE_INFINITY;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.deadlineTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.forceTimer = null;
    this.graceMs = 0;
    this.spreadMs = 0;
    this.deadlineReached = false;
    /** @type {(() => void) | undefined} */
    this.onDeadline = undefined;
    /** @type {(() => void) | null} */
    this.checkDone = null;
    /** @type {NetServer['close'] | null} the server's own close, when `interceptClose` replaced it */
    this.origClose = null;
    /** @type {((res: ServerResponse) => void) | null} see setAfterResponseClose */
    this.afterClose = null;
    const self = this;
    /**
     * Every response's one 'close' listener; it finds the connection through
     * `res.req.socket` (node:http has nulled `res.socket` by now).
     * @this {ServerResponse}
     */
    this.resClose = function () {
      const c = /** @type {any} */ (this.req.socket)[kConn];
      if (c) self.onResponseClose(c, this);
      if (self.afterClose !== null) self.afterClose(this);
    };
    this.r = {
      requestsCompleted: 0,
      requestsAborted: 0,
      closedAfterResponse: 0,
      idleClosed: 0,
      silentClosed: 0,
      upgradedNotified: 0,
      lingerTimeouts: 0,
      forcedCloses: 0,
      pipelinedDropped: 0,
    };
    const drain = this;
    const emit = server.emit;
    this.origEmit = emit;
    /** @type {(this: NetServer, event: string | symbol, ...args: any[]) => boolean} */
    this.emit = function (event, a, b) {
      switch (event) {
        case 'request':
        case 'checkContinue':
        case 'checkExpectation':
          // A request behind a `Connection: close` already sent is never the app's (guarantee 1).
          if (!drain.onRequest(a, b)) return false;
          break;
        case 'connection':
          drain.onConnection(a);
          break;
        case 'secureConnection':
          drain.onSecureConnection(a);
          break;
        case 'upgrade':
        case 'connect':
          drain.onUpgrade(a, b);
          break;
      }
      // biome-ignore lint/complexity/noArguments: the original emit takes them all, cheaply
      return emit.apply(this, /** @type {any} */ (arguments));
    };
    server.emit = this.emit;
  }

  /** @param {Socket} socket */
  onConnection(socket) {
    this.accepted++;
    this.track(socket);
  }

  /** @param {Socket} socket */
  track(socket) {
    const c = new Conn(socket, this);
    /** @type {any} */ (socket)[kConn] = c;
    this.conns.add(c);
    socket.once('close', () => this.forget(c));
    if (this.draining) this.enterDrain(c);
    return c;
  }

  /**
   * A TLS socket replaces the raw one it wraps: the raw socket's record goes, the TLS socket
   * (the one requests arrive on) gets one, idle since the raw accept.
   * @param {Socket} tls
   */
  onSecureConnection(tls) {
    const raw = /** @type {any} */ (tls)._parent;
    const old = raw?.[kConn];
    const c = this.track(tls);
    if (old) {
      c.idleSince = old.idleSince;
      if (old.timer) clearTimeout(old.timer);
      this.conns.delete(old);
      raw[kConn] = undefined;
    }
  }

  /** @param {Conn} c */
  forget(c) {
    if (c.timer) clearTimeout(c.timer);
    c.timer = null;
    if (c.spreadTimer) clearTimeout(c.spreadTimer);
    c.spreadTimer = null;
    if (!this.conns.delete(c)) return;
    if (this.draining && this.conns.size === 0) this.checkDone?.();
  }

  /**
   * Tracks a request; false when it must not reach the app.
   * @param {IncomingMessage} req
   * @param {ServerResponse} res
   * @returns {boolean}
   */
  onRequest(req, res) {
    this.requestCount++;
    const socket = req.socket;
    const c =
      /** @type {Conn | undefined} */ (/** @type {any} */ (socket)[kConn]) ?? this.track(socket);
    if (c.state === 'closing' || (c.inflight > 0 && saidClose(/** @type {any} */ (c.res)))) {
      // Pipelined behind a response that said `Connection: close` (or on a connection we are
      // closing): RFC 9112 forbids processing it, and its response could never be sent.
      // Unanswered, the client retries it on a new connection.
      this.r.pipelinedDropped++;
      return false;
    }
    c.inflight++;
    c.requests++;
    c.res = res;
    if (c.state === 'idle') {
      c.state = 'active';
      if (c.timer) clearTimeout(c.timer);
      c.timer = null;
    }
    if (this.draining && c.spreadTimer === null) this.closeLast(c, res);
    // on, not once: node emits a response's 'close' once; once would cost every request a
    // wrapper, a bound function and a removeListener.
    res.on('close', this.resClose);
    return true;
  }

  /**
   * Makes `res`, the newest request of `c`, the one that says `Connection: close`: an older
   * response that was to say it and has not written its headers keeps the connection open
   * instead, so requests already pipelined behind it are answered (guarantee 1).
   * Invariant: c.closeRes is the only response of `c` marked by `closeAfter`, or null.
   * @param {Conn} c
   * @param {ServerResponse} res
   */
  closeLast(c, res) {
    const prev = c.closeRes;
    if (prev !== null && prev !== res && !prev.headersSent) {
      delete (/** @type {any} */ (prev).writeHead);
      prev.shouldKeepAlive = c.closeResKeepAlive;
    }
    c.closeRes = res;
    c.closeResKeepAlive = res.shouldKeepAlive;
    closeAfter(res);
  }

  /**
   * @param {Conn} c
   * @param {ServerResponse} res
   */
  onResponseClose(c, res) {
    c.inflight--;
    if (c.res === res) c.res = null;
    if (c.closeRes === res) c.closeRes = null;
    if (this.draining) {
      if (res.writableFinished) this.r.requestsCompleted++;
      else this.r.requestsAborted++;
    }
    if (c.inflight > 0 || c.state !== 'active') return;
    if (c.socket.destroyed) return;
    c.state = 'idle';
    c.idleSince = performance.now();
    c.readAtIdle = c.socket.bytesRead;
    if (this.draining) this.closeIdle(c);
  }

  /**
   * @param {IncomingMessage} req
   * @param {Socket} socket
   */
  onUpgrade(req, socket) {
    const c =
      /** @type {Conn | undefined} */ (/** @type {any} */ (socket)[kConn]) ?? this.track(socket);
    if (c.timer) clearTimeout(c.timer);
    c.timer = null;
    c.state = 'upgraded';
    c.upgradeReq = req;
    if (this.draining) this.notifyUpgraded(c);
  }

  /** @param {Conn} c */
  notifyUpgraded(c) {
    const hook = this.o.onUpgraded;
    if (!hook || !c.upgradeReq) return;
    this.r.upgradedNotified++;
    try {
      hook(c.socket, c.upgradeReq);
    } catch (e) {
      process.emitWarning(`quiesce/http: onUpgraded threw: ${e instanceof Error ? e.message : e}`, {
        code: 'QUIESCE_HOOK_ERROR',
      });
    }
  }

  /**
   * What drain start means for one connection (guarantees 1, 2, 4).
   * @param {Conn} c
   */
  enterDrain(c) {
    const s = /** @type {any} */ (c.socket);
    s.destroySoon = destroySoonGracefully;
    const left = this.t0 + this.spreadMs - performance.now();
    if (left > 0 && (c.state === 'active' || c.state === 'idle')) {
      c.spreadTimer = setTimeout(spreadDue, Math.random() * left, this, c);
      return;
    }
    this.enterDrainNow(c);
  }

  /**
   * The connection's moment of a spread hand-over has come: it drains as if from drain start.
   * @param {Conn} c
   */
  spreadDue(c) {
    c.spreadTimer = null;
    this.enterDrainNow(c);
  }

  /** @param {Conn} c */
  enterDrainNow(c) {
    switch (c.state) {
      case 'active':
        if (c.res && !c.res.headersSent) this.closeLast(c, c.res);
        break;
      case 'idle':
        this.closeIdle(c);
        break;
      case 'upgraded':
        this.notifyUpgraded(c);
        break;
    }
  }

  /**
   * Closes an idle connection if it has been idle for `minIdleMs` and nothing arrived since
   * its last response; otherwise looks again when it will have been (guarantee 2).
   * @param {Conn} c
   */
  closeIdle(c) {
    if (c.state !== 'idle') return;
    if (c.socket.bytesRead > c.readAtIdle) {
      // A request is arriving: its response carries Connection: close. Until its headers are
      // complete node:http says nothing, so look again later.
      c.readAtIdle = c.socket.bytesRead;
      c.idleSince = performance.now();
    }
    const left = c.idleSince + this.o.minIdleMs - performance.now();
    if (left > 0 && !this.deadlineReached) {
      if (c.timer) clearTimeout(c.timer);
      c.timer = setTimeout(closeIdleLater, Math.ceil(left), this, c);
      return;
    }
    this.r.idleClosed++;
    if (c.requests === 0) this.r.silentClosed++;
    this.closeGracefully(c);
  }

  /**
   * FIN, read and discard what the peer still sends (bounded), then close (guarantee 3).
   * @param {Conn} c
   */
  closeGracefully(c) {
    if (c.state === 'closing') return;
    c.state = 'closing';
    if (c.timer) clearTimeout(c.timer);
    c.timer = null;
    const s = c.socket;
    if (s.destroyed) return;
    // The server's keep-alive timer would destroy() it; the linger below bounds it instead.
    s.setTimeout(0);
    s.end();
    s.resume();
    const start = s.bytesRead;
    const until = performance.now() + this.o.lingerMs;
    const tick = Math.max(1, Math.min(50, this.o.lingerMs));
    const look = () => {
      c.timer = null;
      if (s.destroyed) return;
      if (s.bytesRead - start > this.o.lingerMaxBytes || performance.now() >= until) {
        this.r.lingerTimeouts++;
        s.destroy();
        return;
      }
      c.timer = setTimeout(look, tick);
    };
    c.timer = setTimeout(look, tick);
  }

  /** @param {DrainRunOptions} [options] */
  drain(options) {
    const deadlineMs = options?.deadlineMs ?? 30_000;
    if (typeof deadlineMs !== 'number' || Number.isNaN(deadlineMs)) {
      throw new TypeError(`drain: deadlineMs must be a number, got ${String(deadlineMs)}`);
    }
    if (this.done) {
      this.retime(deadlineMs);
      return this.done;
    }
    this.graceMs = num('graceMs', options?.graceMs, 0);
    this.spreadMs = num('spreadMs', options?.spreadMs, 0);
    if (deadlineMs >= 0) this.spreadMs = Math.min(this.spreadMs, deadlineMs);
    this.onDeadline = options?.onDeadline;
    this.t0 = performance.now();
    this.draining = true;
    this.controller?.abort(drainingReason());
    const atStart = this.counts();
    if (startChannel.hasSubscribers) startChannel.publish({ server: this.server, atStart });
    for (const c of this.conns) this.enterDrain(c);
    this.retime(deadlineMs);
    const closeListener = options?.closeListener ?? true;
    const external = options?.listenerClosed;
    this.done = (async () => {
      const listenerClosed = closeListener ? this.closeListener() : external;
      // The listener first: connections it still accepts (see closeListener) are drained too.
      if (listenerClosed) await listenerClosed.catch(noop);
      await new Promise((resolve) => {
        this.checkDone = () => {
          if (this.conns.size === 0) resolve(undefined);
        };
        this.checkDone();
      });
      if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
      if (this.forceTimer) clearTimeout(this.forceTimer);
      this.deadlineTimer = this.forceTimer = null;
      /** @type {DrainReport} */
      const report = {
        atStart,
        ...this.r,
        deadlineReached: this.deadlineReached,
        durationMs: performance.now() - this.t0,
      };
      if (endChannel.hasSubscribers) endChannel.publish({ server: this.server, report });
      return report;
    })();
    return this.done;
  }

  /** @param {number} ms */
  retime(ms) {
    if (this.deadlineReached) return;
    const at =
      ms < 0 || ms === Number.POSITIVE_INFINITY ? Number.POSITIVE_INFINITY : performance.now() + ms;
    if (at >= this.deadlineAt) return;
    this.deadlineAt = at;
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = setTimeout(() => this.atDeadline(), Math.max(0, at - performance.now()));
  }

  atDeadline() {
    this.deadlineTimer = null;
    if (this.conns.size === 0) return;
    this.deadlineReached = true;
    try {
      this.onDeadline?.();
    } catch (e) {
      process.emitWarning(`quiesce/http: onDeadline threw: ${e instanceof Error ? e.message : e}`, {
        code: 'QUIESCE_HOOK_ERROR',
      });
    }
    for (const c of this.conns) {
      if (c.spreadTimer === null) continue;
      clearTimeout(c.spreadTimer);
      this.spreadDue(c);
    }
    // Idle connections still inside their window close now, gracefully but within the grace.
    for (const c of this.conns) if (c.state === 'idle') this.closeIdle(c);
    this.forceTimer = setTimeout(() => this.force(), this.graceMs);
  }

  force() {
    this.forceTimer = null;
    for (const c of [...this.conns]) {
      if (c.socket.destroyed) continue;
      this.r.forcedCloses++;
      c.socket.destroy();
    }
  }

  /**
   * Stops accepting once one loop turn passed without a new connection (guarantee 6), through
   * net's close: node:http's own `close()` would first destroy every idle connection at once.
   * @returns {Promise<void>}
   */
  async closeListener() {
    const server = this.server;
    if (!server.listening) return;
    const until = performance.now() + 1000;
    await nextTurn();
    let seen;
    do {
      seen = this.accepted;
      await nextTurn();
    } while (seen !== this.accepted && performance.now() < until);
    if (!server.listening) return;
    await new Promise((resolve) => {
      const s = /** @type {any} */ (server);
      const own = Object.hasOwn(s, 'closeIdleConnections');
      const saved = s.closeIdleConnections;
      s.closeIdleConnections = noop;
      try {
        (this.origClose ?? server.close).call(server, () => resolve(undefined));
      } finally {
        if (own) s.closeIdleConnections = saved;
        else delete s.closeIdleConnections;
      }
    });
  }

  counts() {
    /** @type {ConnectionCounts} */
    const n = { active: 0, idle: 0, upgraded: 0, closing: 0 };
    for (const c of this.conns) n[c.state]++;
    return n;
  }

  get signal() {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.draining) this.controller.abort(drainingReason());
    }
    return this.controller.signal;
  }

  detach() {
    if (this.draining) throw new Error('detach: the server is draining');
    if (this.server.emit === this.emit) this.server.emit = this.origEmit;
    for (const c of this.conns) {
      if (c.timer) clearTimeout(c.timer);
      /** @type {any} */ (c.socket)[kConn] = undefined;
    }
    this.conns.clear();
    /** @type {any} */ (this.server)[kAttached] = undefined;
  }
}

/**
 * Sets what runs after the drain's own bookkeeping when a response of `server` closes, so that
 * serveHttp's request lives need no `'close'` listener of their own (a second listener costs
 * every response a listener array, and its clone at each emit). Internal: not exported from
 * quiesce/http.
 * @param {NetServer} server a server `attachDrain` was called on
 * @param {((res: ServerResponse) => void) | null} fn
 */
export function setAfterResponseClose(server, fn) {
  const d = /** @type {any} */ (server)[kAttached]?.[kDrain];
  if (!d) throw new TypeError('setAfterResponseClose: attachDrain(server) first');
  d.afterClose = fn;
}

/**
 * What node:http calls after a `Connection: close` response, on a draining connection: a
 * graceful close instead of "end, then destroy once written" (which resets a peer whose
 * leftover bytes are unread).
 * @this {Socket}
 */
function destroySoonGracefully() {
  const c = /** @type {any} */ (this)[kConn];
  if (!c) {
    this.end();
    this.destroy();
    return;
  }
  if (c.state !== 'closing') c.drain.r.closedAfterResponse++;
  c.drain.closeGracefully(c);
}

/**
 * Makes `res` say `Connection: close` and end its connection, even if the app set
 * `Connection: keep-alive` itself (headers or `writeHead`'s argument): node:http would honour
 * that. Only responses of a drain pay for the wrapper.
 * @param {ServerResponse} res
 */
function closeAfter(res) {
  res.shouldKeepAlive = false;
  const writeHead = res.writeHead;
  /** @type {any} */ (res).writeHead = function (/** @type {any} */ ...args) {
    if (this.hasHeader('connection')) this.setHeader('connection', 'close');
    const last = args[args.length - 1];
    if (last !== null && typeof last === 'object') args[args.length - 1] = saysClose(last);
    return writeHead.apply(this, /** @type {any} */ (args));
  };
}

/**
 * Whether `res` has written headers that end its connection (node:http's `_last`: a
 * `Connection: close` it sent, the drain's or the app's).
 * @param {any} res
 */
function saidClose(res) {
  return res?.headersSent === true && res._last === true;
}

/**
 * `headers` (an object, or a flat or nested array) with any `connection` entry set to
 * `close`; the same object when it has none.
 * @param {any} headers
 */
function saysClose(headers) {
  const isConn = (/** @type {unknown} */ k) => String(k).toLowerCase() === 'connection';
  if (Array.isArray(headers)) {
    if (headers.length > 0 && Array.isArray(headers[0])) {
      return headers.map(([k, v]) => (isConn(k) ? [k, 'close'] : [k, v]));
    }
    return headers.map((x, i) => (i % 2 === 1 && isConn(headers[i - 1]) ? 'close' : x));
  }
  if (!Object.keys(headers).some(isConn)) return headers;
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const k of Object.keys(headers)) out[k] = isConn(k) ? 'close' : headers[k];
  return out;
}

/**
 * @param {Drain} d
 * @param {Conn} c
 */
function closeIdleLater(d, c) {
  c.timer = null;
  d.closeIdle(c);
}

/**
 * @param {Drain} d
 * @param {Conn} c
 */
function spreadDue(d, c) {
  d.spreadDue(c);
}

function nextTurn() {
  return new Promise((resolve) => setImmediate(resolve));
}

function noop() {}

function drainingReason() {
  return Object.assign(new Error('the server is draining'), { code: 'QUIESCE_DRAINING' });
}

/**
 * Tracks `server`'s connections so that `drain()` can close them without losing a request
 * (the module's guarantees 1-6). Attach before the server accepts: connections accepted
 * earlier are tracked from their next request. Attaching twice returns the first handle.
 * **Cancellation**: none here (no quiesce core); `drain()` is bounded by its deadline.
 * @param {NetServer} server an `http.Server` or `https.Server`
 * @param {DrainOptions} [options]
 * @returns {DrainHandle}
 * @example
 * const server = http.createServer(app);
 * const drainer = attachDrain(server);
 * server.listen(8080);
 * process.once('SIGTERM', async () => {
 *   const report = await drainer.drain({ deadlineMs: 10_000 });
 *   console.log(report);
 * });
 */
export function attachDrain(server, options) {
  if (server === null || typeof server !== 'object' || typeof server.emit !== 'function') {
    throw new TypeError('attachDrain(server): server must be an http.Server or https.Server');
  }
  const existing = /** @type {any} */ (server)[kAttached];
  if (existing) return existing;
  const onUpgraded = options?.onUpgraded;
  if (onUpgraded !== undefined && typeof onUpgraded !== 'function') {
    throw new TypeError(`attachDrain: onUpgraded must be a function, got ${String(onUpgraded)}`);
  }
  const d = new Drain(server, {
    minIdleMs: num('minIdleMs', options?.minIdleMs, 1000),
    lingerMs: num('lingerMs', options?.lingerMs, 2000),
    lingerMaxBytes: num('lingerMaxBytes', options?.lingerMaxBytes, 65536),
    onUpgraded,
  });
  if (options?.interceptClose) {
    const deadlineMs = num('closeDeadlineMs', options.closeDeadlineMs, 30_000);
    const s = /** @type {any} */ (server);
    d.origClose = s.close;
    const origIdle = s.closeIdleConnections;
    /** @param {((err?: Error) => void) | undefined} cb */
    s.close = (cb) => {
      if (typeof cb === 'function') server.once('close', () => cb());
      d.drain({ deadlineMs });
      return server;
    };
    if (typeof origIdle === 'function') {
      s.closeIdleConnections = () => {
        if (!d.draining) origIdle.call(server);
      };
    }
  }
  /** @type {DrainHandle} */
  const handle = {
    drain: (o) => d.drain(o),
    stats: () => ({
      connections: d.counts(),
      accepted: d.accepted,
      requests: d.requestCount,
      draining: d.draining,
    }),
    get draining() {
      return d.draining;
    },
    get drainSignal() {
      return d.signal;
    },
    detach: () => d.detach(),
  };
  /** @type {any} */ (server)[kAttached] = handle;
  /** @type {any} */ (handle)[kDrain] = d;
  return handle;
}
