/**
 * Reloads, with real processes on 127.0.0.1: the promise is that no client ever sees a refused
 * or reset connection, and that a connection in flight finishes on the generation that took it.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  HTTP_WORKER,
  hello,
  httpGet,
  load,
  NODE,
  ROOT,
  runCli,
  startSupervisor,
  tempDir,
  until,
  checkNoLeftovers,
  startWithMode,
} from './helpers.ts';

checkNoLeftovers();

function noFailures(tally: Record<string, number>, log = '') {
  const { ok, ...failures } = tally;
  assert.deepEqual(failures, { refused: 0, reset: 0, timeout: 0, wrong: 0 }, log);
  return ok;
}

test('10 reloads under continuous load: every Hello/Goodbye connection gets both lines, none refused or reset', {
  timeout: 60_000,
}, async (t) => {
  const dir = tempDir(t);
  const sup = await startSupervisor({ t, dir, args: ['--workers', '2'] });
  // Invariant: every connection opened during the reloads is accepted and answered in full.
  const l = load(() => hello(sup.port), { concurrency: 4, maxMs: 45_000 });
  for (let i = 0; i < 10; i++) {
    const r = await sup.request('reload');
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(r.reload && (r.reload as { generation: number }).generation, i + 2);
  }
  const tally = await l.stop();
  assert.ok(
    noFailures(tally, sup.stderr()) >= 40,
    `only ${tally.ok} connections ran during the reloads`,
  );
  const last = await sup.request('status');
  assert.ok(last.ok && (last.status as { generation: number }).generation === 11);
});

test('10 reloads of an HTTP worker under load with keep-alive off: every request answered', {
  timeout: 60_000,
}, async (t) => {
  const dir = tempDir(t);
  const sup = await startSupervisor({ t, dir, worker: [NODE, HTTP_WORKER] });
  // Invariant: every request gets a 200 with the worker's body; no connection error.
  const l = load(() => httpGet(sup.port), { concurrency: 4, maxMs: 45_000 });
  for (let i = 0; i < 10; i++) {
    const r = await sup.request('reload');
    assert.ok(r.ok, JSON.stringify(r));
  }
  const tally = await l.stop();
  assert.ok(
    noFailures(tally, sup.stderr()) >= 40,
    `only ${tally.ok} requests ran during the reloads`,
  );
});

test('reload requests made while a reload runs coalesce into exactly one more reload; the CLI and SIGHUP reload too', {
  timeout: 30_000,
}, async (t) => {
  const dir = tempDir(t);
  const sup = await startSupervisor({ t, dir });
  const results = await Promise.all([
    sup.request('reload'),
    sup.request('reload'),
    sup.request('reload'),
  ]);
  const gens = results.map((r) => {
    assert.ok(r.ok, JSON.stringify(r));
    return (r.reload as { generation: number }).generation;
  });
  // The first request to arrive starts generation 2; the other two share generation 3.
  assert.deepEqual(gens.sort(), [2, 3, 3]);
  const st = await sup.request('status');
  assert.ok(st.ok);
  const status = st.status as { generation: number; reloads: { ok: number } };
  assert.equal(status.generation, 3);
  assert.equal(status.reloads.ok, 2);
  // And the CLI client reports a reload the same way.
  const cli = await runCli(['reload', '--control', sup.control]);
  assert.equal(cli.code, 0, cli.stderr);
  assert.match(
    cli.stdout,
    /^reloaded: generation 4 serving \(pid \d+\) after \d+ ms; generation 3 draining/,
  );
  // SIGHUP asks for a reload too.
  sup.proc.kill('SIGHUP');
  await sup.waitFor(/generation 5 serving after \d+ ms; generation 4 draining/);
});

test('connections in flight during a reload complete on the old generation, which drains before it exits', {
  timeout: 30_000,
}, async (t) => {
  const sup = await startWithMode(t, 'normal hold=1500');
  const [oldPid] = sup.workerPids();
  // Five long connections, each already greeted by generation 1.
  const conns = await Promise.all(
    Array.from(
      { length: 5 },
      () =>
        new Promise<{ c: net.Socket; data: () => string; ended: Promise<void> }>(
          (resolve, reject) => {
            const c = net.connect(sup.port, '127.0.0.1');
            let data = '';
            const ended = new Promise<void>((r) => c.on('end', () => r()));
            c.setEncoding('utf8');
            c.on('error', reject);
            c.on('data', (d: string) => {
              data += d;
              if (data === 'Hello.\n') resolve({ c, data: () => data, ended });
            });
          },
        ),
    ),
  );
  t.after(() => {
    for (const { c } of conns) c.destroy();
  });
  sup.deploy('normal');
  const r = await sup.request('reload');
  assert.ok(r.ok, JSON.stringify(r));
  // The old worker is draining, not killed: it is still there with our connections open.
  assert.doesNotThrow(() => process.kill(oldPid, 0));
  assert.equal(await hello(sup.port), 'ok', 'the new generation serves meanwhile');
  await Promise.all(conns.map((x) => x.ended));
  for (const x of conns) assert.equal(x.data(), 'Hello.\nGoodbye.\n');
  await until(
    () => {
      try {
        process.kill(oldPid, 0);
        return false;
      } catch {
        return true;
      }
    },
    10_000,
    'the old worker to exit',
  );
  assert.doesNotMatch(sup.stderr(), /SIGKILL/);
});

test("npm start's demo (the example Hello/Goodbye server, as it is) reloads under load without a failed connection", {
  timeout: 45_000,
}, async (t) => {
  // The very command line of `npm start`, on port 0 instead of 8080.
  const start: string = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts.start;
  const words = start.split(/\s+/);
  assert.deepEqual(words.slice(0, 3), ['node', 'src/cli/main.ts', 'run']);
  const dashes = words.indexOf('--');
  const args = words.slice(3, dashes).map((w) => (w === '127.0.0.1:8080' ? '127.0.0.1:0' : w));
  const worker = words
    .slice(dashes + 1)
    .map((w) => (w === 'node' ? NODE : w.startsWith('examples/') ? join(ROOT, w) : w));
  const dir = tempDir(t);
  const sup = await startSupervisor({ t, dir, args, worker });
  // Invariant: every connection during the reloads gets both lines.
  const l = load(() => hello(sup.port), { concurrency: 3, maxMs: 30_000 });
  for (let i = 0; i < 3; i++) {
    const r = await sup.request('reload');
    assert.ok(r.ok, JSON.stringify(r));
  }
  assert.ok(noFailures(await l.stop(), sup.stderr()) > 0);
});
