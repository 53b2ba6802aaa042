/**
 * `--drain-spread`: after a reload the old generation hands its busy keep-alive connections
 * over during the window, each at its first response after a moment of its own — not all at
 * the handover instant — and still loses no request.
 */
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { test } from 'node:test';
import { checkNoLeftovers, NODE, until } from '../supervisor/helpers.ts';
import { EXPRESS_APP, startApp } from './helpers.ts';

checkNoLeftovers();

const CONNECTIONS = 16;
const SPREAD_MS = 800;

interface Answer {
  at: number;
  pid: number;
  close: boolean;
}

/** `CONNECTIONS` keep-alive clients sending GET / back to back until `stop()`. */
function keepAliveLoad(port: number) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  const answers: Answer[] = [];
  const failed: string[] = [];
  let stopped = false;
  const one = () =>
    new Promise<void>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/', agent, timeout: 5000 }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => {
          if (res.statusCode !== 200) failed.push(`status ${res.statusCode}`);
          const pid = Number(/from (\d+)/.exec(body)?.[1]);
          answers.push({ at: performance.now(), pid, close: res.headers.connection === 'close' });
          resolve();
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => {
        failed.push(e.message);
        resolve();
      });
    });
  const loops = Array.from({ length: CONNECTIONS }, async () => {
    while (!stopped) await one();
  });
  return {
    answers,
    failed,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      agent.destroy();
    },
  };
}

test(`a reload with --drain-spread ${SPREAD_MS}ms hands the old generation's keep-alive connections over across the window, losing no request`, async (t) => {
  const sup = await startApp(t, {
    args: ['--workers', '2', '--drain-spread', `${SPREAD_MS}ms`, '--drain-timeout', '20s'],
    worker: [NODE, EXPRESS_APP],
    env: { PORT: '22998' },
  });
  const load = keepAliveLoad(sup.port);
  let handover = 0;
  let old: number[] = [];
  try {
    await until(() => load.answers.length > 50, 10_000, 'first answers');
    const st = (await sup.request('status')) as {
      status?: { generations: { workers: { pid: number }[] }[] };
    };
    old = st.status!.generations.flatMap((g) => g.workers.map((w) => w.pid));
    const r = await sup.request('reload');
    assert.equal(r.ok, true, JSON.stringify(r));
    handover = performance.now();
    // Every old connection has been handed over once no old worker answers any more.
    await until(
      () => {
        const last = load.answers.findLast((a) => old.includes(a.pid));
        return last !== undefined && performance.now() - last.at > 1000;
      },
      15_000,
      'the old generation to stop answering',
    );
  } finally {
    await load.stop();
  }
  assert.deepEqual(load.failed, []);
  // The end of the hand-over is logged (the reload bench measures up to it).
  assert.match(sup.stderr(), /generation 1 drained after \d+ ms/);
  const closes = load.answers.filter((a) => a.close && old.includes(a.pid)).map((a) => a.at);
  assert.ok(closes.length >= CONNECTIONS / 2, `only ${closes.length} Connection: close answers`);
  const first = Math.min(...closes);
  const last = Math.max(...closes);
  // 16 moments uniform over 800 ms span about 700 ms; at once they would span a few ms.
  assert.ok(last - first > SPREAD_MS / 3, `closes span ${Math.round(last - first)} ms`);
  // And the window bounds them (the slack is for a loaded machine).
  assert.ok(
    last - handover < SPREAD_MS + 1500,
    `last close ${Math.round(last - handover)} ms after the handover`,
  );
});
