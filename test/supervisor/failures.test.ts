/**
 * When things go wrong: a new generation that never gets ready or crashes at start, a worker
 * killed under the supervisor, a crash loop, a worker that will not drain.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import {
  checkNoLeftovers,
  hello,
  load,
  runCli,
  startSupervisor,
  tempDir,
  until,
  startWithMode,
} from './helpers.ts';

checkNoLeftovers();

function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}

for (const [broken, why] of [
  ['never-ready', /did not report ready within 1000 ms/],
  ['crash-at-start', /exited with status 3 before it was ready/],
] as const) {
  test(`a new generation that is ${broken}: the reload fails, the old one keeps serving, clients see nothing`, {
    timeout: 30_000,
  }, async (t) => {
    const sup = await startWithMode(t, 'normal', { args: ['--ready-timeout', '1s'] });
    const [oldPid] = sup.workerPids();
    // Invariant: while the broken generation comes and goes, every connection is answered.
    const l = load(() => hello(sup.port), { concurrency: 3, maxMs: 20_000 });
    sup.deploy(broken);
    const r = await sup.request('reload');
    assert.equal(r.ok, false);
    assert.ok(!r.ok);
    assert.equal(r.error.code, 'ERR_RELOAD_FAILED');
    assert.match(r.error.message, why);
    assert.match(r.error.message, /generation 1 keeps serving/);
    const badPid = sup.workerPids().find((p) => p !== oldPid)!;
    await until(() => gone(badPid), 10_000, 'the failed worker to be stopped');
    const tally = await l.stop();
    const { ok, ...failures } = tally;
    assert.deepEqual(failures, { refused: 0, reset: 0, timeout: 0, wrong: 0 }, sup.stderr());
    assert.ok(ok > 0);
    assert.ok(!gone(oldPid), 'the old worker still runs');
    const st = await sup.request('status');
    assert.ok(st.ok);
    const status = st.status as { generation: number; reloads: { failed: number; ok: number } };
    assert.equal(status.generation, 1);
    assert.deepEqual([status.reloads.ok, status.reloads.failed], [0, 1]);
    // A fixed deploy reloads fine afterwards.
    sup.deploy('normal');
    const again = await sup.request('reload');
    assert.ok(again.ok, JSON.stringify(again));
    assert.equal((again.reload as { generation: number }).generation, 3);
  });
}

test('a worker killed with SIGKILL is restarted, and the restart is counted', {
  timeout: 30_000,
}, async (t) => {
  const dir = tempDir(t);
  const sup = await startSupervisor({ t, dir });
  const [first] = sup.workerPids();
  process.kill(first, 'SIGKILL');
  const m = await sup.waitFor(/restarting worker slot 0 of generation 1: pid (\d+)/);
  const second = Number(m[1]);
  assert.notEqual(second, first);
  await until(
    async () => {
      const st = await sup.request('status');
      const w = st.ok && (st.status as any).generations[0].workers[0];
      return w && w.pid === second && w.state === 'ready' && w.restarts === 1;
    },
    10_000,
    'the restarted worker to be ready',
  );
  assert.match(sup.stderr(), new RegExp(`worker ${first} of generation 1 was killed by SIGKILL`));
  assert.equal(await hello(sup.port), 'ok');
});

test('a worker that keeps crashing is a crash loop: the supervisor gives up and exits 1', {
  timeout: 30_000,
}, async (t) => {
  const dir = tempDir(t);
  const sup = await startSupervisor({ t, dir, args: ['--max-restarts', '1'] });
  const [first] = sup.workerPids();
  process.kill(first, 'SIGKILL');
  const m = await sup.waitFor(/restarting worker slot 0 of generation 1: pid (\d+)/);
  await until(
    async () => {
      const st = await sup.request('status');
      return st.ok && (st.status as any).generations[0].workers[0].state === 'ready';
    },
    10_000,
    'the restarted worker to be ready',
  );
  process.kill(Number(m[1]), 'SIGKILL');
  assert.equal(await sup.exited, 1);
  assert.match(
    sup.stderr(),
    /crash loop: worker slot 0 of generation 1 exited 2 times within 60000 ms/,
  );
});

test('a draining worker that ignores SIGTERM is killed after --drain-timeout', {
  timeout: 30_000,
}, async (t) => {
  const sup = await startWithMode(t, 'ignore-term', {
    args: ['--drain-timeout', '300ms'],
  });
  const [oldPid] = sup.workerPids();
  const r = await sup.request('reload');
  assert.ok(r.ok);
  await sup.waitFor(new RegExp(`worker ${oldPid} still running after 300 ms of drain: SIGKILL`));
  await until(() => gone(oldPid), 5000, 'the stubborn worker to die');
  assert.equal(await hello(sup.port), 'ok');
});

/** Sets this process's soft limit on open files through python's prlimit (Linux). */
function setOpenFileLimit(pid: number, soft: number | null): void {
  const code =
    'import resource, sys\n' +
    'pid = int(sys.argv[1]); _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)\n' +
    'soft = hard if sys.argv[2] == "hard" else int(sys.argv[2])\n' +
    'resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))';
  const r = spawnSync('python3', ['-c', code, String(pid), soft === null ? 'hard' : String(soft)]);
  assert.equal(r.status, 0, String(r.stderr));
}

