/**
 * `--warm-up PATH[:N]`: a new worker answers N requests of its own before its server takes a
 * single real connection, through the app's own handler, and only then reports ready; an app
 * that does not answer the path is not held up.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as http from 'node:http';
import { test } from 'node:test';
import { checkNoLeftovers, NODE, ROOT, runCli } from '../supervisor/helpers.ts';
import { startApp } from './helpers.ts';

checkNoLeftovers();

const APP = join(ROOT, 'test/apps/fixtures/warm-counter.js');

/** GET / on a fresh connection: the app's `warm N missed M from PID`. */
function ask(port: number): Promise<{ warm: number; missed: number; pid: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: '127.0.0.1', port, path: '/', agent: false, timeout: 5000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => {
          const m = /warm (\d+) missed (\d+) from (\d+)/.exec(body);
          if (!m) reject(new Error(`unexpected answer ${res.statusCode} ${body}`));
          else resolve({ warm: Number(m[1]), missed: Number(m[2]), pid: Number(m[3]) });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

test('with --warm-up /:120 every worker, first and after a reload, has answered 120 warm-up requests before its first real one, and clients kept being answered across the reload', async (t) => {
  const sup = await startApp(t, {
    args: ['--workers', '2', '--warm-up', '/:120'],
    worker: [NODE, APP],
  });
  const seen: { warm: number; missed: number; pid: number }[] = [];
  let stopped = false;
  let failed = 0;
  // Real clients hammer the socket from the start, so a worker that listened before its
  // warm-up was over would answer some of them with a count below 120.
  const loops = Array.from({ length: 4 }, async () => {
    while (!stopped) {
      try {
        seen.push(await ask(sup.port));
      } catch {
        failed++;
      }
    }
  });
  try {
    const r = await sup.request('reload');
    assert.equal(r.ok, true, JSON.stringify(r));
    const after = seen.length;
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(seen.length > after, 'answers after the reload');
  } finally {
    stopped = true;
    await Promise.all(loops);
  }
  assert.equal(failed, 0);
  const pids = new Set(seen.map((s) => s.pid));
  assert.ok(pids.size >= 3, `answers from ${pids.size} workers: both generations`);
  assert.deepEqual(
    seen.filter((s) => s.warm !== 120),
    [],
    'every real request came after its worker warm-up',
  );
});

test('a warm-up path the app does not answer with 2xx stops the warm-up at once: the worker still reports ready and serves', async (t) => {
  const sup = await startApp(t, {
    args: ['--warm-up', '/missing:5000', '--ready-timeout', '5s'],
    worker: [NODE, APP],
  });
  // The batches in flight when the first 404 came (two of ten) and no more of the 5,000.
  const a = await ask(sup.port);
  assert.equal(a.warm, 0);
  assert.ok(a.missed >= 1 && a.missed <= 20, `${a.missed} warm-up requests after the first 404`);
});

test('--warm-up must be PATH or PATH:N', async () => {
  for (const bad of ['health', '/:0', '/x:abc', '/:1000000']) {
    const r = await runCli(['run', '--listen', '127.0.0.1:0', '--warm-up', bad, '--', 'true']);
    assert.notEqual(r.code, 0, bad);
    assert.match(r.stderr, /warmUp must be PATH or PATH:N/, bad);
  }
});
