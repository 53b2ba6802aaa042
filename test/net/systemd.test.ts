import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { NoInheritedSocketError, parseListenFds } from '../../src/net/index.ts';
import { notASocket } from '../../src/net/systemd.ts';
import { converse } from './helpers.ts';

const node = process.execPath;
const execFileP = promisify(execFile);
const worker = new URL('./fixtures/inherited-worker.ts', import.meta.url).pathname;

// The pure parsing tests pretend every descriptor is a socket; the check itself is tested below.
const sockets = () => null;

describe('parseListenFds (the LISTEN_FDS convention)', () => {
  test('nothing handed over: no sockets', () => {
    assert.deepEqual(parseListenFds({}, 10, sockets), []);
    assert.deepEqual(parseListenFds({ LISTEN_FDS: '' }, 10, sockets), []);
  });

  test('descriptors start at 3 and take their names by position', () => {
    assert.deepEqual(
      parseListenFds({ LISTEN_FDS: '2', LISTEN_FDNAMES: 'http:admin' }, 10, sockets),
      [
        { fd: 3, name: 'http' },
        { fd: 4, name: 'admin' },
      ],
    );
  });

  test("unnamed descriptors are called 'unknown', as systemd does", () => {
    assert.deepEqual(parseListenFds({ LISTEN_FDS: '1' }, 10, sockets), [
      { fd: 3, name: 'unknown' },
    ]);
  });

  test('sockets addressed to another process (LISTEN_PID) are ignored; ours are taken', () => {
    assert.deepEqual(parseListenFds({ LISTEN_FDS: '1', LISTEN_PID: '11' }, 10, sockets), []);
    assert.equal(parseListenFds({ LISTEN_FDS: '1', LISTEN_PID: '10' }, 10, sockets).length, 1);
  });

  test('a malformed environment is a clear error, never a guess', () => {
    assert.throws(() => parseListenFds({ LISTEN_FDS: 'two' }, 10, sockets), NoInheritedSocketError);
    assert.throws(
      () => parseListenFds({ LISTEN_FDS: '1', LISTEN_PID: 'me' }, 10, sockets),
      /LISTEN_PID/,
    );
    assert.throws(
      () => parseListenFds({ LISTEN_FDS: '2', LISTEN_FDNAMES: 'http' }, 10, sockets),
      /names 1 socket/,
    );
  });

  test('a descriptor in the range that is not an open socket is a clear error, at the first one', () => {
    const seen: number[] = [];
    const check = (fd: number) => {
      seen.push(fd);
      return fd === 4 ? 'not open' : null;
    };
    assert.throws(
      () => parseListenFds({ LISTEN_FDS: '4' }, 10, check),
      (e: unknown) => e instanceof NoInheritedSocketError && /fd 4 is not open/.test(e.message),
    );
    assert.deepEqual(seen, [3, 4], 'it stops at the first descriptor that is not a socket');
    // The default check looks at the real descriptor: 2^30 is never open.
    assert.throws(
      () => parseListenFds({ LISTEN_FDS: '1' }, 10, (fd) => notASocket(fd + 2 ** 30)),
      /is not open/,
    );
  });

  test('an absurd count is a corrupt environment, not millions of descriptors', () => {
    assert.equal(parseListenFds({ LISTEN_FDS: '65536' }, 10, sockets).length, 65536);
    for (const count of ['65537', '3000000', '99999999999999999999']) {
      assert.throws(
        () => parseListenFds({ LISTEN_FDS: count }, 10, sockets),
        NoInheritedSocketError,
      );
    }
  });
});

describe('inheritedSockets (reads the environment once)', { timeout: 15_000 }, () => {
  test('a malformed environment throws on every call, never "nothing inherited" after the first', async () => {
    const net = new URL('../../src/net/index.ts', import.meta.url).pathname;
    const script = `
      import { inheritedSockets, listenInherited } from ${JSON.stringify(net)};
      const out = [];
      for (const f of [
        () => listenInherited('http', { fallback: { host: '127.0.0.1', port: 0 } }),
        () => listenInherited('http', { fallback: { host: '127.0.0.1', port: 0 } }),
        () => inheritedSockets(),
      ]) {
        try {
          const r = await f();
          out.push('no error');
          if (r && typeof r.close === 'function') await r.close();
        } catch (e) {
          out.push(e.code);
        }
      }
      console.log(JSON.stringify({ out, left: Object.keys(process.env).filter((k) => k.startsWith('LISTEN_')) }));
    `;
    const { stdout } = await execFileP(node, ['--input-type=module', '-e', script], {
      env: { ...process.env, LISTEN_FDS: '2', LISTEN_FDNAMES: 'http' },
      timeout: 10_000,
    });
    assert.deepEqual(JSON.parse(stdout), {
      out: ['ERR_NO_INHERITED_SOCKET', 'ERR_NO_INHERITED_SOCKET', 'ERR_NO_INHERITED_SOCKET'],
      left: [],
    });
  });
});