test('a worker that cannot be spawned (EMFILE) fails the reload with exit 1; the supervisor and the old generation live on', {
  timeout: 30_000,
}, async (t) => {
  const dir = tempDir(t);
  const sup = await startSupervisor({ t, dir, args: ['--workers', '2'] });
  const old = sup.workerPids();
  // Leave room for the control connection's accept and little else: the spawns hit EMFILE.
  const top = Math.max(...readdirSync(`/proc/${sup.pid}/fd`).map(Number));
  setOpenFileLimit(sup.pid, top + 2);
  const failed = await runCli(['reload', '--control', sup.control]);
  setOpenFileLimit(sup.pid, null);
  assert.equal(failed.code, 1, failed.stderr);
  assert.match(
    failed.stderr,
    /^quiesce: reload failed: worker of generation 2 could not be started: too many open files in the supervisor \(raise `ulimit -n`, or run fewer --workers\) \(EMFILE\); generation 1 keeps serving\n$/,
  );
  assert.equal(await hello(sup.port), 'ok');
  for (const pid of old) assert.ok(!gone(pid), 'the old generation still runs');
  const again = await sup.request('reload');
  assert.ok(again.ok, `${JSON.stringify(again)}\n${sup.stderr()}`);
  assert.equal((again.reload as { generation: number }).generation, 3);
  assert.doesNotMatch(sup.stderr(), /TypeError|\n\s+at /);
});

test('a spawn failure at start-up is one clear line and a clean exit 1: no worker, no control socket left', {
  timeout: 30_000,
}, async (t) => {
  const dir = tempDir(t);
  // 100 readiness pipes cannot fit under 64 descriptors: some spawn fails with EMFILE.
  const sup = await startSupervisor({
    t,
    dir,
    args: ['--workers', '100'],
    wrapper: ['/bin/sh', '-c', 'ulimit -n 64 && exec "$@"', 'sh'],
    until: null,
  });
  assert.equal(await sup.exited, 1);
  const lines = sup.stderr().trimEnd().split('\n');
  assert.match(
    lines[lines.length - 1],
    /^quiesce: worker of generation 1 could not be started: too many open files .*\(EMFILE\)$/,
  );
  assert.doesNotMatch(sup.stderr(), /\n\s+at /);
  assert.ok(!existsSync(sup.control), 'the control socket is removed');
  for (const pid of sup.workerPids()) assert.ok(gone(pid), `worker ${pid} was stopped`);
});
