/**
 * Unmodified Express 5 and Fastify 5 apps (they call `listen(PORT)`) under `quiesce run`:
 * reloads under continuous load lose no request, keep-alive on or off, and every old
 * generation exits by itself, long before the drain timeout.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { checkNoLeftovers, NODE, until } from '../supervisor/helpers.ts';
import { EXPRESS_APP, FASTIFY_APP, failures, httpLoad, NO_FAILURES, startApp } from './helpers.ts';

checkNoLeftovers();

const RELOADS = 10;

const alive = (pid: number) => existsSync(`/proc/${pid}`);

for (const [name, app] of [
  ['Express 5', EXPRESS_APP],
  ['Fastify 5', FASTIFY_APP],
] as const) {
  for (const keepAlive of [false, true]) {
    test(`an unmodified ${name} app, 2 workers, ${RELOADS} reloads under load with keep-alive ${keepAlive ? 'on' : 'off'}: no failed request, and each old generation exits by itself`, async (t) => {
      const sup = await startApp(t, {
        args: ['--workers', '2', '--drain-timeout', '20s'],
        worker: [NODE, app],
        // The app listens on PORT (or 8080): quiesce holds one socket, so that listen is it.
        env: { PORT: '22999' },
      });
      const load = httpLoad(sup.port, { keepAlive });
      try {
        await until(() => load.counts.ok > 20, 10_000, 'first answers');
        for (let i = 0; i < RELOADS; i++) {
          const before = (await sup.request('status')) as {
            status?: { generations: { workers: { pid: number }[] }[] };
          };
          const old = before.status!.generations.flatMap((g) => g.workers.map((w) => w.pid));
          const r = await sup.request('reload');
          assert.equal(r.ok, true, JSON.stringify(r));
          // Exits by itself: drained in far less than the 20 s after which it would be killed.
          await until(() => old.every((pid) => !alive(pid)), 8000, `generation ${i + 1} to exit`);
        }
      } finally {
        await load.stop();
      }
      assert.deepEqual(
        failures(load.counts),
        NO_FAILURES,
        `counts: ${JSON.stringify(load.counts)}`,
      );
      assert.ok(load.counts.ok > 100, `only ${load.counts.ok} requests answered`);
      assert.doesNotMatch(sup.stderr(), /SIGKILL/);
    });
  }
}
