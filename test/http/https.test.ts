/**
 * HTTPS: an adopted https.Server drains the same way (the TLS socket is tracked from its raw
 * accept; requests arrive on the TLS socket).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import { describe, test } from 'node:test';
import { serveHttp } from '../../src/http/index.ts';
import { until } from './helpers.ts';
import { checkLeaks } from '../helpers/leaks.ts';

checkLeaks();

const dir = new URL('./fixtures/', import.meta.url);
const key = readFileSync(new URL('key.pem', dir));
const cert = readFileSync(new URL('cert.pem', dir));

function get(port: number, path: string, agent: https.Agent) {
  return new Promise<{ body: string; connection: string | undefined }>((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port, path, agent, ca: cert }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ body, connection: res.headers.connection }));
      })
      .on('error', reject);
  });
}

describe('https', () => {
  test('an adopted https.Server: idle TLS keep-alive connections close cleanly, in-flight requests finish with Connection: close, a silent TLS client does not hold the drain', async () => {
    const node = https.createServer({ key, cert }, (req, res) => {
      setTimeout(() => res.end('secure'), req.url === '/slow' ? 500 : 0);
    });
    await new Promise<void>((r) => node.listen(0, '127.0.0.1', r));
    const server = await serveHttp(null, node, { minIdleMs: 200 });
    const port = server.port!;
    const agent = new https.Agent({ keepAlive: true, maxSockets: 4 });
    await Promise.all(Array.from({ length: 3 }, () => get(port, '/', agent)));
    // A TLS client that connects and never completes a request.
    const silent = tls.connect({ port, host: '127.0.0.1', ca: cert, servername: 'localhost' });
    let silentError: string | undefined;
    silent.on('error', (e: Error & { code?: string }) => (silentError = e.code));
    await new Promise((r) => silent.once('secureConnect', r));
    const c = server.stats().connections;
    assert.equal(
      c.active + c.idle,
      4,
      'one record per connection: the TLS socket replaced the raw one',
    );
    const slow = get(port, '/slow', agent);
    await until(() => server.stats().connections.active === 1);
    const report = await server.shutdown({ drainTimeoutMs: 5000 });
    const r = await slow;
    assert.equal(r.body, 'secure');
    assert.equal(r.connection, 'close');
    assert.equal(report.forcedCloses, 0);
    assert.equal(report.deadlineReached, false);
    assert.ok(report.idleClosed >= 2, `idle closed: ${report.idleClosed}`);
    await new Promise((r) => (silent.closed ? r(undefined) : silent.once('close', r)));
    assert.equal(silentError, undefined);
    agent.destroy();
  });
});
