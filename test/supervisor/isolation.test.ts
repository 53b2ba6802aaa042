/**
 * What the supervisor keeps to itself and what it hands over: the control socket admits only
 * its owner, workers inherit nothing unrelated, the supervisor never accepts a connection,
 * and shutdown drains before it exits with the right status.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
} from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  hello,
  NODE,
  runCli,
  startSupervisor,
  tempDir,
  until,
  checkNoLeftovers,
  startWithMode,
} from './helpers.ts';

checkNoLeftovers();

/** Connects to `path` as uid/gid 65534 (nobody) and reports the error code, or 'connected'. */
function connectAsNobody(path: string): Promise<string> {
  const code = `const c = require('node:net').connect(${JSON.stringify(path)});
c.on('connect', () => { console.log('connected'); c.destroy(); });
c.on('error', (e) => console.log(e.code));`;
  return new Promise((resolve, reject) => {
    const p = spawn(NODE, ['-e', code], {
      uid: 65534,
      gid: 65534,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
    p.on('error', reject);
    p.on('close', () => {
      clearTimeout(timer);
      resolve(out.trim());
    });
  });
}

test('the control socket refuses other users: 0600 socket in a 0700 directory, EACCES for uid 65534', {
  timeout: 30_000,
}, async (t) => {
  const dir = tempDir(t);
  // Open the path up to the socket, so only the socket's own mode protects it.
  chmodSync(dir, 0o755);
  const runtime = join(dir, 'run');
  mkdirSync(runtime, { mode: 0o755 });
  const explicit = join(dir, 'explicit.sock');
  const a = await startSupervisor({ t, dir, args: ['--control', explicit] });
  assert.equal(statSync(explicit).mode & 0o777, 0o600);
  assert.equal(await connectAsNobody(explicit), 'EACCES');
  const owner = await runCli(['status', '--control', explicit, '--json']);
  assert.equal(owner.code, 0, owner.stderr);
  assert.equal(JSON.parse(owner.stdout).pid, a.pid);

  // The default location: $XDG_RUNTIME_DIR/quiesce/<name>.sock, directory created 0700.
  const env = { XDG_RUNTIME_DIR: runtime };
  await startSupervisor({ t, dir, args: ['--name', 'api'], env, defaultControl: true });
  const sock = join(runtime, 'quiesce', 'api.sock');
  assert.equal(statSync(join(runtime, 'quiesce')).mode & 0o777, 0o700);
  assert.equal(statSync(sock).mode & 0o777, 0o600);
  assert.equal(await connectAsNobody(sock), 'EACCES');
  const st = await runCli(['status', '--name', 'api'], { env });
  assert.equal(st.code, 0, st.stderr);
  assert.match(
    st.stdout,
    /GEN\s+GEN STATE\s+WORKER\s+PID\s+STATE\s+UPTIME\s+RESTARTS\n1\s+serving\s+0\s+\d+\s+ready/,
  );
});

test('a second supervisor on a taken control path is refused before it binds any port', {
  timeout: 20_000,
}, async (t) => {
  const dir = tempDir(t);
  const a = await startSupervisor({ t, dir });
  // The first supervisor's own port: binding first would fail with EADDRINUSE instead.
  const r = await runCli([
    'run',
    '--listen',
    `127.0.0.1:${a.port}`,
    '--control',
    a.control,
    '--',
    NODE,
    '-e',
    '0',
  ]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(
    r.stderr,
    /^quiesce: .*control\.sock is in use \(another supervisor answers there\): pass --name or --control to run another one$/m,
  );
  assert.doesNotMatch(r.stderr, /EADDRINUSE|listening on/);
  assert.equal(await hello(a.port), 'ok', 'the first supervisor serves on');
});

test('a control directory open to other users is refused with a clear error', {
  timeout: 15_000,
}, async (t) => {
  const dir = tempDir(t);
  const runtime = join(dir, 'run');
  mkdirSync(join(runtime, 'quiesce'), { recursive: true });
  chmodSync(join(runtime, 'quiesce'), 0o777);
  const r = await runCli(['run', '--listen', '127.0.0.1:0', '--', NODE, '-e', '0'], {
    env: { XDG_RUNTIME_DIR: runtime },
  });
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /quiesce: .*quiesce is accessible to other users \(mode 777\): chmod 700 it/,
  );
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});

test('no unrelated descriptor leaks into workers, before or after a reload', {
  timeout: 30_000,
}, async (t) => {
  const dir = tempDir(t);
  // A shell worker, so /proc/<pid>/fd shows exactly what was inherited (Node opens its own).
  const worker = ['/bin/sh', '-c', 'echo READY=1 >&4; exec sleep 60'];
  // Descriptor 40: inherited by the supervisor without close-on-exec, as a careless parent would.
  const stdio = [...Array.from({ length: 37 }, () => 'ignore' as const), 'pipe' as const];
  const sup = await startSupervisor({ t, dir, worker, stdio, args: ['--drain-timeout', '1s'] });
  assert.match(
    sup.stderr(),
    /closed inherited descriptor\(s\) (\d+, )*40 so workers do not get them/,
  );
  const fdsOf = (pid: number) =>
    readdirSync(`/proc/${pid}/fd`)
      .map(Number)
      .sort((x, y) => x - y);
  // The shell says READY=1 and then execs sleep; look once the exec is done.
  const settled = (pid: number) =>
    until(
      () => readFileSync(`/proc/${pid}/comm`, 'utf8') === 'sleep\n',
      5000,
      `${pid} to exec sleep`,
    );
  const [first] = sup.workerPids();
  await settled(first);
  const listener = readlinkSync(`/proc/${first}/fd/3`);
  assert.match(listener, /^socket:/);
  assert.deepEqual(fdsOf(first), [0, 1, 2, 3, 4]);
  assert.equal(readlinkSync(`/proc/${first}/fd/0`), '/dev/null');
  const env = readFileSync(`/proc/${first}/environ`, 'utf8').split('\0');
  assert.ok(env.includes(`LISTEN_PID=${first}`), 'LISTEN_PID is the worker itself');
  assert.ok(env.includes('LISTEN_FDS=1'));
  assert.ok(env.includes('QUIESCE_READY_FD=4'));
  const r = await sup.request('reload');
  assert.ok(r.ok, JSON.stringify(r));
  const second = (r.reload as { pids: number[] }).pids[0];
  await settled(second);
  // The new generation has the same socket, and nothing of the old generation's.
  assert.deepEqual(fdsOf(second), [0, 1, 2, 3, 4]);
  assert.equal(readlinkSync(`/proc/${second}/fd/3`), listener);
});

/** Socket inodes among a process's descriptors. */
function socketInodes(pid: number): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.add(m[1]);
    } catch {}
  }
  return out;
}

