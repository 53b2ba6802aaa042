/**
 * The supervisor under hostile or unlucky use, with real processes: malformed control
 * requests, corrupt LISTEN_FDS, wrapped workers, a killed supervisor, idle connections under a
 * low descriptor limit, untrustworthy sockets and runtime directories. Each test is one probe;
 * the invariant everywhere: the supervisor never crashes, every mistake is one line with the
 * right exit status, and no worker (nor any process it started) outlives its generation.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  alive,
  checkNoLeftovers,
  HELLO,
  hello,
  killAndWait,
  NODE,
  runCli,
  startSupervisor,
  startWithMode,
  tempDir,
  until,
} from './helpers.ts';

checkNoLeftovers();

const root = process.getuid?.() === 0;
const ROOT_ONLY = !root && 'needs root, to give files to another user';

/** stderr without the note about descriptors this test runner leaked into the CLI. */
function ownLines(stderr: string): string[] {
  return stderr
    .trimEnd()
    .split('\n')
    .filter((l) => !/closed inherited descriptor/.test(l));
}

/** One raw exchange on the control socket: send `data`, read until the server closes. */
function rawControl(path: string, data: string | Buffer, ms = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(path);
    let out = '';
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`no answer to ${JSON.stringify(String(data).slice(0, 40))}`));
    }, ms);
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      out += d;
    });
    c.on('error', () => {});
    c.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
    c.write(data);
  });
}

/** The processes whose process group is `pgid`, zombies excluded. */
function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[2]) === pgid && f[0] !== 'Z') out.push(Number(p));
    } catch {}
  }
  return out;
}

test('malformed control requests (null, garbage, arrays, unknown ops, huge lines) get an error reply; the supervisor serves on', {
  timeout: 30_000,
}, async (t) => {
  const sup = await startSupervisor({ t, dir: tempDir(t) });
  for (const line of ['null', 'garbage', '[]', '42', '"status"', '{"op":"explode"}', '{}']) {
    const answer = JSON.parse(await rawControl(sup.control, `${line}\n`));
    assert.equal(answer.ok, false, line);
    assert.equal(answer.error.code, 'ERR_CONTROL_PROTOCOL', line);
  }
  const huge = JSON.parse(await rawControl(sup.control, Buffer.alloc(64 * 1024, 'x')));
  assert.match(huge.error.message, /longer than 4096 bytes/);
  const halfClosed = await new Promise<string>((resolve) => {
    const c = net.connect(sup.control);
    let out = '';
    c.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    c.on('close', () => resolve(out));
    c.end(); // EOF before any request line
  });
  assert.equal(JSON.parse(halfClosed).error.code, 'ERR_CONTROL_PROTOCOL');
  assert.equal(await hello(sup.port), 'ok');
  const st = await sup.request('status');
  assert.ok(st.ok);
  assert.doesNotMatch(sup.stderr(), /TypeError|at .*\.ts:\d+/);
});

/** Runs `quiesce run` with LISTEN_FDS=`count` addressed to it (LISTEN_PID = its own pid). */
function runWithListenFds(count: string, dir: string) {
  return runCli(['run', '--control', join(dir, 'c.sock'), '--', NODE, HELLO], {
    env: { LISTEN_FDS: count },
    wrapper: ['/bin/sh', '-c', 'export LISTEN_PID=$$; exec "$@"', 'sh'],
    timeoutMs: 15_000,
  });
}

for (const [count, why] of [
  [
    '100000',
    /LISTEN_FDS says 100000 descriptors; more than 65536 is taken for a corrupt environment/,
  ],
  ['99999999999999999999', /more than 65536 is taken for a corrupt environment/],
  [
    '4',
    /LISTEN_FDS says 4 socket\(s\) from fd 3, but fd 3 is (not open|a pipe|not a socket|a file|a character device)/,
  ],
] as const) {
  test(`LISTEN_FDS=${count} addressed to the supervisor is one line and exit status 1, at once`, {
    timeout: 20_000,
  }, async (t) => {
    const r = await runWithListenFds(count, tempDir(t));
    assert.equal(r.code, 1, r.stderr);
    const lines = ownLines(r.stderr);
    assert.equal(lines.length, 1, r.stderr.slice(0, 500));
    assert.match(lines[0], why);
  });
}

