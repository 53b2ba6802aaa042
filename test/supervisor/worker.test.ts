/**
 * One worker process in-process: its waits follow the core's wait protocol — a cancelled wait
 * changes nothing in the worker and leaves nothing registered.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { timeout } from '../../src/core/index.ts';
import { WorkerNotReadyError } from '../../src/supervisor/errors.ts';
import { describeExit, WorkerProcess } from '../../src/supervisor/worker.ts';
import { assertCheckpoints, assertNoLeaks, snapshotResources } from '../../src/testing/index.ts';
import { cleanEnv } from './helpers.ts';

function worker(script: string): WorkerProcess {
  return new WorkerProcess({
    command: '/bin/sh',
    args: ['-c', script],
    env: cleanEnv(),
    listeners: [],
    generation: 7,
    slot: 0,
  });
}

test('a cancelled waitReady leaves the worker starting; READY=1 later still reaches a new waiter', {
  timeout: 15_000,
}, async () => {
  const before = snapshotResources();
  // No listeners: the readiness pipe is fd 3.
  const w = worker('sleep 0.3; echo READY=1 >&3; exec sleep 30');
  assert.equal(await timeout(20, () => w.waitReady()), undefined);
  assert.equal(w.state, 'starting');
  await assertCheckpoints(() => w.waitReady());
  assert.equal(w.state, 'ready');
  assert.equal(await timeout(20, () => w.waitExit()), undefined);
  assert.equal(w.exit, null, 'a cancelled waitExit does not touch the worker');
  assert.ok(w.kill('SIGTERM'));
  const exit = await w.waitExit();
  assert.equal(describeExit(exit), 'was killed by SIGTERM');
  assert.equal(w.kill('SIGTERM'), false, 'a finished worker is not signalled');
  await assertNoLeaks(before, 2000);
});

test('a worker that exits before READY=1 makes waitReady throw WorkerNotReadyError', {
  timeout: 15_000,
}, async () => {
  const w = worker('exit 7');
  await assert.rejects(w.waitReady(), (e: unknown) => {
    assert.ok(e instanceof WorkerNotReadyError);
    assert.equal(e.code, 'ERR_WORKER_NOT_READY');
    assert.match(
      e.message,
      /^worker \d+ of generation 7 exited with status 7 before it was ready$/,
    );
    return true;
  });
  assert.deepEqual(await w.waitExit(), { code: 7, signal: null });
});

test('a worker that cannot be spawned ends at once: no pid, waitReady says why, kill is a no-op', {
  timeout: 15_000,
}, async () => {
  const before = snapshotResources();
  const w = new WorkerProcess({
    command: '/bin/sh',
    args: ['-c', 'exit 0'],
    env: cleanEnv(),
    cwd: '/nonexistent/quiesce-test-dir',
    listeners: [],
    generation: 3,
    slot: 0,
  });
  await assert.rejects(w.waitReady(), (e: unknown) => {
    assert.ok(e instanceof WorkerNotReadyError);
    assert.equal(
      e.message,
      'worker of generation 3 could not be started: /bin/sh or the working directory does not exist (ENOENT)',
    );
    return true;
  });
  assert.equal(w.pid, undefined);
  assert.equal(w.state, 'exited');
  assert.equal(w.kill('SIGTERM'), false);
  await assertNoLeaks(before, 2000);
});
