/**
 * quiesce/supervisor — zero-downtime restarts: one process keeps the listening sockets, worker
 * generations come and go over them.
 *
 * Guarantees of this part, and where each is kept:
 * 1. No client is refused or reset by a reload: the sockets are bound once and never closed
 *    while the supervisor runs, and the supervisor itself never accepts (listeners.ts).
 * 2. A new generation serves before the old one is asked to drain; one that never gets ready
 *    is stopped and the old one serves on (generation.ts).
 * 3. One reload at a time; concurrent requests coalesce into one more reload (supervisor.ts).
 * 4. Workers get the sockets the systemd way (`LISTEN_FDS` from fd 3, `LISTEN_PID` their own
 *    pid) and report readiness with one line on a pipe, in any language (worker.ts, notify.ts).
 * 5. Nothing else leaks into a worker: no descriptor besides stdio, sockets and the readiness
 *    pipe; no `NOTIFY_SOCKET` (fds.ts, worker.ts).
 * 6. The control socket admits only its owner, answers any malformed request with an error,
 *    and cannot be locked out by idle connections; clients trust only their own user's socket
 *    (control.ts, runtime-dir.ts).
 * 7. A worker is its process group: drain and SIGKILL reach wrappers and their children, and
 *    a worker is gone once its group is (worker.ts).
 * 8. A supervisor killed outright leaves no worker behind: its watchdog drains their groups
 *    (watchdog.ts). An address in use names its holders (port-holders.ts).
 * 9. Every default is written once (`supervisorDefaults`, options.ts).
 *
 * Worker side: `notifyReady()` once the worker serves; `supervisedWorker()` says who it is.
 */
export {
  checkDistinct,
  formatAddress,
  type ListenAddress,
  type ListenSpec,
  parseListenSpec,
} from './address.ts';
export {
  type ControlRequest,
  type ControlRequestOptions,
  type ControlResponse,
  controlRequest,
  defaultControlPath,
} from './control.ts';
export {
  CommandNotExecutableError,
  CommandNotFoundError,
  ControlSocketError,
  CrashLoopError,
  ListenAddressError,
  ReloadError,
  SupervisorStoppingError,
  WorkerNotReadyError,
} from './errors.ts';
export { ListenError } from '../net/errors.ts';
export type { Listener } from './listeners.ts';
export {
  notifyReady,
  READY_FD_ENV,
  type ReadyResult,
  type SupervisedWorker,
  supervisedWorker,
} from './notify.ts';
export { MAX_WORKERS, type SupervisorOptions, supervisorDefaults } from './options.ts';
export type {
  GenerationState,
  GenerationStatus,
  ReloadResult,
  SupervisorStatus,
  WorkerStatus,
} from './status.ts';
export { Supervisor } from './supervisor.ts';
export type { WorkerExit, WorkerState } from './worker.ts';