test("a wrapped worker (sh -c 'node app; …'): reload and stop signal its whole process group, so nothing of an old generation lives on", {
  timeout: 40_000,
}, async (t) => {
  const wrapper = ['/bin/sh', '-c', `${NODE} ${HELLO}; echo wrapper-ending >&2`];
  const sup = await startWithMode(t, 'normal', {
    worker: wrapper,
    args: ['--drain-timeout', '5s'],
  });
  const [gen1] = sup.workerPids();
  await until(() => groupMembers(gen1).length === 2, 10_000, 'sh and node in the group');
  assert.equal(await hello(sup.port), 'ok');
  const r = await sup.request('reload');
  assert.ok(r.ok, JSON.stringify(r));
  await until(() => groupMembers(gen1).length === 0, 15_000, 'generation 1 gone, node included');
  assert.equal(await hello(sup.port), 'ok');
  const [, gen2] = sup.workerPids();
  const stop = await runCli(['stop', '--control', sup.control]);
  assert.equal(stop.code, 0, stop.stderr);
  await sup.exited;
  assert.deepEqual(groupMembers(gen2), [], 'nothing of generation 2 is left after stop');
  assert.equal(await hello(sup.port, 2000), 'refused', 'nobody holds the port any more');
});

test('a supervisor killed with SIGKILL: its workers drain and exit on their own, and a new supervisor takes the port', {
  timeout: 40_000,
}, async (t) => {
  const dir = tempDir(t);
  const sup = await startSupervisor({
    t,
    dir,
    args: ['--workers', '2', '--drain-timeout', '3s'],
  });
  const workers = sup.workerPids();
  assert.equal(workers.length, 2);
  sup.proc.kill('SIGKILL');
  await sup.exited;
  await until(() => workers.every((p) => !alive(p)), 15_000, 'the orphaned workers to exit');
  // The port is free again: a new supervisor binds it and serves.
  const next = await startSupervisor({
    t,
    dir: tempDir(t),
    args: ['--listen', `127.0.0.1:${sup.port}`],
  });
  assert.equal(next.port, sup.port);
  assert.equal(await hello(next.port), 'ok');
});

test('a supervisor killed while a worker ignores SIGTERM: the worker is SIGKILLed at the drain deadline', {
  timeout: 30_000,
}, async (t) => {
  const sup = await startWithMode(t, 'ignore-term', { args: ['--drain-timeout', '1s'] });
  const [w] = sup.workerPids();
  sup.proc.kill('SIGKILL');
  await sup.exited;
  await until(() => !alive(w), 15_000, 'the stubborn worker to be killed');
});

test('a port held by another process: the new supervisor names the holder (pid and command), exit status 1', {
  timeout: 20_000,
}, async (t) => {
  const holder = spawn(
    NODE,
    [
      '-e',
      'require("net").createServer().listen(0, "127.0.0.1", function () { console.log(this.address().port) })',
    ],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  t.after(() => killAndWait(holder));
  const port = await new Promise<number>((resolve) =>
    holder.stdout!.setEncoding('utf8').once('data', (d: string) => resolve(Number(d.trim()))),
  );
  const dir = tempDir(t);
  const r = await runCli([
    'run',
    '--listen',
    `127.0.0.1:${port}`,
    '--control',
    join(dir, 'c.sock'),
    '--',
    NODE,
    HELLO,
  ]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    new RegExp(
      `^quiesce: cannot listen on 127\\.0\\.0\\.1:${port}: address already in use; held by pid ${holder.pid} \\(.*node -e .*\\) \\(EADDRINUSE\\)$`,
      'm',
    ),
  );
});

test('a unix socket path another process listens on: named with its holder, the file left alone', {
  timeout: 20_000,
}, async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'app.sock');
  const holder = spawn(
    NODE,
    [
      '-e',
      `require("net").createServer().listen(${JSON.stringify(path)}, () => console.log("up"))`,
    ],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  t.after(() => killAndWait(holder));
  await new Promise((resolve) => holder.stdout!.once('data', resolve));
  const r = await runCli([
    'run',
    '--listen',
    `unix:${path}`,
    '--control',
    join(dir, 'c.sock'),
    '--',
    NODE,
    HELLO,
  ]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    new RegExp(
      `^quiesce: cannot listen on unix:${path}: another process is accepting on it; held by pid ${holder.pid} \\(.*node -e .*\\) \\(EADDRINUSE\\)$`,
      'm',
    ),
  );
  assert.ok(statSync(path).isSocket());
});

