/**
 * The kubelet's termination sequence, played with real processes against an unmodified
 * Express app under `quiesce run --shutdown-delay` (the settings of examples/kubernetes):
 * SIGTERM to the supervisor (PID 1 in the pod); readiness (`quiesce status --ready`, the
 * readinessProbe) turns failing at once while the workers keep serving; the client stops
 * sending once the probe fails (the endpoints update); the workers drain; the supervisor
 * exits inside the grace period; the client, which kept sending until then, saw no error.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkNoLeftovers, NODE, runCli } from '../supervisor/helpers.ts';
import { EXPRESS_APP, failures, httpLoad, NO_FAILURES, startApp } from './helpers.ts';

checkNoLeftovers();

const SHUTDOWN_DELAY_MS = 3000;
const GRACE_MS = 15_000; // terminationGracePeriodSeconds, scaled down

test('the kubelet sequence: SIGTERM, readiness fails while still serving, drain, exit within the grace period, no failed request', async (t) => {
  const sup = await startApp(t, {
    args: ['--workers', '2', '--shutdown-delay', `${SHUTDOWN_DELAY_MS}ms`, '--drain-timeout', '5s'],
    worker: [NODE, EXPRESS_APP],
  });
  const probe = async () =>
    (await runCli(['status', '--ready', '--control', sup.control], { timeoutMs: 30_000 })).code;
  assert.equal(await probe(), 0, 'ready before the termination');
  const load = httpLoad(sup.port, { keepAlive: true, concurrency: 4 });
  let servedWhileNotReady = 0;
  try {
    await new Promise((r) => setTimeout(r, 300));
    const exited = sup.exited.then((code) => ({ code, at: performance.now() }));
    const termAt = performance.now();
    sup.proc.kill('SIGTERM');
    const okAtTerm = load.counts.ok;
    // The readinessProbe, as the kubelet runs it: until it fails.
    let code = 0;
    for (let i = 0; i < 50 && code === 0; i++) code = await probe();
    assert.equal(code, 1, 'readiness never turned failing');
    servedWhileNotReady = load.counts.ok - okAtTerm;
    t.diagnostic(
      `readiness failed ${Math.round(performance.now() - termAt)} ms after SIGTERM; ${JSON.stringify(load.counts)}`,
    );
    // The endpoints controller takes the pod out: the client stops sending new requests.
    await load.stop();
    const exit = await exited;
    t.diagnostic(`exited ${Math.round(exit.at - termAt)} ms after SIGTERM`);
    assert.equal(exit.code, 143);
    assert.ok(exit.at - termAt >= SHUTDOWN_DELAY_MS - 50, 'drained before the shutdown delay');
    assert.ok(exit.at - termAt < GRACE_MS, 'did not exit within the grace period');
  } finally {
    await load.stop();
  }
  assert.deepEqual(failures(load.counts), NO_FAILURES, JSON.stringify(load.counts));
  assert.ok(servedWhileNotReady > 0, 'nothing was served between SIGTERM and readiness failing');
  assert.match(sup.stderr(), /not ready; serving 3000 ms more before the drain/);
  assert.doesNotMatch(sup.stderr(), /SIGKILL/);
});
