/**
 * `quiesce run` as PID 1, as in a container without an init: in a PID namespace of its own
 * (`unshare --pid --fork`), over `npm start`, whose shell exits before the app, so the app is
 * orphaned to PID 1. quiesce becomes a tiny init (/bin/sh, through process.execve) with itself
 * as its child, because Node cannot wait for processes that are not its own children. What
 * must hold: the SIGTERM a container runtime sends drains the workers; reloads under load lose
 * nothing; the exit status is 143; every orphan handed to PID 1 is reaped (no zombie).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { controlRequest } from '../../src/supervisor/control.ts';
import { checkNoLeftovers, CLI, cleanEnv, NODE, tempDir } from '../supervisor/helpers.ts';
import {
  failures,
  httpLoad,
  NO_FAILURES,
  NPM_START_DIR,
  pathWithNode,
  SYSTEM_NODE,
} from './helpers.ts';

checkNoLeftovers();

const UNSHARE = ['unshare', '--pid', '--fork', '--kill-child', '--mount-proc'];
const canUnshare = spawnSync(UNSHARE[0], [...UNSHARE.slice(1), 'true']).status === 0;

/** Host pids of the processes whose parent is `ppid`, with their state letter. */
function children(ppid: number): { pid: number; state: string }[] {
  const out: { pid: number; state: string }[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[1]) === ppid) out.push({ pid: Number(p), state: f[0] });
    } catch {}
  }
  return out;
}

test('as PID 1 in a PID namespace, over npm start: reloads lose nothing, SIGTERM drains, exit 143, orphans are reaped', {
  skip: !canUnshare
    ? 'unshare --pid is not permitted here'
    : SYSTEM_NODE === null
      ? 'no Node >= 20 outside node_modules'
      : false,
}, async (t) => {
  const dir = tempDir(t);
  const control = join(dir, 'control.sock');
  const argv = [
    ...UNSHARE,
    NODE,
    CLI,
    'run',
    '--listen',
    '127.0.0.1:0',
    '--workers',
    '2',
    '--control',
    control,
    '--',
    'npm',
    '--prefix',
    NPM_START_DIR,
    '--silent',
    'start',
  ];
  const proc = spawn(argv[0], argv.slice(1), {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: cleanEnv({ PATH: pathWithNode(SYSTEM_NODE!) }),
  });
  let stderr = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const closed = new Promise<number>((resolve) =>
    proc.once('close', (code) => resolve(code ?? -1)),
  );
  // unshare --kill-child: whatever happens, ending unshare ends the namespace and all in it.
  t.after(async () => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
    await closed;
  });
  const until = async (pred: () => boolean, what: string, ms = 20_000) => {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end || proc.exitCode !== null) throw new Error(`${what}:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  await until(() => /generation 1 serving/.test(stderr), 'generation 1 never served');
  const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(stderr)![1]);
  // PID 1 is the init quiesce became (/bin/sh); quiesce runs as its child.
  assert.doesNotMatch(stderr, /running as PID 1/);
  const st = (await controlRequest(control, { op: 'status' })) as { status?: { pid: number } };
  assert.ok(st.status && st.status.pid > 1, `quiesce is pid ${st.status?.pid}`);
  assert.match(readFileSync(`/proc/${children(proc.pid!)[0].pid}/cmdline`, 'utf8'), /^sh\0-c\0/);

  const load = httpLoad(port, { keepAlive: true, concurrency: 4 });
  try {
    for (let i = 0; i < 3; i++) {
      const r = await controlRequest(control, { op: 'reload' });
      assert.equal(r.ok, true, JSON.stringify(r));
    }
  } finally {
    await load.stop();
  }
  assert.deepEqual(failures(load.counts), NO_FAILURES, JSON.stringify(load.counts));

  // The namespace's PID 1, seen from here, is unshare's only child.
  const init = children(proc.pid!)[0].pid;
  // The old generations' orphaned apps were handed to PID 1, and are reaped (give the init a
  // moment to be scheduled: a zombie only has to be gone soon, not at once).
  const zombies = () => children(init).filter((c) => c.state === 'Z');
  await new Promise((r) => setTimeout(r, 300));
  for (let i = 0; i < 100 && zombies().length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(zombies(), [], 'zombies left with PID 1 after 3 reloads over npm start');
  process.kill(init, 'SIGTERM');
  const code = await closed;
  assert.equal(code, 143, stderr);
  assert.match(stderr, /stopped/);
});
