import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import { describe, test } from 'node:test';
import { collect, converse, dial, until } from './helpers.ts';

const root = new URL('../../', import.meta.url).pathname;

interface Running {
  child: ChildProcess;
  port: Promise<number>;
  exit: Promise<number | null>;
}

/** Starts an example on a free port; resolves the port from its "listening on" line. */
function startExample(file: string, env: Record<string, string> = {}, stdio?: unknown[]): Running {
  const child = spawn(process.execPath, [`${root}examples/${file}`], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', ...env },
    stdio: (stdio ?? ['ignore', 'ignore', 'pipe']) as never,
  });
  let err = '';
  const port = new Promise<number>((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      err += d;
      const m = /listening on (?:[\d.]+:(\d+)|fd \d+)/.exec(err);
      if (m) resolve(Number(m[1] ?? 0));
    });
    child.once('exit', (code) => reject(new Error(`${file} exited ${code}: ${err}`)));
  });
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, port, exit };
}

/** A line-oriented client: `lines` collects what arrived; `waitFor` waits for a line. */
function lineClient(port: number) {
  const s = net.connect({ port, host: '127.0.0.1' });
  let text = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => {
    text += d;
  });
  s.on('error', () => {});
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  return {
    socket: s,
    get text() {
      return text;
    },
    waitFor: (needle: string) => until(() => text.includes(needle), 5000),
    closed,
  };
}

describe('examples', { timeout: 30_000 }, () => {
  test('hello-server (npm start) greets, and drains and exits 143 on SIGTERM', async () => {
    const ex = startExample('hello-server.ts');
    const port = await ex.port;
    assert.equal((await converse(port)).data, 'Hello.\nGoodbye.\n');
    ex.child.kill('SIGTERM');
    assert.equal(await ex.exit, 143);
    await assert.rejects(dial(port), /ECONNREFUSED/);
  });

  test('hello-server listens on an inherited socket when LISTEN_FDS is set', async () => {
    const parent = net.createServer();
    await new Promise<void>((r) => parent.listen(0, '127.0.0.1', r));
    const port = (parent.address() as net.AddressInfo).port;
    const handle = (parent as unknown as { _handle: unknown })._handle;
    const ex = startExample('hello-server.ts', { LISTEN_FDS: '1' }, [
      'ignore',
      'ignore',
      'pipe',
      handle,
    ]);
    parent.close();
    await ex.port;
    assert.equal((await converse(port)).data, 'Hello.\nGoodbye.\n');
    ex.child.kill('SIGINT');
    assert.equal(await ex.exit, 130);
  });

  test('echo-server echoes, and on SIGINT closes a connected client gracefully and exits 130', async () => {
    const ex = startExample('echo-server.ts');
    const port = await ex.port;
    const s = await dial(port);
    const seen = collect(s);
    s.write('ping\n');
    await until(() => s.bytesRead >= 5);
    ex.child.kill('SIGINT');
    const got = await seen;
    assert.equal(got.data, 'ping\n');
    assert.equal(got.error, undefined);
    assert.equal(got.ended, true);
    assert.equal(await ex.exit, 130);
  });

  test('chat-server relays lines between clients and says goodbye on SIGTERM', async () => {
    const ex = startExample('chat-server.ts');
    const port = await ex.port;
    const alice = lineClient(port);
    const bob = lineClient(port);
    assert.ok(await alice.waitFor('Your name?'));
    assert.ok(await bob.waitFor('Your name?'));
    alice.socket.write('alice\n');
    assert.ok(await alice.waitFor('* welcome, alice'));
    bob.socket.write('bob\n');
    assert.ok(await bob.waitFor('* welcome, bob'));
    assert.ok(await alice.waitFor('* bob joined'));
    alice.socket.write('hi bob\n');
    assert.ok(await bob.waitFor('alice: hi bob'));
    assert.ok(!alice.text.includes('alice: hi bob'), 'no echo of your own line');
    ex.child.kill('SIGTERM');
    await Promise.all([alice.closed, bob.closed]);
    assert.ok(alice.text.includes('* the server is shutting down, bye'));
    assert.ok(bob.text.includes('* the server is shutting down, bye'));
    assert.equal(await ex.exit, 143);
  });
});