interface Worker {
  child: ChildProcess;
  ready: Promise<{
    ready: boolean;
    address: { kind: string; fd: number; name: string };
    envLeft: string[];
  }>;
  exit: Promise<number | null>;
  stderr: () => string;
}

function startWorker(listener: net.Server, env: Record<string, string>, arg: string): Worker {
  const child = spawn(node, [worker, arg], {
    // fd 3 in the child is the listening socket, as LISTEN_FDS promises.
    stdio: ['ignore', 'pipe', 'pipe', (listener as unknown as { _handle: net.Socket })._handle],
    env: { ...process.env, ...env },
  });
  let err = '';
  child.stderr!.on('data', (d) => {
    err += d;
  });
  const lines = createInterface({ input: child.stdout! });
  const ready = new Promise<Worker['ready'] extends Promise<infer R> ? R : never>(
    (resolve, reject) => {
      lines.once('line', (l) => resolve(JSON.parse(l)));
      child.once('exit', (code) => reject(new Error(`worker exited ${code} before ready: ${err}`)));
    },
  );
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, ready, exit, stderr: () => err };
}

function bindParent(): Promise<net.Server> {
  const s = net.createServer();
  return new Promise((r) => s.listen(0, '127.0.0.1', () => r(s)));
}

describe('inherited sockets, end to end', { timeout: 30_000 }, () => {
  test('a worker serves the socket named in LISTEN_FDNAMES and unsets the variables', async () => {
    const parent = await bindParent();
    const port = (parent.address() as net.AddressInfo).port;
    const w = startWorker(parent, { LISTEN_FDS: '1', LISTEN_FDNAMES: 'http' }, 'http');
    // The parent's copy must not accept: only the worker answers from here on.
    parent.close();
    const info = await w.ready;
    assert.equal(info.address.kind, 'fd');
    assert.equal(info.address.fd, 3);
    assert.equal(info.address.name, 'http');
    assert.deepEqual(info.envLeft, []);
    const seen = await converse(port);
    assert.equal(seen.data, `hello from ${w.child.pid}\n`);
    w.child.kill('SIGTERM');
    assert.equal(await w.exit, 143);
  });

  test('asking for a name nobody handed over is NoInheritedSocketError (exit 1, a clear message)', async () => {
    const parent = await bindParent();
    const w = startWorker(parent, { LISTEN_FDS: '1', LISTEN_FDNAMES: 'http' }, 'admin');
    parent.close();
    await assert.rejects(w.ready);
    assert.equal(await w.exit, 1);
    assert.match(w.stderr(), /ERR_NO_INHERITED_SOCKET|no inherited socket is called "admin"/);
  });

  test('a worker that drains closes only its copy: the next one keeps answering, nothing is refused', async () => {
    const parent = await bindParent();
    const port = (parent.address() as net.AddressInfo).port;
    const env = { LISTEN_FDS: '1', LISTEN_FDNAMES: 'http' };
    const a = startWorker(parent, env, '-');
    const b = startWorker(parent, env, '-');
    parent.close();
    await Promise.all([a.ready, b.ready]);
    const answered = new Set<string>();
    for (let i = 0; i < 20; i++) answered.add((await converse(port)).data);
    a.child.kill('SIGTERM');
    // Connect continuously while A drains and exits: every attempt must be answered by someone.
    let failures = 0;
    let attempts = 0;
    const aGone = a.exit.then(() => true);
    let done = false;
    void aGone.then(() => {
      done = true;
    });
    while (!done || attempts < 40) {
      attempts++;
      const s = await converse(port);
      if (!s.data.startsWith('hello from')) failures++;
      if (attempts > 2000) break;
    }
    assert.equal(await a.exit, 143);
    assert.equal(failures, 0, `${failures} of ${attempts} connections were not answered`);
    assert.equal((await converse(port)).data, `hello from ${b.child.pid}\n`);
    b.child.kill('SIGTERM');
    assert.equal(await b.exit, 143);
    assert.ok(answered.size >= 1);
  });
});
