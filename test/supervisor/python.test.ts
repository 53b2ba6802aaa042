/**
 * A worker in another language: examples/python-worker.py takes fd 3 the systemd way and
 * reports readiness on the pipe. It serves, and reloads under load without a failed connection.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hello, load, PY_WORKER, startSupervisor, tempDir, checkNoLeftovers } from './helpers.ts';

checkNoLeftovers();

test('a Python worker taking fd 3 serves and reloads under load with no failed connection', {
  timeout: 45_000,
}, async (t) => {
  const dir = tempDir(t);
  const sup = await startSupervisor({ t, dir, worker: ['python3', PY_WORKER] });
  assert.equal(await hello(sup.port), 'ok');
  // Invariant: every connection during the reloads gets both lines.
  const l = load(() => hello(sup.port), { concurrency: 4, maxMs: 30_000 });
  for (let i = 0; i < 3; i++) {
    const r = await sup.request('reload');
    assert.ok(r.ok, `${JSON.stringify(r)}\n${sup.stderr()}`);
  }
  const { ok, ...failures } = await l.stop();
  assert.deepEqual(failures, { refused: 0, reset: 0, timeout: 0, wrong: 0 }, sup.stderr());
  assert.ok(ok > 10, `only ${ok} connections ran during the reloads\n${sup.stderr()}`);
  const st = await sup.request('status');
  assert.ok(st.ok);
  assert.equal((st.status as { generation: number }).generation, 4);
});
