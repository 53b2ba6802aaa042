import assert from 'node:assert/strict';
import { onDiagnostic } from '../../src/core/index.ts';
import { execFileSync, spawn as spawnProcess } from 'node:child_process';
import {
  chownSync,
  existsSync,
  mkdtempSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ArgumentError } from '../../src/core/index.ts';
import { ListenError, Listener, ListenerInUseError, listen, serve } from '../../src/net/index.ts';
import { useTestClock } from '../../src/testing/index.ts';
import { collect, converse } from './helpers.ts';
import { checkLeaks } from '../helpers/leaks.ts';

checkLeaks();

const dir = mkdtempSync(join(tmpdir(), 'quiesce-net-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const hello = async (conn: { write(s: string): Promise<void> }) => {
  await conn.write('Hello.\n');
};

function hasIPv6Loopback(): boolean {
  try {
    execFileSync(process.execPath, [
      '-e',
      "require('net').createServer().listen(0,'::1',function(){this.close()}).on('error',()=>process.exit(1))",
    ]);
    return true;
  } catch {
    return false;
  }
}

describe('listen: TCP', { timeout: 15_000 }, () => {
  test('port 0 binds a free port on IPv4 and reports it', async () => {
    const l = await listen({ host: '127.0.0.1', port: 0 });
    assert.equal(l.address.kind, 'tcp');
    assert.ok(l.port! > 0);
    const server = serve(l, hello);
    assert.equal((await converse(l.port!)).data, 'Hello.\n');
    await server.shutdown();
    assert.equal(l.closed, true);
  });

  test('IPv6 loopback works too', { skip: !hasIPv6Loopback() && 'no ::1 here' }, async () => {
    const l = await listen({ host: '::1', port: 0, ipv6Only: true });
    assert.deepEqual(
      { kind: l.address.kind, family: (l.address as { family: string }).family },
      { kind: 'tcp', family: 'IPv6' },
    );
    const server = serve(l, hello);
    const s = net.connect({ host: '::1', port: l.port! });
    assert.equal((await collect(s)).data, 'Hello.\n');
    await server.shutdown();
  });

  test('a port in use is a ListenError with errno EADDRINUSE', async () => {
    const a = await listen({ host: '127.0.0.1', port: 0 });
    const e = await listen({ host: '127.0.0.1', port: a.port! }).catch((err: unknown) => err);
    assert.ok(e instanceof ListenError);
    assert.equal(e.errno, 'EADDRINUSE');
    assert.equal(e.code, 'ERR_LISTEN');
    await a.close();
  });

  test('options are checked with a clear error', async () => {
    await assert.rejects(listen({ port: 70000 }), ArgumentError);
    await assert.rejects(listen({} as never), ArgumentError);
    await assert.rejects(listen({ port: 0, backlog: -1 }), /backlog must be an integer >= 0/);
    await assert.rejects(listen({ port: 0, backlog: 1.5 }), ArgumentError);
    await assert.rejects(
      listen({ port: 0, ipv6Only: 'yes' as never }),
      /ipv6Only must be a boolean/,
    );
    await assert.rejects(listen({ path: join(dir, 'b.sock'), backlog: -1 }), ArgumentError);
    await assert.rejects(
      listen({ path: join(dir, 'b.sock'), removeStale: 'no' as never }),
      /removeStale must be a boolean/,
    );
  });

  test('connections accepted before serve() are served, not lost', async () => {
    const l = await listen({ host: '127.0.0.1', port: 0 });
    const early = converse(l.port!);
    await new Promise((r) => setTimeout(r, 50));
    const server = serve(l, hello);
    assert.equal((await early).data, 'Hello.\n');
    await server.shutdown();
  });

  test('a listener closed without being served closes what it accepted', async () => {
    const l = await listen({ host: '127.0.0.1', port: 0 });
    const early = converse(l.port!);
    await new Promise((r) => setTimeout(r, 50));
    await l.close();
    const seen = await early;
    assert.equal(seen.data, '');
    assert.throws(() => serve(l, hello), ListenerInUseError);
  });

  test('a listener serves one server only', async () => {
    const l = await listen({ host: '127.0.0.1', port: 0 });
    const server = serve(l, hello);
    assert.throws(() => serve(l, hello), ListenerInUseError);
    await server.shutdown();
  });
});

describe('listen: unix sockets', { timeout: 15_000 }, () => {
  test('serves on a path and removes the socket file on shutdown', async () => {
    const path = join(dir, 'a.sock');
    const l = await listen({ path });
    assert.deepEqual(l.address, { kind: 'unix', path });
    const server = serve(l, hello);
    assert.equal((await collect(net.connect({ path }))).data, 'Hello.\n');
    await server.shutdown();
    assert.equal(existsSync(path), false);
  });

  test('a stale socket file (nobody accepting) is replaced', async () => {
    const path = join(dir, 'stale.sock');
    // A process that bound the path and died leaves the file behind.
    execFileSync('python3', [
      '-c',
      'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])',
      path,
    ]);
    assert.ok(statSync(path).isSocket());
    const l = await listen({ path });
    const server = serve(l, hello);
    assert.equal((await collect(net.connect({ path }))).data, 'Hello.\n');
    await server.shutdown();
  });

  test('a stale socket file of another user is not replaced: ListenError, file untouched', {
    skip: process.getuid?.() !== 0 && 'needs root to give the file to another user',
  }, async () => {
    const path = join(dir, 'theirs.sock');
    execFileSync('python3', [
      '-c',
      'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])',
      path,
    ]);
    chownSync(path, 65534, 65534);
    const e = await listen({ path }).catch((err: unknown) => err);
    assert.ok(e instanceof ListenError);
    assert.match(e.message, /uid 65534/);
    assert.ok(statSync(path).isSocket(), 'the file is still there');
    unlinkSync(path);
  });

  test('a live socket is never taken over: ListenError EADDRINUSE', async () => {
    const path = join(dir, 'live.sock');
    const a = await listen({ path });
    const e = await listen({ path }).catch((err: unknown) => err);
    assert.ok(e instanceof ListenError);
    assert.equal(e.errno, 'EADDRINUSE');
    await a.close();
  });

  test('a live server too busy to accept (full accept queue) is not taken for stale: EADDRINUSE, file untouched', async () => {
    const path = join(dir, 'busy.sock');
    // A live server whose accept queue is full: connecting answers EAGAIN, not ECONNREFUSED.
    const py = spawnProcess(
      'python3',
      [
        '-c',
        `import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(0)
cs = []
for i in range(4):
    c = socket.socket(socket.AF_UNIX); c.setblocking(False)
    try: c.connect(sys.argv[1])
    except OSError: pass
    cs.append(c)
print('ready', flush=True)
time.sleep(10)`,
        path,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = new Promise((r) => py.once('exit', r));
    try {
      await new Promise<void>((r) => py.stdout!.once('data', () => r()));
      const ino = statSync(path).ino;
      const e = await listen({ path }).catch((err: unknown) => err);
      if (e instanceof Listener) await e.close();
      assert.ok(e instanceof ListenError, String(e));
      assert.equal(e.errno, 'EADDRINUSE');
      assert.equal(statSync(path).ino, ino, 'the live socket file was replaced');
    } finally {
      py.kill(); // the process this test started, by its handle
      await exited;
    }
  });

  test('two listen() at once over one stale file: exactly one wins, the other is EADDRINUSE', async () => {
    const path = join(dir, 'race.sock');
    execFileSync('python3', [
      '-c',
      'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])',
      path,
    ]);
    const results = await Promise.allSettled([
      listen({ path }),
      listen({ path }),
      listen({ path }),
    ]);
    const won = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    try {
      assert.equal(won.length, 1, `${won.length} listeners own ${path}`);
      for (const r of results) {
        if (r.status === 'rejected') {
          assert.ok(r.reason instanceof ListenError, String(r.reason));
          assert.equal(r.reason.errno, 'EADDRINUSE');
        }
      }
      const server = serve(won[0], hello);
      assert.equal((await collect(net.connect({ path }))).data, 'Hello.\n');
      await server.shutdown();
      assert.equal(existsSync(path), false);
    } finally {
      await Promise.all(won.map((l) => l.close()));
    }
  });

  test('a socket in a directory that does not exist says so (ENOENT), not EACCES', async () => {
    const e = await listen({ path: join(dir, 'no-such-dir', 'x.sock') }).catch(
      (err: unknown) => err,
    );
    assert.ok(e instanceof ListenError, String(e));
    assert.equal(e.errno, 'ENOENT');
    assert.match(e.message, /no-such-dir does not exist/);
  });

  test('mode never narrows the process umask across an await', async () => {
    const path = join(dir, 'umask.sock');
    const mask = process.umask(0o022);
    try {
      const seen = new Set<number>();
      let done = false;
      const pending = listen({ path, mode: 0o600 }).finally(() => {
        done = true;
      });
      // What other code running meanwhile (between ticks) would get.
      for (let i = 0; i < 100_000 && !done; i++) {
        seen.add(process.umask(0o022));
        await new Promise((r) => process.nextTick(r));
      }
      await (await pending).close();
      assert.deepEqual([...seen], [0o022]);
    } finally {
      process.umask(mask);
    }
  });

  test('a path that is not a socket is refused and left alone', async () => {
    const path = join(dir, 'file.txt');
    writeFileSync(path, 'precious');
    const e = await listen({ path }).catch((err: unknown) => err);
    assert.ok(e instanceof ListenError);
    assert.match((e as Error).message, /not a socket/);
    assert.ok(statSync(path).isFile());
  });

  test('mode sets the permission bits of the socket file', async () => {
    const path = join(dir, 'mode.sock');
    const l = await listen({ path, mode: 0o600 });
    assert.equal(statSync(path).mode & 0o777, 0o600);
    await l.close();
    const l2 = await listen({ path, mode: 0o660 });
    assert.equal(statSync(path).mode & 0o777, 0o660);
    await l2.close();
  });
});

describe('listen: accept errors', { timeout: 15_000 }, () => {
  // libuv normally absorbs EMFILE itself (test/net/emfile.test.ts); when it cannot, Node emits
  // the accept error on the server, as these tests do.
  const acceptError = () =>
    Object.assign(new Error('accept EMFILE'), { code: 'EMFILE', syscall: 'accept' });

  test('a storm of accept errors is reported with backoff, never crashes, and serving goes on', async () => {
    // Invariant: every error is either reported or counted in the next report's `suppressed`.
    const l = await listen({ host: '127.0.0.1', port: 0 });
    const reports: { count: number; suppressed: number }[] = [];
    const server = serve(l, hello, {
      onAcceptError: (info) => reports.push({ count: info.count, suppressed: info.suppressed }),
    });
    try {
      {
        using clock = useTestClock(1000);
        for (let i = 0; i < 1000; i++) {
          l.server.emit('error', acceptError());
          if (i % 100 === 99) await clock.advance(30); // a storm spread over 300 ms
        }
        assert.deepEqual(reports[0], { count: 1, suppressed: 0 });
        assert.ok(reports.length <= 5, `${reports.length} reports for 1000 errors`);
        await clock.advance(11_000); // longer than the longest backoff
        l.server.emit('error', acceptError());
      }
      const last = reports[reports.length - 1];
      assert.equal(last.count, 1001);
      assert.equal(
        reports.reduce((n, r) => n + 1 + r.suppressed, 0),
        1001,
      );
      assert.equal(l.acceptErrors, 1001);
      assert.equal((await converse(l.port!)).data, 'Hello.\n');
    } finally {
      await server.shutdown();
    }
  });

  test('without a hook, an accept error is a QUIESCE_ACCEPT_ERROR warning', async () => {
    const l = await listen({ host: '127.0.0.1', port: 0 });
    const warnings: { code?: string }[] = [];
    const onWarning = (w: Error & { code?: string }) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      l.server.emit('error', acceptError());
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      assert.equal(warnings.length, 1);
      assert.equal(warnings[0].code, 'QUIESCE_ACCEPT_ERROR');
      // With a diagnostics handler installed, the report goes there instead.
      const seen: string[] = [];
      const restore = onDiagnostic((d) => seen.push(d.code));
      l.server.emit('error', acceptError());
      await new Promise((r) => setTimeout(r, 150));
      l.server.emit('error', acceptError());
      restore();
      assert.ok(seen.length >= 1 && seen.every((c) => c === 'QUIESCE_ACCEPT_ERROR'), seen.join());
      assert.equal(warnings.length, 1);
    } finally {
      process.off('warning', onWarning);
      await l.close();
    }
  });
});
