/**
 * Sockets handed over by a parent through systemd's `LISTEN_FDS` convention (sd_listen_fds(3)):
 * how systemd socket activation and the quiesce supervisor give a worker its listening sockets.
 *
 * Guarantees:
 * 1. The environment is read once per process and then unset (`LISTEN_FDS`, `LISTEN_FDNAMES`,
 *    `LISTEN_PID`), so processes this one spawns do not believe the sockets are theirs.
 * 2. Sockets addressed to another process (`LISTEN_PID` set and not ours) are ignored.
 * 3. Descriptors are numbered from 3 (`SD_LISTEN_FDS_START`) in the order the parent passed
 *    them; a name comes from the same position in `LISTEN_FDNAMES` (default `'unknown'`).
 * 4. A malformed environment is a clear `NoInheritedSocketError`, never a silent guess: a count
 *    that is not a number or is absurd (more than 65,536), names that do not match it, or a
 *    descriptor in the range that is not an open socket (the variables were meant for another
 *    process, and the numbers now belong to this one's own files).
 * 5. Parsing is bounded: it costs at most one `fstat` per claimed descriptor, and stops at the
 *    first that is not a socket.
 */
import { fstatSync } from 'node:fs';
import { NoInheritedSocketError } from './errors.ts';

/** The first inherited descriptor (`SD_LISTEN_FDS_START`). */
export const LISTEN_FDS_START = 3;

/**
 * The most descriptors a `LISTEN_FDS` count may claim. Far above any real hand-over, far below
 * what a corrupt count such as `1000000000` would cost (a list that exhausts the heap).
 */
const LISTEN_FDS_MAX = 65536;

/** One socket handed over by the parent. */
export interface InheritedSocket {
  /** The descriptor number in this process (3, 4, …). */
  readonly fd: number;
  /** Its name from `LISTEN_FDNAMES`, or `'unknown'` when the parent gave none. */
  readonly name: string;
}

/** Where `parseListenFds` reads from: the seam tests and supervisors use. */
export interface ListenFdsEnv {
  readonly LISTEN_FDS?: string;
  readonly LISTEN_FDNAMES?: string;
  readonly LISTEN_PID?: string;
}

/** @internal why `fd` is not an open socket of this process (`'not open'`, `'a pipe'`, …), or null. */
export function notASocket(fd: number): string | null {
  try {
    const st = fstatSync(fd);
    if (st.isSocket()) return null;
    const kind = st.isFIFO()
      ? 'a pipe'
      : st.isFile()
        ? 'a file'
        : st.isDirectory()
          ? 'a directory'
          : st.isCharacterDevice()
            ? 'a character device'
            : 'not a socket';
    return kind;
  } catch {
    return 'not open';
  }
}

/**
 * Parses the `LISTEN_FDS` convention from `env` for the process `pid`, without side effects,
 * and checks that every descriptor it names is an open socket of this process (`checkSocket`
 * answers why one is not, or null; a seam for tests). Returns `[]` when nothing was handed
 * over or the sockets belong to another process.
 * **Cancellation**: synchronous; not a checkpoint.
 * @example
 * parseListenFds({ LISTEN_FDS: '2', LISTEN_FDNAMES: 'http:admin' }, process.pid);
 * // [{ fd: 3, name: 'http' }, { fd: 4, name: 'admin' }] when fds 3 and 4 are sockets
 */
export function parseListenFds(
  env: ListenFdsEnv,
  pid: number,
  checkSocket: (fd: number) => string | null = notASocket,
): InheritedSocket[] {
  const count = env.LISTEN_FDS;
  if (count === undefined || count === '') return [];
  if (env.LISTEN_PID !== undefined && env.LISTEN_PID !== '') {
    if (!/^\d+$/.test(env.LISTEN_PID)) {
      throw new NoInheritedSocketError(`LISTEN_PID must be a process id, got "${env.LISTEN_PID}"`);
    }
    if (Number(env.LISTEN_PID) !== pid) return [];
  }
  if (!/^\d+$/.test(count)) {
    throw new NoInheritedSocketError(`LISTEN_FDS must be a count of descriptors, got "${count}"`);
  }
  const n = Number(count);
  if (n > LISTEN_FDS_MAX) {
    throw new NoInheritedSocketError(
      `LISTEN_FDS says ${count} descriptors; more than ${LISTEN_FDS_MAX} is taken for a corrupt environment`,
    );
  }
  const names =
    env.LISTEN_FDNAMES === undefined || env.LISTEN_FDNAMES === ''
      ? []
      : env.LISTEN_FDNAMES.split(':');
  if (names.length > 0 && names.length !== n) {
    throw new NoInheritedSocketError(
      `LISTEN_FDNAMES names ${names.length} socket(s) but LISTEN_FDS says ${n}`,
    );
  }
  const out: InheritedSocket[] = [];
  for (let i = 0; i < n; i++) {
    const fd = LISTEN_FDS_START + i;
    const why = checkSocket(fd);
    if (why !== null) {
      throw new NoInheritedSocketError(
        `LISTEN_FDS says ${n} socket(s) from fd ${LISTEN_FDS_START}, but fd ${fd} is ${why}: ` +
          'the variables were not meant for this process (unset LISTEN_FDS, or fix what sets it)',
      );
    }
    out.push({ fd, name: names[i] || 'unknown' });
  }
  return out;
}

let inherited: readonly InheritedSocket[] | null = null;
// The first reading's error, thrown again by every later call: the variables are gone by then,
// and reading "nothing inherited" instead would be the silent guess guarantee 4 forbids.
let malformed: NoInheritedSocketError | null = null;
const claimed = new Set<number>();

/**
 * The sockets this process inherited, read from `process.env` on first call (which then
 * unsets the variables, guarantee 1) and remembered for later calls. A malformed environment
 * throws `NoInheritedSocketError`, on the first call and on every later one.
 * **Cancellation**: synchronous; not a checkpoint.
 * @example
 * for (const { fd, name } of inheritedSockets()) console.log(name, fd);
 */
export function inheritedSockets(): readonly InheritedSocket[] {
  if (malformed !== null) throw malformed;
  if (inherited === null) {
    const env = process.env;
    try {
      inherited = Object.freeze(parseListenFds(env, process.pid));
    } catch (e) {
      if (e instanceof NoInheritedSocketError) malformed = e;
      throw e;
    } finally {
      delete env.LISTEN_FDS;
      delete env.LISTEN_FDNAMES;
      delete env.LISTEN_PID;
    }
  }
  return inherited;
}

/**
 * @internal picks the inherited socket called `name` (or the only one) and marks it taken, so
 * no descriptor is wrapped twice. Returns null when none matches.
 */
export function claimInherited(name: string | undefined): InheritedSocket | null {
  const all = inheritedSockets();
  const free = all.filter((s) => !claimed.has(s.fd));
  let pick: InheritedSocket | undefined;
  if (name === undefined) {
    if (free.length > 1) {
      throw new NoInheritedSocketError(
        `several sockets were inherited (${free.map((s) => s.name).join(', ')}): pass a name`,
      );
    }
    pick = free[0];
  } else {
    pick = free.find((s) => s.name === name);
  }
  if (!pick) return null;
  claimed.add(pick.fd);
  return pick;
}

/** @internal gives a descriptor back when opening it failed. */
export function releaseInherited(fd: number): void {
  claimed.delete(fd);
}