/** Inodes of server-side ESTABLISHED TCP sockets on local port `port`. */
function acceptedInodes(port: number): string[] {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length > 9 && f[1].endsWith(`:${hex}`) && f[3] === '01')
    .map((f) => f[9]);
}

test('the supervisor never accepts: every connection is held by a worker', {
  timeout: 30_000,
}, async (t) => {
  const sup = await startWithMode(t, 'normal hold=3000', {
    args: ['--workers', '2'],
  });
  const clients = await Promise.all(
    Array.from(
      { length: 20 },
      () =>
        new Promise<net.Socket>((resolve, reject) => {
          const c = net.connect(sup.port, '127.0.0.1');
          c.on('error', reject);
          c.once('data', () => resolve(c));
        }),
    ),
  );
  t.after(() => {
    for (const c of clients) c.destroy();
  });
  const accepted = acceptedInodes(sup.port);
  assert.equal(accepted.length, 20);
  const mine = socketInodes(sup.pid);
  const workers = new Set(sup.workerPids().flatMap((p) => [...socketInodes(p)]));
  for (const inode of accepted) {
    assert.ok(!mine.has(inode), 'an accepted connection is in the supervisor');
    assert.ok(workers.has(inode), 'an accepted connection is in no worker');
  }
  for (const c of clients) c.destroy();
});

test('SIGTERM drains the workers (a request in flight completes), then the supervisor exits 143', {
  timeout: 30_000,
}, async (t) => {
  const sup = await startWithMode(t, 'normal hold=800');
  const inFlight = hello(sup.port);
  await until(() => acceptedInodes(sup.port).length === 1, 5000, 'the connection to be accepted');
  sup.proc.kill('SIGTERM');
  assert.equal(await inFlight, 'ok');
  assert.equal(await sup.exited, 143);
  assert.match(sup.stderr(), /stopping: draining 1 worker\(s\)[\s\S]*stopped/);
  for (const pid of sup.workerPids()) assert.throws(() => process.kill(pid, 0));
  assert.ok(!existsSync(sup.control), 'the control socket is removed');
});

