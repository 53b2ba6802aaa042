/**
 * The HTTP examples run as their README lines say: each serves, drains on SIGTERM (the request
 * in flight completes, with `Connection: close`) and exits 143.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import http from 'node:http';
import { describe, test } from 'node:test';
import { delay, get } from './helpers.ts';

const root = new URL('../../', import.meta.url).pathname;

function start(file: string): {
  child: ChildProcess;
  port: Promise<number>;
  exit: Promise<number | null>;
} {
  const child = spawn(process.execPath, [`${root}examples/${file}`], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const port = new Promise<number>((resolve, reject) => {
    const look = (d: Buffer) => {
      out += d;
      const m = /listening on (?:http:\/\/)?[\d.]+:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    };
    child.stdout!.on('data', look);
    child.stderr!.on('data', look);
    child.once('exit', (code) => reject(new Error(`${file} exited ${code}: ${out}`)));
  });
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, port, exit };
}

const cases: [file: string, path: string, slowPath: string, body: RegExp][] = [
  ['http-plain.ts', '/', '/slow?ms=600', /^hello from pid \d+/],
  ['express-app.ts', '/users/7', '/report', /report ready|"id":"7"/],
  ['fastify-app.ts', '/', '/slow', /hello|done/],
  ['http-worker.ts', '/', '/?delay=600', /^hello from generation 0, pid \d+/],
];

describe('http examples', { timeout: 60_000 }, () => {
  for (const [file, path, slowPath, body] of cases) {
    test(`${file} serves with keep-alive, and on SIGTERM finishes the request in flight (Connection: close) and exits 143`, async () => {
      const ex = start(file);
      const port = await ex.port;
      const agent = new http.Agent({ keepAlive: true });
      const first = await get(port, path, agent);
      assert.equal(first.status, 200);
      assert.match(first.body, body);
      assert.equal(first.connection, 'keep-alive', 'keep-alive is on');
      const slow = get(port, slowPath, agent);
      await delay(150); // the slow request is in the handler
      ex.child.kill('SIGTERM');
      const r = await slow;
      assert.equal(r.status, 200);
      assert.equal(r.connection, 'close');
      assert.equal(await ex.exit, 143);
      agent.destroy();
    });
  }
});
