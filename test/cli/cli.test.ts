/**
 * The `quiesce` command line: parsing as a pure function, and the errors a user meets, each a
 * clear line with the right exit status and never a stack trace.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseArgs, parseDuration, UsageError } from '../../src/cli/args.ts';
import { formatDuration, formatStatus } from '../../src/cli/main.ts';
import { checkDistinct, formatAddress, parseListenSpec } from '../../src/supervisor/address.ts';
import { ListenAddressError } from '../../src/supervisor/errors.ts';
import { checkNoLeftovers, NODE, runCli } from '../supervisor/helpers.ts';

checkNoLeftovers();

test('listen specs: port, IPv4, [IPv6], unix path, localhost, names', () => {
  assert.deepEqual(parseListenSpec('8080'), {
    name: 'unknown',
    address: { kind: 'tcp', host: null, port: 8080 },
  });
  assert.deepEqual(parseListenSpec('api=127.0.0.1:8443').address, {
    kind: 'tcp',
    host: '127.0.0.1',
    port: 8443,
  });
  assert.equal(parseListenSpec('api=127.0.0.1:8443').name, 'api');
  assert.deepEqual(parseListenSpec('[::1]:80').address, { kind: 'tcp', host: '::1', port: 80 });
  assert.deepEqual(parseListenSpec('localhost:0').address, {
    kind: 'tcp',
    host: '127.0.0.1',
    port: 0,
  });
  assert.deepEqual(parseListenSpec('*:99').address, { kind: 'tcp', host: null, port: 99 });
  assert.deepEqual(parseListenSpec('unix:/run/a=b.sock'), {
    name: 'unknown',
    address: { kind: 'unix', path: '/run/a=b.sock' },
  });
  assert.equal(formatAddress(parseListenSpec('[::1]:80').address), '[::1]:80');
  assert.equal(formatAddress(parseListenSpec('8080').address), '*:8080');
  for (const bad of [
    '',
    'example.com:80',
    '1.2.3:80',
    '127.0.0.1:99999',
    '127.0.0.1',
    '::1:80',
    'unix:',
    'x=y=z',
  ]) {
    assert.throws(() => parseListenSpec(bad), ListenAddressError, bad);
  }
  assert.throws(() => parseListenSpec(`unix:/${'x'.repeat(120)}`), /longer than 107 bytes/);
  assert.deepEqual(parseListenSpec('a=unix:/x=y.sock'), {
    name: 'a',
    address: { kind: 'unix', path: '/x=y.sock' },
  });
  // `:PORT` is every interface; a relative unix path is relative to the current directory.
  assert.deepEqual(parseListenSpec(':8080').address, { kind: 'tcp', host: null, port: 8080 });
  assert.deepEqual(parseListenSpec('unix:rel.sock').address, {
    kind: 'unix',
    path: join(process.cwd(), 'rel.sock'),
  });
});

test('listen mistakes say what is wrong: an invalid NAME, a missing port, a duplicate', () => {
  const cases: [string, RegExp][] = [
    ['bad name=127.0.0.1:0', /: the NAME "bad name" is invalid \(NAME=ADDRESS; /],
    ['=80', /the NAME "" is invalid/],
    ['[::1]', /: a port is missing: write \[::1\]:PORT$/],
    ['127.0.0.1', /: a port is missing: write 127\.0\.0\.1:PORT$/],
    ['127.0.0.1:', /: a port is missing: write 127\.0\.0\.1:PORT$/],
    ['localhost', /: a port is missing: write localhost:PORT$/],
    ['::1', /write an IPv6 address in brackets with a port: \[::1\]:PORT$/],
  ];
  for (const [spec, re] of cases) assert.throws(() => parseListenSpec(spec), re, spec);
  const distinct =
    (...specs: string[]) =>
    () =>
      checkDistinct(specs.map(parseListenSpec));
  assert.throws(
    distinct('127.0.0.1:8080', 'web=localhost:8080'),
    /the same listen address is given twice: 127\.0\.0\.1:8080$/,
  );
  assert.throws(distinct('unix:/a.sock', 'unix:/a.sock'), /given twice: unix:\/a\.sock$/);
  assert.throws(
    distinct('8080', '127.0.0.1:8080'),
    /\*:8080 already listens on every interface, 127\.0\.0\.1:8080 included: give one of them/,
  );
  assert.throws(
    distinct('[::1]:80', ':80'),
    /\*:80 already listens on every interface, \[::1\]:80/,
  );
  distinct('127.0.0.1:0', '127.0.0.1:0', '8080', '127.0.0.1:8081', '[::1]:8081')();
  assert.throws(
    () => parseArgs(['run', '-l', '127.0.0.1:9', '-l', '127.0.0.1:9', 'x']),
    (e: unknown) => e instanceof UsageError && e.command === 'run' && /twice/.test(e.message),
  );
});

test('run options stop at -- or at the first word, so the worker keeps its own flags', () => {
  const a = parseArgs(['run', '-l', '8080', '--workers=3', 'node', 'server.js', '--port', '5']);
  assert.ok(a.kind === 'run');
  assert.equal(a.command, 'node');
  assert.deepEqual(a.args, ['server.js', '--port', '5']);
  assert.equal(a.options.workers, 3);
  const b = parseArgs([
    'run',
    '--listen',
    'a=1',
    '--listen',
    'b=unix:/x',
    '--drain-timeout',
    '2m',
    '--',
    '--weird',
  ]);
  assert.ok(b.kind === 'run');
  assert.deepEqual(
    b.options.listen?.map((l) => l.name),
    ['a', 'b'],
  );
  assert.equal(b.options.drainTimeoutMs, 120_000);
  assert.equal(b.command, '--weird');
  // Only what the user set: the supervisor applies its own defaults to the rest.
  assert.deepEqual(Object.keys(b.options).sort(), ['drainTimeoutMs', 'listen']);
  const c = parseArgs([
    'run',
    '--drain-signal',
    'quit',
    '--no-control',
    '--assume-ready-after',
    '1.5s',
    '-l',
    '1',
    'x',
  ]);
  assert.ok(c.kind === 'run');
  assert.equal(c.options.drainSignal, 'SIGQUIT');
  assert.equal(c.options.control, false);
  assert.equal(c.options.assumeReadyAfterMs, 1500);
  assert.deepEqual(parseArgs(['status', '--json', '--name', 'api']), {
    kind: 'status',
    json: true,
    ready: false,
    name: 'api',
    control: undefined,
  });
  assert.equal((parseArgs(['status', '--ready']) as { ready?: boolean }).ready, true);
  assert.throws(() => parseArgs(['status', '--ready', '--json']), /contradict/);
  assert.throws(() => parseArgs(['reload', '--ready']), /unknown option --ready/);
  assert.deepEqual(parseArgs(['stop', '--no-wait']), {
    kind: 'stop',
    wait: false,
    name: 'default',
    control: undefined,
  });
  assert.deepEqual(parseArgs([]), { kind: 'help', topic: undefined, bare: true });
  assert.deepEqual(parseArgs(['help']), { kind: 'help', topic: undefined });
  assert.deepEqual(parseArgs(['help', 'run']), { kind: 'help', topic: 'run' });
  assert.deepEqual(parseArgs(['reload', '-h']), { kind: 'help', topic: 'reload' });
});

test('argument mistakes are UsageErrors naming the word and the help that applies', () => {
  const cases: [string[], RegExp, string | undefined][] = [
    [['run', '--bogus', 'x'], /unknown option --bogus/, 'run'],
    [['run', '--listen'], /--listen needs a value/, 'run'],
    [['run', '-l', '8080'], /missing the worker command/, 'run'],
    [['run', '--workers', '0', 'x'], /--workers: "0" is not a whole number >= 1/, 'run'],
    [['run', '--workers', 'abc', 'x'], /--workers: "abc" is not a whole number/, 'run'],
    [
      ['run', '--workers', '100000', 'x'],
      /--workers: 100000 is more than the maximum, 1024/,
      'run',
    ],
    [['run', '--max-restarts', '-1', 'x'], /--max-restarts: "-1" is not a whole number/, 'run'],
    [['run', '--ready-timeout', 'soon', 'x'], /not a duration/, 'run'],
    [
      ['run', '--drain-timeout', '1000h', 'x'],
      /--drain-timeout: 1000h is more than the maximum, 24h/,
      'run',
    ],
    [['run', '--assume-ready-after', '25h', 'x'], /more than the maximum, 24h/, 'run'],
    [['run', '--drain-signal', 'SIGFOO', 'x'], /--drain-signal: use one of/, 'run'],
    [['run', '--control', '/a', '--no-control', 'x'], /contradict/, 'run'],
    [['run', '--control', '', 'x'], /--control needs a path/, 'run'],
    [['run', '--name', 'a/b', 'x'], /--name: "a\/b" is not a name/, 'run'],
    [['run', '--listen', 'nope', 'x'], /bad listen address "nope"/, 'run'],
    [['reload', 'extra'], /unexpected argument "extra"/, 'reload'],
    [['status', '--name', ''], /--name: "" is not a name/, 'status'],
    [['stop', '--control', ''], /--control needs a path/, 'stop'],
    [
      ['help', 'bogus'],
      /unknown help topic "bogus" \(topics: run, reload, status, stop\)/,
      undefined,
    ],
    [['frob'], /unknown command "frob"/, undefined],
    [['--frob'], /unknown option --frob/, undefined],
  ];
  for (const [argv, re, command] of cases) {
    assert.throws(
      () => parseArgs(argv),
      (e: unknown) => e instanceof UsageError && re.test(e.message) && e.command === command,
      argv.join(' '),
    );
  }
  assert.equal(parseDuration('--x', '250'), 250);
  assert.equal(parseDuration('--x', '2h'), 7_200_000);
});

test('status text: durations and the worker table', () => {
  assert.deepEqual([850, 4200, 303_000, 7_800_000, 90_000_000].map(formatDuration), [
    '850ms',
    '4.2s',
    '5m 3s',
    '2h 10m',
    '1d 1h',
  ]);
  const text = formatStatus({
    pid: 10,
    state: 'running',
    command: ['node', 'app.js'],
    startedAt: '',
    uptimeMs: 61_000,
    control: '/run/q.sock',
    listeners: [{ name: 'web', address: '127.0.0.1:80', fd: 3 }],
    generation: 2,
    reloads: { ok: 1, failed: 0, running: false, queued: false, lastError: null },
    generations: [
      {
        id: 2,
        state: 'serving',
        workers: [{ slot: 0, pid: 12, state: 'ready', uptimeMs: 5000, restarts: 1, status: null }],
      },
      {
        id: 1,
        state: 'draining',
        workers: [
          { slot: 0, pid: 11, state: 'draining', uptimeMs: 60_000, restarts: 0, status: null },
        ],
      },
    ],
  });
  assert.match(text, /^supervisor {2}pid 10, running, up 1m 1s, control \/run\/q\.sock$/m);
  assert.match(text, /^listening {3}127\.0\.0\.1:80 \(fd 3, web\)$/m);
  assert.match(text, /^2 +serving +0 +12 +ready +5\.0s +1$/m);
  assert.match(text, /^1 +draining +0 +11 +draining +1m 0s +0$/m);
});

test('the CLI reports user mistakes in one line with the right exit status, never a stack', {
  timeout: 120_000,
}, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const notExec = join(dir, 'script.sh');
  writeFileSync(notExec, 'echo hi\n', { mode: 0o644 });
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => busy.close(() => r())));
  const port = (busy.address() as net.AddressInfo).port;
  // A control path per case: the cases run at once, and each opens its control socket first.
  let nCtl = 0;
  const ctl = () => ['--control', join(dir, `c${nCtl++}.sock`)];
  const cases: [string[], number, RegExp][] = [
    [['--help'], 0, /^quiesce — zero-downtime restarts/],
    [['--help'], 0, /quiesce reload .*\[--json\][\s\S]*quiesce status .*\[--json\]/],
    [['help'], 0, /^quiesce — zero-downtime restarts/],
    [['run', '--help'], 0, /^Usage: quiesce run/],
    [['--version'], 0, /^\d+\.\d+\.\d+/],
    [['run', '--bogus', 'x'], 2, /^quiesce: unknown option --bogus\nTry 'quiesce run --help'\.$/],
    [
      ['run', '--workers', 'abc', 'x'],
      2,
      /^quiesce: --workers: "abc" is not a whole number >= 1\nTry 'quiesce run --help'\.$/,
    ],
    [['status', '--name', ''], 2, /is not a name .*\nTry 'quiesce status --help'\.$/],
    [['help', 'bogus'], 2, /^quiesce: unknown help topic "bogus" .*\nTry 'quiesce --help'\.$/],
    [[], 2, /^Exit status: .*\nDocs: docs\/cli\.md, docs\/supervisor\.md$/],
    [['run', '--listen', '300.1.1.1:80', 'x'], 2, /bad listen address "300\.1\.1\.1:80"/],
    [['run', ...ctl(), '--', NODE, '-e', '0'], 2, /nothing to listen on: pass --listen/],
    [
      ['run', '--listen', `127.0.0.1:${port}`, ...ctl(), '--', NODE, '-e', '0'],
      1,
      new RegExp(
        `cannot listen on 127\\.0\\.0\\.1:${port}: address already in use; held by pid ${process.pid} \\(.*\\(EADDRINUSE\\)`,
      ),
    ],
    [
      ['run', '--listen', '127.0.0.1:0', ...ctl(), '--', 'no-such-command-quiesce'],
      127,
      /command not found: no-such-command-quiesce/,
    ],
    [
      ['run', '--listen', '127.0.0.1:0', ...ctl(), '--', notExec],
      126,
      /cannot execute .*script\.sh: permission denied/,
    ],
    [
      ['run', '--listen', '127.0.0.1:0', ...ctl(), '--', NODE, '-e', 'process.exit(4)'],
      1,
      /worker \d+ of generation 1 exited with status 4 before it was ready/,
    ],
    [
      ['run', '--listen', '127.0.0.1:0', ...ctl(), '--', NODE, '-e', '0'],
      1,
      /quiesce: worker \d+ of generation 1 exited with status 0 before it was ready \(a worker must keep serving; a Node worker is ready once it listens on every socket quiesce holds — listen\(port\), listen\(path\) or listen\(\{ fd \}\); any other worker says it is ready by writing READY=1 to the descriptor in \$QUIESCE_READY_FD\)$/,
    ],
    [
      [
        'run',
        '-l',
        '127.0.0.1:0',
        '--no-preload',
        '--ready-timeout',
        '300ms',
        ...ctl(),
        '--',
        NODE,
        '-e',
        'setInterval(() => {}, 1000)',
      ],
      1,
      /quiesce: worker \d+ of generation 1 did not report ready within 300 ms \(a worker says it is ready by writing READY=1 to the descriptor in \$QUIESCE_READY_FD: notifyReady\(\) in Node, or leave out --no-preload for an unmodified Node server\)$/,
    ],
    [
      [
        'run',
        '-l',
        '127.0.0.1:0',
        '--ready-on-listen',
        '--ready-timeout',
        '300ms',
        ...ctl(),
        '--',
        NODE,
        '-e',
        'setInterval(() => {}, 1000)',
      ],
      1,
      /did not report ready within 300 ms \(a Node worker is ready once it listens on every socket quiesce holds — listen\(port\), listen\(path\) or listen\(\{ fd \}\); any other worker says it is ready by writing READY=1 to the descriptor in \$QUIESCE_READY_FD\)$/,
    ],
    [
      ['run', '--listen', `unix:${dir}/missing/a.sock`, ...ctl(), '--', NODE, '-e', '0'],
      1,
      /^quiesce: cannot listen on unix:.*\/missing\/a\.sock: the directory .*\/missing does not exist \(ENOENT\)$/,
    ],
    [
      ['run', '--listen', '127.0.0.1:0', '--control', `${dir}/missing/x.sock`, '--', NODE],
      1,
      /^quiesce: cannot open control socket .*\/missing\/x\.sock: the directory .*\/missing does not exist$/,
    ],
    [
      ['status', ...ctl()],
      1,
      /cannot reach the supervisor at .*c\d+\.sock: no supervisor is running there/,
    ],
    [['reload', '--name', 'nobody-runs-this'], 1, /cannot reach the supervisor/],
  ];
  // Some twenty CLIs at once: on a loaded machine each may take many seconds to start.
  const results = await Promise.all(cases.map(([argv]) => runCli(argv, { timeoutMs: 90_000 })));
  results.forEach((r, i) => {
    const [argv, code, re] = cases[i];
    const shown = argv.join(' ');
    assert.equal(r.code, code, `${shown}: ${r.stderr}`);
    assert.match(
      code === 0
        ? r.stdout
        : r.stderr
            .trim()
            .split('\n')
            .slice(-2)
            .join('\n')
            .replace(/^.*closed inherited.*\n/, ''),
      re,
      shown,
    );
    assert.doesNotMatch(r.stderr, /\n\s+at /, `${shown} printed a stack`);
  });
});

test('--help shows the defaults the supervisor applies, from the one place they are written', async () => {
  const { helpText, showDuration } = await import('../../src/cli/help.ts');
  const { supervisorDefaults: d } = await import('../../src/supervisor/index.ts');
  const run = helpText('run');
  for (const [flag, shown] of [
    ['--workers N', `default ${d.workers},`],
    ['--ready-timeout DUR', `default ${showDuration(d.readyTimeoutMs)}`],
    ['--drain-signal SIG', `default ${d.drainSignal}`],
    ['--max-restarts N', `default ${d.maxRestarts}`],
    ['--restart-window DUR', `default ${showDuration(d.restartWindowMs)}`],
  ]) {
    const line = run.split('\n').find((l) => l.includes(flag)) ?? '';
    assert.ok(line.includes(shown), `${flag}: ${line}`);
  }
  assert.match(run, new RegExp(`SIGKILL \\(default ${showDuration(d.drainTimeoutMs)}\\)`));
  assert.equal(showDuration(30_000), '30s');
  assert.equal(showDuration(1500), '1500ms');
});
