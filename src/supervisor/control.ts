/**
 * The control channel: a unix socket that `quiesce reload | status | stop` talk to.
 *
 * Guarantees:
 * 1. Only the owner can connect: the socket is created with mode 0600 (the umask is tightened
 *    around bind, so there is no window with looser permissions) and the default location is a
 *    0700 directory owned by the user, which is refused if someone else owns it or it is open
 *    to others.
 * 2. One live supervisor per socket path: a path another supervisor answers on is an error; a
 *    dead supervisor's leftover socket is replaced.
 * 3. Protocol: one JSON request line per connection, answered by one JSON line. The answer to
 *    `stop` comes at once; the connection then stays open until the supervisor has stopped, so
 *    a client can wait for that.
 */
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { adopt } from '../core/index.ts';
import { ControlSocketError } from './errors.ts';
import { isStaleSocket, socketDirProblem } from './listeners.ts';

/** A request on the control socket. */
export interface ControlRequest {
  readonly op: 'status' | 'reload' | 'stop';
}

/** What the supervisor answers: `ok` plus data, or an error with a stable code. */
export type ControlResponse =
  | ({ ok: true } & Record<string, unknown>)
  | { ok: false; error: { code: string; message: string } };

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

function uid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : 0;
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
  const base = env.XDG_RUNTIME_DIR
    ? join(env.XDG_RUNTIME_DIR, 'quiesce')
    : join(tmpdir(), `quiesce-${uid()}`);
  return join(base, `${name}.sock`);
}

/** Creates the private directory of a default control path, or checks an existing one. */
function privateDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new ControlSocketError(`cannot create ${dir}: ${(e as Error).message}`);
  }
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new ControlSocketError(`${dir} is not a directory`);
  if (st.uid !== uid()) {
    throw new ControlSocketError(`${dir} belongs to uid ${st.uid}, not to you: refusing to use it`);
  }
  if ((st.mode & 0o077) !== 0) {
    throw new ControlSocketError(
      `${dir} is accessible to other users (mode ${(st.mode & 0o777).toString(8)}): chmod 700 it`,
    );
  }
}

type Handler = (req: ControlRequest, conn: net.Socket) => Promise<ControlResponse>;

/** The listening side of the control channel, owned by the supervisor. */
export class ControlServer {
  readonly path: string;
  readonly #server: net.Server;
  readonly #conns = new Set<net.Socket>();
  #closed = false;

  private constructor(path: string, server: net.Server) {
    this.path = path;
    this.#server = server;
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
    if (privateParent) privateDir(dirname(path));
    else {
      const problem = socketDirProblem(path);
      if (problem) {
        throw new ControlSocketError(`cannot open control socket ${path}: ${problem.why}`);
      }
    }
    let exists = false;
    try {
      exists = lstatSync(path) !== undefined;
    } catch {}
    if (exists) {
      if (!(await isStaleSocket(path))) {
        throw new ControlSocketError(
          `${path} is in use (another supervisor answers there, or it is not a socket): ` +
            'pass --name or --control to run another one',
        );
      }
      unlinkSync(path);
    }
    const server = net.createServer();
    const cs = new ControlServer(path, server);
    server.on('connection', (c) => cs.#serve(c, handler));
    // Tighten the umask only around bind: the socket is born 0600, never looser.
    const old = process.umask(0o177);
    try {
      server.listen(path);
    } finally {
      process.umask(old);
    }
    await adopt(
      new Promise<void>((resolve, reject) => {
        server.once('listening', resolve);
        server.once('error', (e: NodeJS.ErrnoException) => {
          const why =
            e.code === 'EACCES'
              ? `permission denied (you cannot create files in ${dirname(path)})`
              : e.message;
          reject(new ControlSocketError(`cannot open control socket ${path}: ${why}`));
        });
      }),
    );
    chmodSync(path, 0o600);
    return cs;
  }

  #serve(c: net.Socket, handler: Handler): void {
    if (this.#closed) {
      c.destroy();
      return;
    }
    this.#conns.add(c);
    c.on('close', () => this.#conns.delete(c));
    c.on('error', () => {});
    c.setEncoding('utf8');
    let buf = '';
    const onData = (d: string) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i < 0) {
        if (buf.length > 4096) c.destroy();
        return;
      }
      c.off('data', onData);
      let req: ControlRequest;
      try {
        req = JSON.parse(buf.slice(0, i));
      } catch {
        c.end(`${JSON.stringify(fail('ERR_CONTROL_PROTOCOL', 'request is not JSON'))}\n`);
        return;
      }
      handler(req, c).then(
        (res) => {
          if (c.destroyed) return;
          if (req.op === 'stop' && res.ok) c.write(`${JSON.stringify(res)}\n`);
          else c.end(`${JSON.stringify(res)}\n`);
        },
        (e: Error) => {
          if (!c.destroyed) c.end(`${JSON.stringify(fail('ERR_INTERNAL', e.message))}\n`);
        },
      );
    };
    c.on('data', onData);
  }

  /** Stops answering, ends every open connection and removes the socket file. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const c of this.#conns) c.end();
    try {
      if (lstatSync(this.path).isSocket()) unlinkSync(this.path);
    } catch {}
  }
}

function fail(code: string, message: string): ControlResponse {
  return { ok: false, error: { code, message } };
}

/** Options for `controlRequest`. */
export interface ControlRequestOptions {
  /** After a `stop` answer, wait until the supervisor has closed the connection. */
  waitForClose?: boolean;
}

/**
 * Sends one request to the supervisor at `path` and returns its answer. Throws
 * `ControlSocketError` when no supervisor answers there.
 * **Cancellation**: a checkpoint while waiting for the answer (the request, once sent, stands).
 * @example
 * const res = await controlRequest('/run/user/1000/quiesce/default.sock', { op: 'status' });
 */
export async function controlRequest(
  path: string,
  req: ControlRequest,
  options?: ControlRequestOptions,
): Promise<ControlResponse> {
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
