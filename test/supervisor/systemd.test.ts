/**
 * systemd: the example units in examples/systemd/, run the way systemd runs them. A small
 * Python launcher plays systemd's part (binds the .socket's socket, passes it as fd 3 with
 * LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID, sets NOTIFY_SOCKET, execs ExecStart), and a Python
 * datagram socket plays the notify socket (Node has no unix datagram sockets).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import {
  CLI,
  cleanEnv,
  HELLO,
  HTTP_WORKER,
  hello,
  httpGet,
  killAndWait,
  NODE,
  ROOT,
  runCli,
  startSupervisor,
  tempDir,
  until,
  checkNoLeftovers,
} from './helpers.ts';
import { EXPRESS_APP, failures, httpLoad, NO_FAILURES } from '../apps/helpers.ts';

checkNoLeftovers();

/** `[Section]` → key → values (a key may repeat). */
function parseUnit(path: string): Map<string, Map<string, string[]>> {
  const out = new Map<string, Map<string, string[]>>();
  let section = new Map<string, string[]>();
  for (const raw of readFileSync(path, 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = new Map();
      out.set(s[1], section);
      continue;
    }
    const eq = line.indexOf('=');
    const k = line.slice(0, eq);
    section.set(k, [...(section.get(k) ?? []), line.slice(eq + 1)]);
  }
  return out;
}

const unitDir = join(ROOT, 'examples/systemd');
const socketUnit = parseUnit(join(unitDir, 'quiesce-hello.socket'));
const serviceUnit = parseUnit(join(unitDir, 'quiesce-hello.service'));
const service = serviceUnit.get('Service')!;
const one = (k: string) => service.get(k)![0];

/** Plays systemd: binds, passes fd 3 the LISTEN_FDS way, sets NOTIFY_SOCKET, execs argv. */
const LAUNCHER = `
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(int(os.environ.pop("TEST_BACKLOG")))
print(s.getsockname()[1], flush=True)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES=os.environ.pop("TEST_FDNAME"), LISTEN_PID=str(os.getpid()))
os.environ["NOTIFY_SOCKET"] = os.environ.pop("TEST_NOTIFY_SOCKET")
os.execvp(sys.argv[1], sys.argv[1:])
`;

/** A unix datagram socket printing each message it receives, as systemd's notify socket. */
function notifyReceiver(path: string): { proc: ChildProcess; messages: () => string[] } {
  const code = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps("bound"), flush=True)
while True:
    print(json.dumps(s.recv(65536).decode()), flush=True)
