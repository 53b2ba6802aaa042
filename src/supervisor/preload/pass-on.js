/**
 * Wrappers: a Node process that holds the inherited sockets but does not listen on them
 * (`npm start`'s own node, a script runner) hands them on to the processes it starts.
 *
 * Why: libuv starts a child with exactly the descriptors in its `stdio` and nothing else, so
 * without this the sockets stop at the first Node wrapper and the app finds npm's epoll
 * descriptor at fd 3 (its `listen({ fd: 3 })` fails with EINVAL).
 *
 * Guarantees:
 * 1. Every child started through `child_process` (spawn, exec, execFile, fork: they all go
 *    through `ChildProcess.prototype.spawn`) gets the sockets and the readiness descriptor at
 *    the same numbers, unless its `stdio` already uses a number; then they go to free numbers
 *    and the child's `QUIESCE_LISTEN` / `QUIESCE_READY_FD` say where (`LISTEN_FDS`, which
 *    requires them from 3 on, is then removed from the child's environment).
 * 2. Nothing is handed on once this process listens on one of the sockets itself (`active()`
 *    turns false), nor to a child whose environment has no `QUIESCE_LISTEN`.
 * 3. `spawnSync` and `execSync` are not covered: they start no wrapper that outlives the call.
 */
import { ChildProcess } from 'node:child_process';
import { LISTEN_ENV } from './sockets.js';

/**
 * @param {readonly import('./sockets.js').Inherited[]} sockets
 * @param {number | null} readyFd
 * @param {() => boolean} active
 */
export function passOnToChildren(sockets, readyFd, active) {
  const proto = /** @type {{ spawn(options: SpawnOptions): unknown }} */ (
    /** @type {unknown} */ (ChildProcess.prototype)
  );
  const spawn = proto.spawn;
  proto.spawn = function spawnWithSockets(options) {
    if (active() && options && Array.isArray(options.envPairs)) handOn(options, sockets, readyFd);
    return spawn.call(this, options);
  };
}

/**
 * @typedef {{ stdio?: unknown, envPairs?: string[] }} SpawnOptions
 */

/**
 * @param {SpawnOptions} options
 * @param {readonly import('./sockets.js').Inherited[]} sockets
 * @param {number | null} readyFd
 */
function handOn(options, sockets, readyFd) {
  const pairs = /** @type {string[]} */ (options.envPairs);
  if (!pairs.some((p) => p.startsWith(`${LISTEN_ENV}=`))) return;
  const s = options.stdio ?? 'pipe';
  /** @type {unknown[]} */
  const stdio =
    typeof s === 'string' ? [s, s, s] : Array.isArray(s) ? [...s] : ['pipe', 'pipe', 'pipe'];
  const taken = (/** @type {number} */ i) =>
    i < stdio.length && stdio[i] != null && !(i >= 3 && stdio[i] === 'ignore');
  let moved = false;
  /** @type {Map<number, number>} */
  const at = new Map();
  const place = (/** @type {number} */ fd) => {
    let i = fd;
    if (taken(i)) {
      moved = true;
      i = Math.max(3, stdio.length);
      while (taken(i) || [...at.values()].includes(i)) i++;
    }
    while (stdio.length < i) stdio.push('ignore');
    stdio[i] = fd;
    at.set(fd, i);
  };
  for (const sock of sockets) place(sock.fd);
  if (readyFd !== null) place(readyFd);
  options.stdio = stdio;
  if (!moved) return;
  const described = sockets.map((sock) => ({
    fd: at.get(sock.fd),
    name: sock.name,
    address: sock.address,
    dev: sock.dev,
    ino: sock.ino,
  }));
  const drop = [
    'LISTEN_FDS=',
    'LISTEN_FDNAMES=',
    'LISTEN_PID=',
    `${LISTEN_ENV}=`,
    'QUIESCE_READY_FD=',
  ];
  const kept = pairs.filter((p) => !drop.some((d) => p.startsWith(d)));
  kept.push(`${LISTEN_ENV}=${JSON.stringify(described)}`);
  if (readyFd !== null) kept.push(`QUIESCE_READY_FD=${at.get(readyFd)}`);
  pairs.length = 0;
  pairs.push(...kept);
}
