/**
 * quiesce/net — TCP and unix-socket servers that shut down gracefully.
 *
 * Guarantees of this part, and where each is kept:
 * 1. A shutdown never misses an accepted connection: each is a task of the server's group from
 *    the instant it is accepted, and the listener closes only once its accept queue is quiet,
 *    so connections in flight at the shutdown request are served, not reset (serve.ts).
 * 2. Shutdown stops accepting, tells handlers, waits for in-flight connections up to a deadline,
 *    then cancels the rest so their cleanup runs, and resolves when every socket is closed
 *    (serve.ts). Cancelling the task that started a server is such a shutdown.
 * 3. A handler's error is reported and never takes the server down (serve.ts).
 * 4. Reads are pulled on demand from a paused socket (bounded buffering) and a cancelled read
 *    or write loses and duplicates nothing (connection.ts).
 * 5. Timeouts, EOF and drain are values of `readWithin`, not exceptions (connection.ts).
 * 6. Connections close gracefully — FIN, drain, close — so a healthy peer never sees a reset,
 *    and the wait is bounded in time and bytes (connection.ts).
 * 7. Sockets can be inherited through systemd's `LISTEN_FDS` convention, which is how the
 *    quiesce supervisor hands them to workers (systemd.ts, listener.ts).
 */
export {
  Connection,
  type GracefulCloseOptions,
  type GracefulCloseResult,
  type ReadLineOptions,
  type ReadResult,
  type ReadWithinOptions,
} from './connection.ts';
export {
  ConcurrentReadError,
  ConnectionClosedError,
  ConnectionError,
  IdleTimeoutError,
  LineTooLongError,
  ListenError,
  ListenerInUseError,
  NoInheritedSocketError,
} from './errors.ts';
export {
  type AcceptErrorInfo,
  type FdListenOptions,
  type ListenInheritedOptions,
  type ListenOptions,
  Listener,
  type ListenerAddress,
  listen,
  listenInherited,
  type TcpListenOptions,
  type UnixListenOptions,
} from './listener.ts';
export {
  type Handler,
  type ServeOptions,
  Server,
  type ServerStats,
  type ShutdownOptions,
  type ShutdownReport,
  serve,
} from './serve.ts';
export {
  type InheritedSocket,
  inheritedSockets,
  LISTEN_FDS_START,
  type ListenFdsEnv,
  parseListenFds,
} from './systemd.ts';
