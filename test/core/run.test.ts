import assert from 'node:assert/strict';
import { spawn as spawnProcess } from 'node:child_process';
import { describe, test } from 'node:test';

const fixture = new URL('./fixtures/run-main.ts', import.meta.url).pathname;

/** Runs the fixture; sends each signal once the child printed `ready` (and then `cleanup`
 * has not yet appeared, for a second signal). Resolves with exit code and output. */
function runFixture(mode: string, signals: NodeJS.Signals[] = []) {
  return new Promise<{ code: number | null; out: string; err: string }>((resolve, reject) => {
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    const child = spawnProcess(process.execPath, [fixture, mode], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    });
    let out = '';
    let err = '';
    const killer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`fixture ${mode} hung; output: ${out}`));
    }, 10_000);
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('ready\n') && signals.length > 0) {
        const pending = [...signals];
        signals.length = 0;
        const next = () => {
          const s = pending.shift();
          if (!s) return;
          child.kill(s);
          setTimeout(next, 100);
        };
        next();
      }
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.on('exit', (code) => {
      clearTimeout(killer);
      resolve({ code, out, err });
    });
  });
}

describe('run(main)', { timeout: 30_000 }, () => {
  test('SIGINT cancels main, cleanup runs, exit code 130, listeners removed', async () => {
    const r = await runFixture('serve', ['SIGINT']);
    assert.equal(r.code, 130);
    assert.match(r.out, /cleanup\nlisteners 0\n/);
  });

  test('SIGTERM cancels main, exit code 143', async () => {
    const r = await runFixture('serve', ['SIGTERM']);
    assert.equal(r.code, 143);
    assert.match(r.out, /cleanup/);
  });

  test('rule 2: after the first SIGINT cleanup can block; the second SIGINT is a forced cancel that cuts it', async () => {
    const started = Date.now();
    const r = await runFixture('blocking-cleanup', ['SIGINT', 'SIGINT']);
    assert.equal(r.code, 130);
    assert.match(r.out, /cleanup blocked 20 ms\ncleanup cut\ncleanup\nlisteners 0\n/);
    assert.ok(Date.now() - started < 4_000, 'did not wait for the 5 s window');
  });

  test('rule 2: run({ cleanupTimeoutMs }) bounds the cleanup of main', async () => {
    const started = Date.now();
    const r = await runFixture('short-window', ['SIGTERM']);
    assert.equal(r.code, 143);
    assert.match(r.out, /cleanup blocked 20 ms\ncleanup cut\ncleanup\n/);
    assert.match(r.err, /QUIESCE_CLEANUP_OVERRUN|overran its 100 ms window/);
    assert.ok(Date.now() - started < 4_000, 'the 100 ms window, not the 5 s default');
  });

  test('a third SIGINT exits at once with 130, even from uninterruptible cleanup', async () => {
    const started = Date.now();
    const r = await runFixture('slow-cleanup', ['SIGINT', 'SIGINT', 'SIGINT']);
    assert.equal(r.code, 130);
    assert.doesNotMatch(r.out, /cleanup/);
    assert.ok(Date.now() - started < 4_000, 'did not wait for the 5 s cleanup');
  });

  test('main returning exits 0; main throwing exits 1 and prints the error', async () => {
    const ok = await runFixture('return');
    assert.equal(ok.code, 0);
    assert.match(ok.out, /listeners 0/);
    const bad = await runFixture('throw');
    assert.equal(bad.code, 1);
    assert.match(bad.err, /main failed/);
  });
});
