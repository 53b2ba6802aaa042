/**
 * `--listen` specifications: `[name=]address`, where address is a port, `host:port`,
 * `[ipv6]:port` or `unix:/path`.
 *
 * Guarantees:
 * 1. Parsing is pure and total: a specification either yields a `ListenSpec` or throws a
 *    `ListenAddressError` that quotes it and shows the accepted forms.
 * 2. Names obey the `LISTEN_FDNAMES` rules (no `:`, printable, at most 255 characters), so the
 *    worker sees exactly the name that was given; an invalid name is reported as a name.
 * 3. The error says what is wrong in the user's terms: a missing port, an invalid NAME, an
 *    unbracketed IPv6 address, the same address listed twice (`checkDistinct`).
 * 4. `PORT`, `:PORT` and `*:PORT` mean every interface; a relative `unix:` path is resolved
 *    against the current directory (the absolute path is what gets bound and shown).
 */
import { isIPv4, isIPv6 } from 'node:net';
import { resolve } from 'node:path';
import { ListenAddressError } from './errors.ts';

/** Where a listener binds. `host: null` means every interface (`::`, or `0.0.0.0`). */
export type ListenAddress =
  | { readonly kind: 'tcp'; readonly host: string | null; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string };

/** A parsed `--listen` value. */
export interface ListenSpec {
  /** The name handed to the worker in `LISTEN_FDNAMES`; `'unknown'` when none was given. */
  readonly name: string;
  readonly address: ListenAddress;
}

const NAME = /^[A-Za-z0-9_.-]{1,255}$/;
const FORMS = 'expected PORT, HOST:PORT, [IPV6]:PORT or unix:/PATH, optionally prefixed by NAME=';
/** @internal the longest unix socket path (`sun_path` is 108 bytes on Linux, with the NUL). */
export const MAX_UNIX_PATH = 107;

/**
 * Parses one `--listen` value.
 * **Cancellation**: synchronous; not a checkpoint.
 * @example
 * parseListenSpec('http=127.0.0.1:8080');
 * // { name: 'http', address: { kind: 'tcp', host: '127.0.0.1', port: 8080 } }
 */
export function parseListenSpec(spec: string): ListenSpec {
  if (typeof spec !== 'string' || spec.trim() === '') {
    throw new ListenAddressError(`empty listen address: ${FORMS}`);
  }
  let name = 'unknown';
  let text = spec;
  const eq = spec.indexOf('=');
  // A '=' in a unix path (unix:/run/a=b.sock) belongs to the path: no name before `unix:`.
  if (eq >= 0 && !spec.startsWith('unix:')) {
    name = spec.slice(0, eq);
    text = spec.slice(eq + 1);
    if (!NAME.test(name)) {
      throw new ListenAddressError(
        `bad listen address "${spec}": the NAME "${name}" is invalid ` +
          '(NAME=ADDRESS; a NAME is 1 to 255 letters, digits, . _ -)',
      );
    }
  }
  return { name, address: parseAddress(text, spec) };
}

function parseAddress(text: string, spec: string): ListenAddress {
  const bad = (why: string) => new ListenAddressError(`bad listen address "${spec}": ${why}`);
  if (text.startsWith('unix:')) {
    const p = text.slice(5);
    if (p === '') throw bad('unix: needs a path, e.g. unix:/run/app.sock');
    const path = resolve(p);
    if (Buffer.byteLength(path) > MAX_UNIX_PATH) {
      throw bad(`the socket path is longer than ${MAX_UNIX_PATH} bytes`);
    }
    return { kind: 'unix', path };
  }
  if (/^\d+$/.test(text)) return { kind: 'tcp', host: null, port: parsePort(text, bad) };
  const noPort = (host: string) => bad(`a port is missing: write ${host}:PORT`);
  if (isIPv6(text)) throw bad(`write an IPv6 address in brackets with a port: [${text}]:PORT`);
  if (/^\[.*\]$/.test(text)) throw noPort(text);
  const colon = text.lastIndexOf(':');
  if (colon < 0) {
    if (isIPv4(text) || text === 'localhost' || text === '*') throw noPort(text);
    throw bad(FORMS);
  }
  let host = text.slice(0, colon);
  if (text.slice(colon + 1) === '') throw noPort(host);
  const port = parsePort(text.slice(colon + 1), bad);
  if (host.startsWith('[') && host.endsWith(']')) {
    host = host.slice(1, -1);
    if (!isIPv6(host)) throw bad(`"${host}" is not an IPv6 address`);
    return { kind: 'tcp', host, port };
  }
  if (host === '' || host === '*') return { kind: 'tcp', host: null, port };
  if (host === 'localhost') return { kind: 'tcp', host: '127.0.0.1', port };
  if (isIPv4(host)) return { kind: 'tcp', host, port };
  if (isIPv6(host)) throw bad('write an IPv6 address in brackets, e.g. [::1]:8080');
  throw bad(`"${host}" is not an IP address (host names are not resolved; ${FORMS})`);
}

function parsePort(s: string, bad: (why: string) => Error): number {
  if (!/^\d+$/.test(s)) throw bad(`port "${s}" is not a number`);
  const port = Number(s);
  if (port > 65535) throw bad(`port ${port} is out of range (0-65535)`);
  return port;
}

/**
 * Throws `ListenAddressError` when two specs would bind the same socket: the same address
 * twice, or every interface (`*:PORT`) besides one address on the same port. Port 0 asks for a
 * fresh port each time, so it never collides.
 * **Cancellation**: synchronous; not a checkpoint.
 * @example
 * checkDistinct([parseListenSpec('8080'), parseListenSpec('127.0.0.1:8080')]); // throws
 */
export function checkDistinct(specs: readonly ListenSpec[]): void {
  const seen = new Set<string>();
  const wildcardPorts = new Set<number>();
  const tcpPorts = new Map<number, string>();
  for (const { address: a } of specs) {
    const shown = formatAddress(a);
    if (a.kind === 'tcp' && a.port === 0) continue;
    if (seen.has(shown)) {
      throw new ListenAddressError(`the same listen address is given twice: ${shown}`);
    }
    seen.add(shown);
    if (a.kind !== 'tcp') continue;
    const other = tcpPorts.get(a.port);
    if (other !== undefined && (a.host === null || wildcardPorts.has(a.port))) {
      const [all, one] = a.host === null ? [shown, other] : [other, shown];
      throw new ListenAddressError(
        `${all} already listens on every interface, ${one} included: give one of them`,
      );
    }
    tcpPorts.set(a.port, shown);
    if (a.host === null) wildcardPorts.add(a.port);
  }
}

/**
 * The address as people write it: `127.0.0.1:8080`, `[::1]:8080`, `*:8080`, `unix:/path`.
 * **Cancellation**: synchronous; not a checkpoint.
 * @example
 * formatAddress({ kind: 'tcp', host: null, port: 80 }); // '*:80'
 */
export function formatAddress(a: ListenAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`;
  if (a.host === null) return `*:${a.port}`;
  return isIPv6(a.host) ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