test('50 idle connections to the control socket under a low descriptor limit do not lock status and reload out', {
  timeout: 40_000,
}, async (t) => {
  const sup = await startSupervisor({
    t,
    dir: tempDir(t),
    wrapper: ['/bin/sh', '-c', 'ulimit -n 72 && exec "$@"', 'sh'],
  });
  const idle: net.Socket[] = [];
  t.after(() => {
    for (const s of idle) s.destroy();
  });
  let closed = 0;
  for (let i = 0; i < 50; i++) {
    const s = net.connect(sup.control);
    s.on('error', () => {});
    s.on('close', () => closed++);
    s.resume();
    idle.push(s);
  }
  await new Promise((r) => setTimeout(r, 200));
  const status = await runCli(['status', '--control', sup.control]);
  assert.equal(status.code, 0, status.stderr);
  // Answered while idle connections were still open: not merely after they all timed out.
  assert.ok(closed < 50, 'status had to wait for every idle connection to time out');
  assert.match(status.stdout, /supervisor {2}pid \d+, running/);
  const reload = await runCli(['reload', '--control', sup.control]);
  assert.equal(reload.code, 0, reload.stderr);
  assert.match(reload.stdout, /reloaded: generation 2 serving/);
  assert.equal(await hello(sup.port), 'ok');
});

test('client commands refuse a control socket another user placed where they look (default path), exit status 1', {
  timeout: 20_000,
  skip: ROOT_ONLY,
}, async (t) => {
  const runtime = tempDir(t);
  const dir = join(runtime, 'quiesce');
  mkdirSync(dir, { mode: 0o700 });
  const path = join(dir, 'default.sock');
  // Answers like a supervisor that reloaded, to anyone.
  const fake = net.createServer((c) => {
    c.on('error', () => {});
    c.end(
      `${JSON.stringify({ ok: true, reload: { generation: 99, previous: 98, pids: [1], readyMs: 1 } })}\n`,
    );
  });
  await new Promise<void>((r) => fake.listen(path, r));
  t.after(() => new Promise<void>((r) => fake.close(() => r())));
  chownSync(path, 65534, 65534);
  const env = { XDG_RUNTIME_DIR: runtime };
  const r = await runCli(['reload'], { env });
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^quiesce: .*default\.sock belongs to uid 65534, not to you: refusing to trust what answers there$/m,
  );
  assert.doesNotMatch(r.stdout, /generation 99/);
  // The socket ours, the directory someone else's: refused too.
  chownSync(path, 0, 0);
  chownSync(dir, 65534, 65534);
  const s = await runCli(['status'], { env });
  assert.equal(s.code, 1);
  assert.match(s.stderr, /belongs to uid 65534, not to you: refusing to trust a socket in it/);
  chownSync(dir, 0, 0);
});

test('runtime-directory mistakes are one line each: a --control past 107 bytes (2), a stale socket of another user (1), a missing XDG_RUNTIME_DIR (1, not created)', {
  timeout: 30_000,
}, async (t) => {
  const dir = tempDir(t);
  const run = (args: string[], env?: NodeJS.ProcessEnv) =>
    runCli(['run', '--listen', '127.0.0.1:0', ...args, '--', NODE, HELLO], { env });
  const long = await run(['--control', `${dir}/${'x'.repeat(120)}.sock`]);
  assert.equal(long.code, 2, long.stderr);
  assert.match(
    long.stderr,
    /^quiesce: control: the socket path .* is \d+ bytes, more than the 107 a unix socket allows/,
  );
  assert.equal(ownLines(long.stderr).length, 1, long.stderr);
  const client = await runCli(['status', '--control', `${dir}/${'x'.repeat(120)}.sock`]);
  assert.equal(client.code, 1);
  assert.match(
    client.stderr,
    /^quiesce: .* is \d+ bytes, more than the 107 a unix socket allows\n$/,
  );

  const missing = join(dir, 'no-such-runtime-dir');
  const m = await run([], { XDG_RUNTIME_DIR: missing });
  assert.equal(m.code, 1, m.stderr);
  assert.match(
    m.stderr,
    /^quiesce: cannot create runtime directory .*no-such-runtime-dir\/quiesce: .*no-such-runtime-dir does not exist \(is XDG_RUNTIME_DIR right\?\)$/m,
  );
  assert.equal(existsSync(missing), false, 'the missing directory is not made up');

  if (root) {
    const stale = join(dir, 'stale.sock');
    spawnSync('python3', [
      '-c',
      'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])',
      stale,
    ]);
    chownSync(stale, 65534, 65534);
    const s = await run(['--control', stale]);
    assert.equal(s.code, 1, s.stderr);
    assert.match(
      s.stderr,
      /^quiesce: cannot open control socket .*stale\.sock: a socket file of uid 65534 is there, not ours/m,
    );
    assert.ok(statSync(stale).isSocket(), 'their file is left alone');
    for (const r of [long, m, s]) assert.doesNotMatch(r.stderr, /\n\s+at /);
  }
});

