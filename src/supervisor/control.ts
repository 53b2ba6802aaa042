/**
 * The control channel: a unix socket that `quiesce reload | status | stop` talk to, served by
 * quiesce/net (`listen` with the stale-socket lock, `serve`, bounded `readLine`).
 *
 * Guarantees:
 * 1. Only the owner can connect: the socket is created with mode 0600 (net narrows the umask
 *    around bind) and the default location is a 0700 directory owned by the user, which is
 *    refused if someone else owns it or it is open to others (runtime-dir.ts).
 * 2. One live supervisor per socket path: a path another supervisor answers on is an error; a
 *    dead supervisor's leftover socket of ours is replaced; another user's is never touched.
 * 3. Protocol: one JSON request line per connection, answered by one JSON line. Anything else
 *    — `null`, garbage, an unknown op, a line past `MAX_REQUEST_BYTES`, no line within
 *    `REQUEST_TIMEOUT_MS` — gets an error reply with a stable code, and never reaches the
 *    supervisor. The answer to `stop` comes at once; the connection then stays open until the
 *    supervisor has stopped, so a client can wait for that.
 * 4. Idle connections cannot lock the owner out: at most `MAX_WAITING` connections wait for
 *    their request line — a new one closes the longest-waiting (after an error reply) — and
 *    at most `MAX_BUSY` requests run at once (the rest are answered "busy" at once).
 * 5. A client trusts an answer only from a socket owned by its user, in a directory no one
 *    else can write (`controlRequest`, runtime-dir.ts).
 */
import { lstatSync, unlinkSync } from 'node:fs';
import * as net from 'node:net';
import { dirname } from 'node:path';
import { adopt, cancelScope, isCancellation, type ScopeHandle, TaskGroup } from '../core/index.ts';
import { ListenError, type Connection, listen, serve } from '../net/index.ts';
import { Event } from '../sync/event.ts';
import { MAX_UNIX_PATH } from './address.ts';
import { ControlSocketError } from './errors.ts';
import { ensurePrivateDir, trustProblem } from './runtime-dir.ts';

export { defaultControlPath } from './runtime-dir.ts';

/** A request on the control socket. */
export interface ControlRequest {
  readonly op: 'status' | 'reload' | 'stop';
}

/** What the supervisor answers: `ok` plus data, or an error with a stable code. */
export type ControlResponse =
  | ({ ok: true } & Record<string, unknown>)
  | { ok: false; error: { code: string; message: string } };

/** The longest request line accepted. */
const MAX_REQUEST_BYTES = 4096;
/** How long a connection may take to send its request line. */
const REQUEST_TIMEOUT_MS = 3000;
/** Connections waiting for their request line at once. */
const MAX_WAITING = 16;
/** Requests being answered at once (reloads wait for a generation). */
const MAX_BUSY = 64;

const OPS: ReadonlySet<string> = new Set(['status', 'reload', 'stop']);

function fail(code: string, message: string): ControlResponse {
  return { ok: false, error: { code, message } };
}

/** The request in `line`, or the error reply it deserves. */
function parseRequest(line: string): ControlRequest | ControlResponse {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return fail('ERR_CONTROL_PROTOCOL', 'request is not JSON');
  }
  const op = (v as { op?: unknown } | null)?.op;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    return fail('ERR_CONTROL_PROTOCOL', 'request must be a JSON object such as {"op":"status"}');
  }
  if (typeof op !== 'string' || !OPS.has(op)) {
    return fail('ERR_CONTROL_PROTOCOL', `unknown op ${JSON.stringify(op) ?? 'undefined'}`);
  }
  return { op: op as ControlRequest['op'] };
}

type Handler = (req: ControlRequest) => Promise<ControlResponse>;

/** The listening side of the control channel, owned by the supervisor. */
export class ControlServer {
  readonly path: string;
  readonly #group: TaskGroup;
  readonly #handler: Handler;
  /** Connections waiting for their request line, oldest first. */
  readonly #waiting = new Set<ScopeHandle>();
  #busy = 0;
  /** Set when the supervisor has stopped: `stop` connections are then closed. */
  readonly #stopped = new Event();
  #closing: Promise<void> | null = null;

  private constructor(path: string, group: TaskGroup, handler: Handler) {
    this.path = path;
    this.#group = group;
    this.#handler = handler;
  }

