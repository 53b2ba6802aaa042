/**
 * Other real clients through a drain: fetch (undici) and curl.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { serveHttp } from '../../src/http/index.ts';
import { delay, until } from './helpers.ts';
import { checkLeaks } from '../helpers/leaks.ts';

checkLeaks();

const local = { port: 0, host: '127.0.0.1' };
const slowApp = async (req: { url?: string }, res: { end(s: string): void }) => {
  if (req.url === '/slow') await delay(500);
  res.end('ok');
};

describe('real clients', () => {
  test('fetch (undici, keep-alive pool): requests in flight at shutdown complete, later ones never hang', async () => {
    const server = await serveHttp(slowApp, local);
    const url = `http://127.0.0.1:${server.port}`;
    for (let i = 0; i < 5; i++) assert.equal(await (await fetch(`${url}/`)).text(), 'ok');
    const inflight = Array.from({ length: 5 }, () => fetch(`${url}/slow`).then((r) => r.text()));
    await until(() => server.stats().requestsRunning === 5);
    const report = await server.shutdown({ drainTimeoutMs: 5000 });
    assert.deepEqual(await Promise.all(inflight), Array(5).fill('ok'));
    assert.equal(report.forcedCloses, 0);
    await assert.rejects(fetch(`${url}/`), TypeError, 'refused once stopped');
  });

  test('curl: a request in flight at shutdown completes with Connection: close', async () => {
    const server = await serveHttp(slowApp, local);
    const curl = promisify(execFile)('curl', ['-s', '-i', `http://127.0.0.1:${server.port}/slow`]);
    await until(() => server.stats().requestsRunning === 1);
    const report = await server.shutdown({ drainTimeoutMs: 5000 });
    const { stdout } = await curl;
    assert.match(stdout, /^HTTP\/1\.1 200/);
    assert.match(stdout, /connection: close/i);
    assert.match(stdout, /ok$/);
    assert.equal(report.requestsCompleted, 1);
  });
});