test('a read-only runtime directory says EROFS in one line (exit status 1)', {
  timeout: 20_000,
  skip: !root && 'needs root (a read-only bind mount in a private mount namespace)',
}, async (t) => {
  const dir = tempDir(t);
  const ro = join(dir, 'ro');
  mkdirSync(ro);
  const r = await runCli(['run', '--listen', '127.0.0.1:0', '--', NODE, HELLO], {
    env: { XDG_RUNTIME_DIR: ro },
    wrapper: [
      'unshare',
      '-m',
      '/bin/sh',
      '-c',
      `mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"`,
      ro,
    ],
  });
  assert.equal(r.code, 1, r.stderr);
  assert.match(
    r.stderr,
    /^quiesce: cannot create runtime directory .*\/ro\/quiesce: the file system is read-only \(EROFS\)$/m,
  );
  assert.equal(ownLines(r.stderr).length, 1, r.stderr);
});

test("the compile cache: beside an explicit --control (0700, ours); another user's directory there is not used; then a default run starts", {
  timeout: 40_000,
}, async (t) => {
  const dir = tempDir(t);
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  // No XDG_RUNTIME_DIR, TMPDIR the test's own: the default runtime dir is <TMPDIR>/quiesce-<uid>.
  const env = { XDG_RUNTIME_DIR: undefined, TMPDIR: tmp, NODE_COMPILE_CACHE: undefined };
  const worker = ['/bin/sh', '-c', 'echo READY=1 >&4; exec sleep 60'];
  const control = join(dir, 'ctl.sock');
  const a = await startSupervisor({
    t,
    dir,
    env,
    worker,
    args: ['--control', control, '--drain-timeout', '1s'],
  });
  const cache = statSync(`${control}.compile-cache`);
  assert.ok(cache.isDirectory());
  assert.equal(cache.mode & 0o777, 0o700);
  await runCli(['stop', '--control', control], { env });
  await a.exited;
  assert.deepEqual(readdirSync(tmp), [], 'nothing under the tmpdir with an explicit --control');
  // The probe that used to fail: a default run after one with --control starts.
  const b = await startSupervisor({ t, dir: tempDir(t), env, worker, defaultControl: true });
  const base = join(tmp, `quiesce-${process.getuid?.() ?? 0}`);
  assert.equal(statSync(base).mode & 0o777, 0o700);
  assert.equal(statSync(join(base, 'compile-cache')).mode & 0o777, 0o700);
  await runCli(['stop'], { env });
  await b.exited;
  if (root) {
    // A directory another user made where our cache goes: refused, workers run without it.
    const other = join(dir, 'other.sock');
    mkdirSync(`${other}.compile-cache`, { mode: 0o700 });
    chownSync(`${other}.compile-cache`, 65534, 65534);
    const c = await startSupervisor({
      t,
      dir,
      env,
      worker,
      args: ['--control', other, '--drain-timeout', '1s'],
    });
    assert.match(
      c.stderr(),
      /workers run without a compile cache: .*other\.sock\.compile-cache belongs to uid 65534/,
    );
    const environ = readFileSync(`/proc/${c.workerPids()[0]}/environ`, 'utf8');
    assert.doesNotMatch(environ, /NODE_COMPILE_CACHE=/);
    await runCli(['stop', '--control', other], { env });
    await c.exited;
  }
});

test('during a drain started by SIGTERM the control socket still answers: status says stopping', {
  timeout: 30_000,
}, async (t) => {
  const sup = await startWithMode(t, 'ignore-term', { args: ['--drain-timeout', '3s'] });
  sup.proc.kill('SIGTERM');
  await sup.waitFor(/stopping: draining/);
  const st = await sup.request('status');
  assert.ok(st.ok, JSON.stringify(st));
  assert.equal((st.status as { state: string }).state, 'stopping');
  assert.equal(await sup.exited, 143);
});