  /**
   * Opens the control socket at `path`. `privateParent`: the directory is ours to create and
   * must be private (the default location). Throws `ControlSocketError`.
   * **Cancellation**: a checkpoint while binding.
   */
  static async open(
    path: string,
    privateParent: boolean,
    handler: Handler,
  ): Promise<ControlServer> {
    if (privateParent) ensurePrivateDir(dirname(path), 'runtime directory');
    let listener: Awaited<ReturnType<typeof listen>>;
    try {
      listener = await listen({ path, mode: 0o600 });
    } catch (e) {
      if (!(e instanceof ListenError)) throw e;
      if (e.errno === 'EADDRINUSE' && /accepting on it|bound it first/.test(e.message)) {
        throw new ControlSocketError(
          `${path} is in use (another supervisor answers there): ` +
            'pass --name or --control to run another one',
        );
      }
      throw new ControlSocketError(
        `cannot open control socket ${e.message.replace(/^cannot listen on /, '')}`,
      );
    }
    // Shielded like the supervisor's own group: only `close()` (the end of `stop`) ends it, so
    // `status` and `stop --wait` keep answering while a signal-initiated stop drains.
    const group = new TaskGroup({
      name: 'control',
      policy: 'supervise',
      shield: true,
      onError: () => {},
    });
    const cs = new ControlServer(path, group, handler);
    group.spawn(
      () =>
        serve(listener, (conn) => cs.#serve(conn), {
          name: 'control',
          idleTimeoutMs: REQUEST_TIMEOUT_MS,
          drainTimeoutMs: 1000,
          onError: () => {},
        }).wait(),
      { name: 'control server' },
    );
    return cs;
  }

  async #serve(conn: Connection): Promise<void> {
    const reply = (r: ControlResponse) => conn.write(`${JSON.stringify(r)}\n`);
    if (this.#busy >= MAX_BUSY) {
      await reply(fail('ERR_CONTROL_BUSY', `${MAX_BUSY} requests are running: try again`));
      return;
    }
    this.#busy++;
    try {
      const line = await this.#readRequest(conn);
      if (typeof line !== 'string') {
        await reply(line);
        return;
      }
      const req = parseRequest(line);
      if ('ok' in req) {
        await reply(req);
        return;
      }
      let res: ControlResponse;
      try {
        res = await this.#handler(req);
      } catch (e) {
        if (isCancellation(e)) throw e;
        res = fail('ERR_INTERNAL', (e as Error)?.message ?? String(e));
      }
      await reply(res);
      if (req.op === 'stop' && res.ok) await this.#stopped.wait();
    } finally {
      this.#busy--;
    }
  }

  /** The request line, or the error reply for a connection that sent none. */
  async #readRequest(conn: Connection): Promise<string | ControlResponse> {
    if (this.#waiting.size >= MAX_WAITING) {
      const oldest = this.#waiting.values().next().value;
      if (oldest) {
        this.#waiting.delete(oldest);
        oldest.cancel('evicted');
      }
    }
    let scope: ScopeHandle | null = null;
    try {
      const r = await cancelScope(async (s) => {
        scope = s;
        this.#waiting.add(s);
        return conn.readLine({ maxBytes: MAX_REQUEST_BYTES });
      });
      if (r.cancelledCaught) {
        return fail(
          'ERR_CONTROL_BUSY',
          `more than ${MAX_WAITING} connections waited for their request: closed the oldest`,
        );
      }
      if (r.value === null || r.value === undefined) {
        return fail('ERR_CONTROL_PROTOCOL', 'the connection ended before a request line');
      }
      return r.value;
    } catch (e) {
      if (isCancellation(e)) throw e;
      const code = (e as { code?: string }).code;
      if (code === 'ERR_LINE_TOO_LONG') {
        return fail('ERR_CONTROL_PROTOCOL', `request line longer than ${MAX_REQUEST_BYTES} bytes`);
      }
      if (code === 'ERR_IDLE_TIMEOUT') {
        return fail('ERR_CONTROL_PROTOCOL', `no request line within ${REQUEST_TIMEOUT_MS} ms`);
      }
      throw e; // the peer is gone: nothing to answer
    } finally {
      if (scope) this.#waiting.delete(scope);
    }
  }

  /**
   * Removes the socket file at once, synchronously (a forced exit: no time to close
   * connections; the process is about to end, which closes them).
   */
  removeFile(): void {
    try {
      if (lstatSync(this.path).isSocket()) unlinkSync(this.path);
    } catch {}
  }

  /**
   * Stops answering, closes every open connection (gracefully, within a second) and removes
   * the socket file. Idempotent.
   * **Cancellation**: not a checkpoint.
   */
  close(): Promise<void> {
    this.#stopped.set();
    this.#closing ??= this.#group.cancel('control channel closing');
    return this.#closing;
  }
}

/** Options for `controlRequest`. */
export interface ControlRequestOptions {
  /** After a `stop` answer, wait until the supervisor has closed the connection. */
  waitForClose?: boolean;
}

/**
 * Sends one request to the supervisor at `path` and returns its answer. Throws
 * `ControlSocketError` when no supervisor answers there, or when the socket or its directory
 * belongs to someone else (an answer from there cannot be trusted).
 * **Cancellation**: a checkpoint while waiting for the answer (the request, once sent, stands).
 * @example
 * const res = await controlRequest('/run/user/1000/quiesce/default.sock', { op: 'status' });
 */
export async function controlRequest(
  path: string,
  req: ControlRequest,
  options?: ControlRequestOptions,
): Promise<ControlResponse> {
  if (Buffer.byteLength(path) > MAX_UNIX_PATH) {
    throw new ControlSocketError(
      `${path} is ${Buffer.byteLength(path)} bytes, more than the ${MAX_UNIX_PATH} a unix socket allows`,
    );
  }
  const distrust = trustProblem(path);
  if (distrust) throw new ControlSocketError(distrust);
  return adopt(
    new Promise<ControlResponse>((resolve, reject) => {
      const c = net.connect(path);
      let buf = '';
      let answer: ControlResponse | null = null;
      c.setEncoding('utf8');
      c.on('connect', () => c.write(`${JSON.stringify(req)}\n`));
      c.on('data', (d: string) => {
        buf += d;
        const i = buf.indexOf('\n');
        if (i < 0 || answer) return;
        try {
          answer = JSON.parse(buf.slice(0, i)) as ControlResponse;
        } catch {
          c.destroy();
          reject(new ControlSocketError(`bad answer from ${path}`));
          return;
        }
        if (!options?.waitForClose) {
          c.destroy();
          resolve(answer);
        }
      });
      c.on('close', () => {
        if (answer) resolve(answer);
        else reject(new ControlSocketError(`the supervisor at ${path} closed without answering`));
      });
      c.on('error', (e: NodeJS.ErrnoException) => {
        const why =
          e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
            ? 'no supervisor is running there'
            : e.code === 'EACCES'
              ? 'permission denied (the socket belongs to another user)'
              : e.message;
        reject(
          new ControlSocketError(`cannot reach the supervisor at ${path}: ${why} (${e.code})`),
        );
      });
    }),
  );
}
