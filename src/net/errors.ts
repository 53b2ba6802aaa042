/**
 * The errors `quiesce/net` throws. Each is a class with a stable `code` (docs/net.md lists
 * them; a code is never reused). All are synchronous errors: none is a cancellation, so a
 * catch-all that rethrows cancellations handles them as ordinary failures.
 */
import { QuiesceError } from '../core/index.ts';

/** The connection broke under a read or write (reset by the peer, broken pipe, …). */
export class ConnectionError extends QuiesceError {
  /** The system error code, such as `'ECONNRESET'` or `'EPIPE'`, when there is one. */
  readonly errno: string | undefined;
  constructor(message: string, cause?: unknown) {
    super('ERR_CONNECTION_BROKEN', message, { cause });
    const c = cause as { code?: unknown } | undefined;
    this.errno = typeof c?.code === 'string' ? c.code : undefined;
  }
}

/** A read or write on a connection this side already closed. */
export class ConnectionClosedError extends QuiesceError {
  constructor(what: string) {
    super('ERR_CONNECTION_CLOSED', `${what}: the connection is closed on this side`);
  }
}

/** A read or a write waited on the peer for longer than the server's `idleTimeoutMs`. */
export class IdleTimeoutError extends QuiesceError {
  readonly timeoutMs: number;
  constructor(ms: number) {
    super('ERR_IDLE_TIMEOUT', `the peer made no progress for ${ms} ms (idleTimeoutMs)`);
    this.timeoutMs = ms;
  }
}

/** `readLine` met more than `maxBytes` without a line end. */
export class LineTooLongError extends QuiesceError {
  readonly maxBytes: number;
  constructor(max: number) {
    super('ERR_LINE_TOO_LONG', `a line longer than ${max} bytes arrived (readLine maxBytes)`);
    this.maxBytes = max;
  }
}

/** Two reads at once on one connection: reads are for one task at a time. */
export class ConcurrentReadError extends QuiesceError {
  constructor() {
    super(
      'ERR_CONCURRENT_READ',
      'another read is already waiting on this connection; read from one task at a time',
    );
  }
}

/** Binding or opening a listening socket failed; `errno` says why (`'EADDRINUSE'`, …). */
export class ListenError extends QuiesceError {
  readonly errno: string | undefined;
  constructor(message: string, cause?: unknown) {
    super('ERR_LISTEN', message, { cause });
    const c = cause as { code?: unknown } | undefined;
    this.errno = typeof c?.code === 'string' ? c.code : undefined;
  }
}

/** `listenInherited` found no socket handed over through `LISTEN_FDS` (with that name). */
export class NoInheritedSocketError extends QuiesceError {
  constructor(message: string) {
    super('ERR_NO_INHERITED_SOCKET', message);
  }
}

/** `serve` was given a listener that is closed or already served. */
export class ListenerInUseError extends QuiesceError {
  constructor(message: string) {
    super('ERR_LISTENER_IN_USE', message);
  }
}