test('SIGINT stops with 130 and `quiesce stop` with 0, each after draining', {
  timeout: 30_000,
}, async (t) => {
  const dir = tempDir(t);
  const a = await startSupervisor({ t, dir: tempDir(t) });
  a.proc.kill('SIGINT');
  assert.equal(await a.exited, 130);
  const b = await startSupervisor({ t, dir });
  const stop = await runCli(['stop', '--control', b.control]);
  assert.equal(stop.code, 0, stop.stderr);
  assert.equal(stop.stdout.trim(), 'stopped');
  assert.equal(await b.exited, 0);
  for (const pid of [...a.workerPids(), ...b.workerPids()])
    assert.throws(() => process.kill(pid, 0));
});

test('a second SIGINT exits 130 at once: workers SIGKILLed, the control socket removed, both said in the log', {
  timeout: 30_000,
}, async (t) => {
  const sup = await startWithMode(t, 'ignore-term', {
    args: ['--workers', '2', '--drain-timeout', '20s'],
  });
  sup.proc.kill('SIGINT');
  await sup.waitFor(/stopping: draining 2 worker\(s\)/);
  sup.proc.kill('SIGINT');
  assert.equal(await sup.exited, 130);
  assert.match(
    sup.stderr(),
    /exiting at once, without draining: sent SIGKILL to 2 worker\(s\); removed the control socket .*control\.sock\n/,
  );
  assert.ok(!existsSync(sup.control), 'the control socket is removed');
  for (const pid of sup.workerPids()) {
    await until(
      () => {
        try {
          process.kill(pid, 0);
          return false;
        } catch {
          return true;
        }
      },
      5000,
      `worker ${pid} to be gone`,
    );
  }
});

test('`quiesce stop` while the first generation is still starting: stop says stopped, the supervisor exits 0', {
  timeout: 30_000,
}, async (t) => {
  const sup = await startWithMode(t, 'never-ready', {
    args: ['--ready-timeout', '20s'],
    until: /generation 1 starting: pid \d+/,
  });
  const stop = await runCli(['stop', '--control', sup.control]);
  assert.equal(stop.code, 0, stop.stderr);
  assert.equal(stop.stdout.trim(), 'stopped');
  assert.equal(await sup.exited, 0, sup.stderr());
  assert.match(
    sup.stderr(),
    /stopping during start-up: stopping 1 starting worker\(s\)\n[\s\S]*stopped\n$/,
  );
  assert.doesNotMatch(sup.stderr(), /before it was ready/);
  assert.ok(!existsSync(sup.control), 'the control socket is removed');
});

test('Node workers get a shared compile cache unless one is set or it is turned off', {
  timeout: 30_000,
}, async (t) => {
  const worker = ['/bin/sh', '-c', 'echo READY=1 >&4; exec sleep 60'];
  const envOf = (pid: number) =>
    readFileSync(`/proc/${pid}/environ`, 'utf8')
      .split('\0')
      .find((kv) => kv.startsWith('NODE_COMPILE_CACHE='));
  // No NODE_COMPILE_CACHE of our own: the supervisor supplies its private one.
  const a = await startSupervisor({
    t,
    dir: tempDir(t),
    worker,
    env: { NODE_COMPILE_CACHE: undefined },
    args: ['--drain-timeout', '1s'],
  });
  // Beside the explicit --control, in a directory the supervisor created private.
  assert.equal(envOf(a.workerPids()[0]), `NODE_COMPILE_CACHE=${a.control}.compile-cache`);
  assert.equal(statSync(`${a.control}.compile-cache`).mode & 0o777, 0o700);
  await a.request('stop');
  await a.exited;
  // Turned off: the worker's environment is left alone.
  const b = await startSupervisor({
    t,
    dir: tempDir(t),
    worker,
    env: { NODE_COMPILE_CACHE: undefined },
    args: ['--drain-timeout', '1s', '--no-compile-cache'],
  });
  assert.equal(envOf(b.workerPids()[0]), undefined);
  await b.request('stop');
  await b.exited;
  // Set by the user: theirs wins.
  // The user's directory lives in this test's own temp dir: Node creates it when the worker starts.
  const ownCache = join(tempDir(t), 'users-own-cache');
  const c = await startSupervisor({
    t,
    dir: tempDir(t),
    worker,
    env: { NODE_COMPILE_CACHE: ownCache },
    args: ['--drain-timeout', '1s'],
  });
  assert.equal(envOf(c.workerPids()[0]), `NODE_COMPILE_CACHE=${ownCache}`);
  await c.request('stop');
  await c.exited;
});
