/**
 * The sockets a supervisor handed to this process, as the preload sees them, and which of them
 * a `listen()` call means. Pure apart from `fstat`: no handle is opened here.
 *
 * Guarantees:
 * 1. A descriptor counts as inherited only if it is, right now in this process, the very
 *    socket the supervisor bound (same device and inode as `QUIESCE_LISTEN` says). A number
 *    that a wrapper closed or reused (npm's node puts its epoll descriptor at 3) never counts.
 * 2. `matchListen` maps a listen request to a socket by port (TCP) or path (unix); when the
 *    supervisor holds exactly one socket, any listen on a named port (if it is TCP) or path
 *    (if it is unix) means that one. A listen on port 0 (an ephemeral port) is never mapped.
 * 3. A socket is claimed at most once per process: a second server never gets the same one.
 */
import { fstatSync } from 'node:fs';
import { resolve } from 'node:path';

/** The environment variable through which the supervisor describes its sockets (JSON). */
export const LISTEN_ENV = 'QUIESCE_LISTEN';

/**
 * @typedef {{ kind: 'tcp', port: number } | { kind: 'unix', path: string }} Where
 * @typedef {{ fd: number, name: string, address: string, dev: number, ino: number }} Described
 * @typedef {Described & { where: Where, claimed: boolean }} Inherited
 */

/**
 * Parses an address as the supervisor formats it: `127.0.0.1:8080`, `*:8080`, `[::1]:8080`,
 * `unix:/run/app.sock`. Null for anything else.
 * @param {string} address
 * @returns {Where | null}
 */
export function parseAddress(address) {
  if (typeof address !== 'string') return null;
  if (address.startsWith('unix:')) return { kind: 'unix', path: address.slice(5) };
  const m = /:(\d{1,5})$/.exec(address);
  return m ? { kind: 'tcp', port: Number(m[1]) } : null;
}

/**
 * Reads `QUIESCE_LISTEN` and keeps the entries whose descriptor is, in this process, the socket
 * described (guarantee 1). Never throws: a malformed value means nothing is inherited.
 * @param {NodeJS.ProcessEnv} env
 * @returns {Inherited[]}
 */
export function inheritedSockets(env) {
  /** @type {unknown} */
  let list;
  try {
    list = JSON.parse(env[LISTEN_ENV] ?? '[]');
  } catch {
    return [];
  }
  if (!Array.isArray(list)) return [];
  /** @type {Inherited[]} */
  const out = [];
  for (const d of list) {
    if (!d || typeof d !== 'object' || !Number.isInteger(d.fd) || d.fd < 3) continue;
    const where = parseAddress(d.address);
    if (!where || !isSameSocket(d.fd, d.dev, d.ino)) continue;
    out.push({
      fd: d.fd,
      name: String(d.name ?? 'unknown'),
      address: d.address,
      dev: d.dev,
      ino: d.ino,
      where,
      claimed: false,
    });
  }
  return out;
}

/**
 * True when `fd` is open here and is the socket with that device and inode.
 * @param {number} fd
 * @param {number} dev
 * @param {number} ino
 */
export function isSameSocket(fd, dev, ino) {
  try {
    const st = fstatSync(fd);
    return st.isSocket() && st.ino === ino && st.dev === dev;
  } catch {
    return false;
  }
}

/**
 * The listen request in `args` (what `net.Server.prototype.listen` was given), reduced to what
 * matters for mapping: an inherited fd, a TCP port or a unix path. Null for a handle, or an
 * options object we do not map (e.g. `{ handle }`).
 * @param {unknown[]} args
 * @param {string} cwd
 * @returns {{ fd: number } | Where | null}
 */
export function listenRequest(args, cwd) {
  const a = args[0];
  if (a !== null && typeof a === 'object') {
    const o = /** @type {Record<string, unknown>} */ (a);
    if ('_handle' in o || 'handle' in o) return null;
    if (typeof o.fd === 'number') return { fd: o.fd };
    if (typeof o.path === 'string') return { kind: 'unix', path: resolve(cwd, o.path) };
    return { kind: 'tcp', port: toPort(o.port) };
  }
  if (typeof a === 'string' && !/^\s*\d+\s*$/.test(a)) {
    return { kind: 'unix', path: resolve(cwd, a) };
  }
  return { kind: 'tcp', port: toPort(a) };
}

/** @param {unknown} p */
function toPort(p) {
  const n = typeof p === 'string' ? Number(p) : p;
  return typeof n === 'number' && Number.isInteger(n) && n > 0 && n < 65536 ? n : 0;
}

/**
 * Which unclaimed inherited socket a request means (guarantee 2), or null: bind as asked.
 * @param {{ fd: number } | Where | null} req
 * @param {readonly Inherited[]} sockets
 * @returns {Inherited | null}
 */
export function matchListen(req, sockets) {
  if (req === null) return null;
  if ('fd' in req) return sockets.find((s) => s.fd === req.fd && !s.claimed) ?? null;
  if (req.kind === 'tcp' && req.port === 0) return null;
  const exact = sockets.find((s) =>
    req.kind === 'tcp'
      ? s.where.kind === 'tcp' && s.where.port === req.port
      : s.where.kind === 'unix' && s.where.path === req.path,
  );
  if (exact) return exact.claimed ? null : exact;
  const only = sockets.length === 1 ? sockets[0] : null;
  if (only && !only.claimed && only.where.kind === req.kind) return only;
  return null;
}