`;
  const proc = spawn('python3', ['-c', code, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  return {
    proc,
    messages: () =>
      out
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as string),
  };
}

/** ExecStart/ExecReload with the installation paths mapped to this checkout. */
function mapCommand(line: string, control: string): string[] {
  const paths: Record<string, string[]> = {
    '/opt/hello/node_modules/.bin/quiesce': [NODE, CLI],
    '/opt/app/node_modules/.bin/quiesce': [NODE, CLI],
    '/usr/bin/node': [NODE],
    '/opt/hello/examples/hello-server.ts': [HELLO],
    '/opt/app/examples/apps/express-app.js': [EXPRESS_APP],
    '/run/quiesce-hello/control.sock': [control],
    '/run/quiesce-express/control.sock': [control],
  };
  return line.split(/\s+/).flatMap((w) => paths[w] ?? [w]);
}

/**
 * Starts `ExecStart` of `service` the way systemd would with `socket`'s socket and a notify
 * socket; returns the supervisor, the notify receiver and the control path.
 */
async function startUnit(
  t: TestContext,
  socket: Map<string, string[]>,
  service: Map<string, string[]>,
) {
  const dir = tempDir(t);
  const notifyPath = join(dir, 'notify.sock');
  const receiver = notifyReceiver(notifyPath);
  t.after(() => killAndWait(receiver.proc));
  await until(() => receiver.messages().includes('bound'), 10_000, 'the notify socket');
  const control = join(dir, 'control.sock');
  const start = mapCommand(service.get('ExecStart')![0], control);
  const dashes = start.indexOf('--');
  const sup = await startSupervisor({
    t,
    dir,
    noListen: true,
    args: start.slice(start.indexOf('run') + 1, dashes),
    worker: start.slice(dashes + 1),
    wrapper: ['python3', '-c', LAUNCHER],
    env: {
      TEST_BACKLOG: socket.get('Backlog')![0],
      TEST_FDNAME: socket.get('FileDescriptorName')![0],
      TEST_NOTIFY_SOCKET: notifyPath,
    },
  });
  return { sup, receiver, control };
}

test('the example units are consistent: stop timeout longer than the drain, 143 is success, notify access for systemd-notify', () => {
  assert.equal(one('Type'), 'notify');
  assert.equal(one('NotifyAccess'), 'all');
  assert.equal(one('KillMode'), 'mixed');
  assert.ok(one('SuccessExitStatus').split(/\s+/).includes('143'));
  const drain = /--drain-timeout (\d+)s/.exec(one('ExecStart'));
  assert.ok(drain && Number(one('TimeoutStopSec')) > Number(drain[1]));
  assert.equal(socketUnit.get('Socket')!.get('FileDescriptorName')![0], 'hello');
  assert.deepEqual(serviceUnit.get('Unit')!.get('Requires'), ['quiesce-hello.socket']);
});

test("socket-activated as the example unit: serves on systemd's socket, notifies READY/STATUS/STOPPING, reloads, stops with a success status", {
  timeout: 45_000,
}, async (t) => {
  const { sup, receiver, control } = await startUnit(t, socketUnit.get('Socket')!, service);
  assert.match(sup.stderr(), /from systemd on 127\.0\.0\.1:\d+ as fd 3 \(hello\)/);
  assert.equal(await hello(sup.port), 'ok');
  await until(() => receiver.messages().some((m) => /READY=1/.test(m)), 10_000, 'READY=1');
  const ready = receiver.messages().find((m) => /READY=1/.test(m))!;
  assert.match(ready, /STATUS=serving generation 1/);
  assert.match(ready, new RegExp(`MAINPID=${sup.pid}`));
  // The notify socket is the supervisor's business: a worker that saw it would tell systemd
  // it is the service (and every generation would re-announce readiness).
  const environ = readFileSync(`/proc/${sup.workerPids()[0]}/environ`, 'utf8').split('\0');
  assert.ok(
    environ.some((kv) => kv.startsWith('LISTEN_FDS=')),
    'the worker environment',
  );
  assert.ok(
    !environ.some((kv) => kv.startsWith('NOTIFY_SOCKET=')),
    'NOTIFY_SOCKET leaked into a worker',
  );

  const reload = await runCli(mapCommand(one('ExecReload'), control).slice(2));
  assert.equal(reload.code, 0, reload.stderr);
  assert.match(reload.stdout, /reloaded: generation 2 serving/);
  await until(
    () => receiver.messages().some((m) => m.includes('STATUS=serving generation 2')),
    10_000,
    'STATUS after reload',
  );
  assert.equal(await hello(sup.port), 'ok');

  sup.proc.kill(one('KillSignal') as NodeJS.Signals);
  const code = await sup.exited;
  assert.ok(
    one('SuccessExitStatus').split(/\s+/).includes(String(code)),
    `exit ${code} is not a success`,
  );
  await until(
    () => receiver.messages().some((m) => m.includes('STOPPING=1')),
    10_000,
    'STOPPING=1',
  );
});

test('a Node worker run by systemd directly gets its socket and reports READY=1 through systemd-notify', {
  timeout: 30_000,
}, async (t) => {
  const dir = tempDir(t);
  const notifyPath = join(dir, 'notify.sock');
  const receiver = notifyReceiver(notifyPath);
  t.after(() => killAndWait(receiver.proc));
  await until(() => receiver.messages().includes('bound'), 10_000, 'the notify socket');
  const env = cleanEnv({ TEST_BACKLOG: '16', TEST_FDNAME: 'http', TEST_NOTIFY_SOCKET: notifyPath });
  const worker = spawn('python3', ['-c', LAUNCHER, NODE, HTTP_WORKER], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env,
  });
  t.after(() => killAndWait(worker));
  let out = '';
  worker.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  await until(() => /^\d+\n/.test(out), 10_000, 'the port');
  await until(
    () => receiver.messages().some((m) => /READY=1/.test(m)),
    10_000,
    'READY=1 from the worker',
  );
  assert.match(
    receiver.messages().find((m) => /READY=1/.test(m))!,
    new RegExp(`MAINPID=${worker.pid}`),
  );
  assert.equal(await httpGet(Number(out.trim())), 'ok');
});

test('the Express example unit: an unmodified Express app, socket-activated, reloads under keep-alive load without a failed request and stops with a success status', {
  timeout: 45_000,
}, async (t) => {
  const units = {
    socket: parseUnit(join(unitDir, 'quiesce-express.socket')).get('Socket')!,
    service: parseUnit(join(unitDir, 'quiesce-express.service')).get('Service')!,
  };
  const get = (k: string) => units.service.get(k)![0];
  const { sup, receiver, control } = await startUnit(t, units.socket, units.service);
  // The app calls app.listen(8080); the preload puts it on systemd's socket instead.
  assert.match(sup.stderr(), /from systemd on 127\.0\.0\.1:\d+ as fd 3 \(http\)/);
  await until(() => receiver.messages().some((m) => /READY=1/.test(m)), 10_000, 'READY=1');
  const load = httpLoad(sup.port, { keepAlive: true, concurrency: 4 });
  try {
    for (let i = 0; i < 3; i++) {
      const reload = await runCli(mapCommand(get('ExecReload'), control).slice(2));
      assert.equal(reload.code, 0, reload.stderr);
    }
  } finally {
    await load.stop();
  }
  assert.deepEqual(failures(load.counts), NO_FAILURES, JSON.stringify(load.counts));
  assert.ok(load.counts.ok > 0);
  sup.proc.kill(get('KillSignal') as NodeJS.Signals);
  const code = await sup.exited;
  assert.ok(get('SuccessExitStatus').split(/\s+/).includes(String(code)), `exit ${code}`);
});
