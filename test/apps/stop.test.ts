/**
 * `quiesce stop` over an unmodified app with idle keep-alive clients and requests in flight:
 * every request in flight succeeds, the idle connections are closed, and the supervisor exits
 * right after the last response — not after a keep-alive timer, nor the drain timeout. The
 * same through `npm start` (npm → sh → node) on the machine's own Node 20; and an app with its
 * own SIGTERM handler keeps it, with the drain applied to its `server.close()`.
 */
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { type TestContext, test } from 'node:test';
import { checkNoLeftovers, NODE, runCli, type Sup } from '../supervisor/helpers.ts';
import {
  EXPRESS_APP,
  get,
  httpLoad,
  NO_FAILURES,
  NPM_START_DIR,
  failures,
  pathWithNode,
  SYSTEM_NODE,
  startApp,
} from './helpers.ts';

checkNoLeftovers();

const IDLE = 200;
const IN_FLIGHT = 5;

/** Opens `IDLE` keep-alive connections (one request each, then idle), starts `IN_FLIGHT` 1 s
 * requests, runs `quiesce stop`; returns the outcomes and how long after the last response
 * the supervisor exited. */
async function stopUnderClients(sup: Sup) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: IDLE + 10 });
  try {
    const warm = await Promise.all(Array.from({ length: IDLE }, () => get(sup.port, '/', agent)));
    assert.deepEqual(
      warm.filter((k) => k !== 'ok'),
      [],
    );
    const idleBefore = Object.values(agent.freeSockets).flat().length;
    let lastEnd = 0;
    const inFlight = Array.from({ length: IN_FLIGHT }, () =>
      get(sup.port, '/slow?ms=1000', false).then((k) => {
        lastEnd = performance.now();
        return k;
      }),
    );
    await new Promise((r) => setTimeout(r, 300)); // the requests reach the workers
    const exited = sup.exited.then((code) => ({ code, at: performance.now() }));
    const stop = await runCli(['stop', '--control', sup.control]);
    assert.equal(stop.code, 0, stop.stderr);
    const kinds = await Promise.all(inFlight);
    const exit = await exited;
    // The server closed the idle connections (the client's sockets ended).
    const idleAfter = Object.values(agent.freeSockets).flat().length;
    return { kinds, code: exit.code, afterLastMs: exit.at - lastEnd, idleBefore, idleAfter };
  } finally {
    agent.destroy();
  }
}

test(`quiesce stop over an unmodified Express app with ${IDLE} idle keep-alive clients and ${IN_FLIGHT} requests in flight: all ${IN_FLIGHT} succeed, and the supervisor exits right after the last response`, async (t) => {
  const sup = await startApp(t, {
    args: ['--workers', '2', '--drain-timeout', '20s'],
    worker: [NODE, EXPRESS_APP],
  });
  const r = await stopUnderClients(sup);
  t.diagnostic(`supervisor exited ${r.afterLastMs.toFixed(1)} ms after the last response`);
  assert.deepEqual(r.kinds, Array(IN_FLIGHT).fill('ok'));
  assert.equal(r.code, 0);
  assert.equal(r.idleBefore, IDLE);
  assert.equal(r.idleAfter, 0);
  // Tens of ms on a quiet machine; bounded generously here, far below keep-alive (5 s) and
  // drain (20 s) timers, which is what a wrong implementation would wait for.
  assert.ok(r.afterLastMs < 4000, `exited ${r.afterLastMs} ms after the last response`);
  assert.doesNotMatch(sup.stderr(), /SIGKILL/);
});

const NPM = {
  skip: SYSTEM_NODE === null ? 'no Node >= 20 outside node_modules in PATH' : false,
} as const;

/** `quiesce run -- npm --prefix examples/apps/npm-start start`, on the machine's Node 20. */
function startNpm(t: TestContext) {
  return startApp(t, {
    args: ['--workers', '2', '--drain-timeout', '20s'],
    worker: ['npm', '--prefix', NPM_START_DIR, '--silent', 'start'],
    env: { PATH: pathWithNode(SYSTEM_NODE!) },
  });
}

test(
  'through `quiesce run -- npm start` (npm → sh → node) on the machine’s Node 20: 10 reloads under keep-alive load lose nothing',
  NPM,
  async (t) => {
    const sup = await startNpm(t);
    const load = httpLoad(sup.port, { keepAlive: true, concurrency: 4 });
    try {
      for (let i = 0; i < 10; i++) {
        const r = await sup.request('reload');
        assert.equal(r.ok, true, JSON.stringify(r));
      }
    } finally {
      await load.stop();
    }
    assert.deepEqual(failures(load.counts), NO_FAILURES, JSON.stringify(load.counts));
    assert.doesNotMatch(sup.stderr(), /SIGKILL|ERR_UNKNOWN_FILE_EXTENSION|EINVAL|EADDRINUSE/);
  },
);

test(
  `through \`quiesce run -- npm start\` on Node 20: quiesce stop with ${IDLE} idle keep-alive clients and ${IN_FLIGHT} requests in flight waits for the app's last response`,
  NPM,
  async (t) => {
    const sup = await startNpm(t);
    const r = await stopUnderClients(sup);
    t.diagnostic(`supervisor exited ${r.afterLastMs.toFixed(1)} ms after the last response`);
    assert.deepEqual(r.kinds, Array(IN_FLIGHT).fill('ok'));
    assert.ok(r.afterLastMs >= 0, 'the supervisor exited before the app had answered');
    assert.ok(r.afterLastMs < 4000, `exited ${r.afterLastMs} ms after the last response`);
  },
);
