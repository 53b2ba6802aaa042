/**
 * The supervisor's private runtime directory (control sockets, the workers' compile cache) and
 * the ownership checks that make it trustworthy.
 *
 * Guarantees:
 * 1. The default location is `$XDG_RUNTIME_DIR/quiesce`, else `<tmpdir>/quiesce-<uid>`. Only
 *    the last component is ever created, mode 0700: a missing `$XDG_RUNTIME_DIR` is an error,
 *    not a directory we make up.
 * 2. A directory we use as private must be a real directory (not a symlink), owned by us, and
 *    closed to group and others; anything else is refused with a one-line error naming the fix.
 * 3. A client trusts an answer only from a socket owned by its own user, in a directory owned
 *    by that user or root and not writable by others (unless sticky, as /tmp) — so nobody else
 *    can put a socket where the client looks (`trustProblem`).
 */
import { lstatSync, mkdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ControlSocketError, inWords } from './errors.ts';

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** @internal this process's uid (0 where there are no uids). */
export function uid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : 0;
}

/** @internal the default runtime directory for `env`. */
export function runtimeDir(env: NodeJS.ProcessEnv): string {
  return env.XDG_RUNTIME_DIR
    ? join(env.XDG_RUNTIME_DIR, 'quiesce')
    : join(tmpdir(), `quiesce-${uid()}`);
}

/**
 * The control socket path for supervisor `name`: `$XDG_RUNTIME_DIR/quiesce/<name>.sock`, or
 * `<tmpdir>/quiesce-<uid>/<name>.sock` when there is no runtime directory.
 * **Cancellation**: synchronous; not a checkpoint.
 * @example
 * defaultControlPath('api', process.env); // '/run/user/1000/quiesce/api.sock'
 */
export function defaultControlPath(name: string, env: NodeJS.ProcessEnv): string {
  if (!NAME.test(name)) {
    throw new ControlSocketError(`bad supervisor name "${name}": use letters, digits, . _ -`);
  }
  return join(runtimeDir(env), `${name}.sock`);
}

const ERRNO_WORDS: Record<string, string> = {
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOSPC: 'no space left on the device',
  ENOTDIR: 'a component of the path is not a directory',
  ENOENT: 'its parent directory does not exist',
};

/** One line for a failed file-system call: `the file system is read-only (EROFS)`. */
const words = (e: unknown): string => inWords(e, ERRNO_WORDS);

/** Why the private directory `dir` cannot be trusted, or null. */
function privateProblem(dir: string): string | null {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(dir);
  } catch (e) {
    return `cannot use ${dir}: ${words(e)}`;
  }
  if (!st.isDirectory()) return `${dir} is not a directory (refusing to use it)`;
  if (st.uid !== uid()) return `${dir} belongs to uid ${st.uid}, not to you: refusing to use it`;
  if ((st.mode & 0o077) !== 0) {
    return `${dir} is accessible to other users (mode ${(st.mode & 0o777).toString(8)}): chmod 700 it`;
  }
  return null;
}

/**
 * @internal creates `dir` (its last component only, mode 0700) or checks an existing one
 * (guarantee 2). `what` names the directory in errors. Throws `ControlSocketError`.
 */
export function ensurePrivateDir(dir: string, what: string): void {
  const parent = dirname(dir);
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new ControlSocketError(
        `cannot create ${what} ${dir}: ${parent} does not exist` +
          (what.includes('runtime') ? ' (is XDG_RUNTIME_DIR right?)' : ''),
      );
    }
    if (code !== 'EEXIST')
      throw new ControlSocketError(`cannot create ${what} ${dir}: ${words(e)}`);
  }
  const problem = privateProblem(dir);
  if (problem) throw new ControlSocketError(problem);
}

/**
 * @internal why a client must not trust a supervisor's answer on `path` (guarantee 3), or
 * null. A missing path is not a trust problem (connecting says "no supervisor").
 */
export function trustProblem(path: string): string | null {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    return null;
  }
  const me = uid();
  if (!st.isSocket()) return `${path} is not a socket`;
  if (st.uid !== me) {
    return `${path} belongs to uid ${st.uid}, not to you: refusing to trust what answers there`;
  }
  const dir = dirname(path);
  let d: ReturnType<typeof statSync>;
  try {
    d = statSync(dir);
  } catch (e) {
    return `cannot check ${dir}: ${words(e)}`;
  }
  if (d.uid !== me && d.uid !== 0) {
    return `${dir} belongs to uid ${d.uid}, not to you: refusing to trust a socket in it`;
  }
  // Writable by others and not sticky: anyone could have replaced the socket.
  if ((d.mode & 0o022) !== 0 && (d.mode & 0o1000) === 0) {
    return `${dir} is writable by other users: refusing to trust a socket in it`;
  }
  return null;
}
