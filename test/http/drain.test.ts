/**
 * The drain engine (src/http/drain.js) on a plain node:http server, real sockets and clients.
 * Test names read as its guarantees.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { attachDrain } from '../../src/http/drain.js';
import {
  closedOf,
  delay,
  get,
  hammer,
  idleAndInflight,
  idleClient,
  listenLocal,
  until,
} from './helpers.ts';
import { checkLeaks } from '../helpers/leaks.ts';

checkLeaks();

/** For a test whose client would wait forever on a broken drain: it fails at this bound. */
const bounded = { timeout: 20_000 };

/** GET requests for `paths`, pipelined: one write, as a pipelining client sends them. */
function pipelined(paths: string[]): string {
  return paths.map((p) => `GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`).join('');
}

/** A raw client connected to `port`. */
function dialRaw(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/**
 * What a raw client saw until the connection closed; it answers the server's FIN with its
 * own, as HTTP clients do, and gives up (destroying its socket) after 10 s.
 */
function collectRaw(s: net.Socket): Promise<{ data: string; ended: boolean; error?: string }> {
  const seen: { data: string; ended: boolean; error?: string } = { data: '', ended: false };
  s.setEncoding('utf8');
  s.on('data', (x: string) => (seen.data += x));
  s.on('end', () => {
    seen.ended = true;
    s.end();
  });
  s.on('error', (e: Error & { code?: string }) => (seen.error ??= e.code));
  const giveUp = setTimeout(() => s.destroy(), 10_000);
  return new Promise((r) =>
    s.once('close', () => {
      clearTimeout(giveUp);
      r(seen);
    }),
  );
}

/** A server whose `/slow?ms=N` answers after N ms and `/` at once ("ok"). */
function app(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://x');
  const ms = Number(url.searchParams.get('ms') ?? 0);
  if (url.pathname === '/hang') return; // never answers
  const answer = () => res.end('ok');
  if (ms > 0) setTimeout(answer, ms);
  else answer();
}

describe('drain engine', () => {
  test('200 idle keep-alive clients and 5 in-flight 1 s requests: all 5 succeed, idle ones see a clean close, the drain ends right after the last response', async () => {
    const server = http.createServer(app);
    const d = attachDrain(server);
    const port = await listenLocal(server);
    const { report, responses, idle, afterLastMs } = await idleAndInflight(
      port,
      () => d.stats().connections.active,
      () => d.drain({ deadlineMs: 10_000 }),
    );
    assert.deepEqual(
      responses.map((r) => [r.status, r.body, r.connection]),
      Array(5).fill([200, 'ok', 'close']),
    );
    for (const seen of idle) {
      assert.equal(seen.error, undefined, 'no reset on an idle client');
      assert.equal(seen.ended, true, 'the idle client got a FIN');
    }
    assert.equal(report.atStart.active, 5);
    assert.equal(report.atStart.idle, 200);
    assert.equal(report.requestsCompleted, 5);
    assert.equal(report.idleClosed, 200);
    assert.equal(report.closedAfterResponse, 5);
    assert.equal(report.forcedCloses, 0);
    assert.equal(report.deadlineReached, false);
    // Bounded by the slowest request, not by keepAliveTimeout (5 s): generous for a loaded box.
    assert.ok(afterLastMs < 1000, `drain ended ${afterLastMs} ms after`);
  });

  test('50 keep-alive clients hammering through the drain: no request on a reused socket fails, and drain responses carry Connection: close', async () => {
    for (let round = 0; round < 3; round++) {
      const server = http.createServer(app);
      const d = attachDrain(server);
      const port = await listenLocal(server);
      let done = false;
      const load = hammer(port, { stop: () => done });
      await until(() => d.stats().requests > 500);
      const report = await d.drain({ deadlineMs: 10_000 });
      done = true;
      const out = await load;
      assert.deepEqual(out.reusedFailures, [], `round ${round}`);
      assert.ok(out.closeHeaders > 0, 'responses during the drain said Connection: close');
      assert.equal(report.forcedCloses, 0);
    }
  });

  test('a connection idle for less than minIdleMs is left open: its next request is served, with Connection: close', async () => {
    const server = http.createServer(app);
    const d = attachDrain(server, { minIdleMs: 1500 });
    const port = await listenLocal(server);
    const c = await idleClient(port);
    const drained = d.drain();
    await delay(300); // the client "was about to send"
    c.send('/');
    const seen = await c.closed;
    const report = await drained;
    assert.equal(seen.error, undefined);
    assert.match(seen.data, /\r\n\r\nok[\s\S]*connection: close\r\n[\s\S]*\r\n\r\nok$/i);
    assert.equal(report.requestsCompleted, 1);
    assert.equal(report.idleClosed, 0);
  });

  test('a client that connects and never sends a byte does not hold the drain (closed with a FIN at minIdleMs)', async () => {
    const server = http.createServer(app);
    const d = attachDrain(server, { minIdleMs: 200 });
    const port = await listenLocal(server);
    const s = net.connect({ port, host: '127.0.0.1' });
    let ended = false;
    let error: string | undefined;
    s.on('end', () => (ended = true));
    s.on('error', (e: Error & { code?: string }) => (error = e.code));
    s.resume();
    await until(() => d.stats().connections.idle === 1);
    const report = await d.drain({ deadlineMs: 10_000 });
    await closedOf(s);
    assert.equal(ended, true);
    assert.equal(error, undefined);
    assert.equal(report.silentClosed, 1);
    assert.equal(report.deadlineReached, false);
  });

  test('a handler that never answers does not hold the drain past deadline + grace; onDeadline runs first', async () => {
    const server = http.createServer(app);
    const d = attachDrain(server);
    const port = await listenLocal(server);
    const agent = new http.Agent({ keepAlive: true });
    const r = get(port, '/hang', agent).catch((e: Error & { code?: string }) => e.code);
    await until(() => d.stats().connections.active === 1);
    let onDeadlineAt = 0;
    const t0 = performance.now();
    const report = await d.drain({
      deadlineMs: 300,
      graceMs: 200,
      onDeadline: () => (onDeadlineAt = performance.now()),
    });
    const took = performance.now() - t0;
    assert.equal(await r, 'ECONNRESET');
    assert.ok(onDeadlineAt - t0 >= 290, 'onDeadline at the deadline');
    assert.ok(took >= 480 && took < 3000, `took ${took} ms`);
    assert.equal(report.deadlineReached, true);
    assert.equal(report.forcedCloses, 1);
    assert.equal(report.requestsAborted, 1);
    agent.destroy();
  });

  test('a response sent before its request body is read is not followed by a reset: the close reads and discards the rest', async () => {
    const server = http.createServer((_req, res) => res.end('early answer'));
    const d = attachDrain(server);
    const port = await listenLocal(server);
    // An uploader that keeps sending after the server's FIN, as a client mid-upload does.
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    await new Promise((r) => s.once('connect', r));
    let data = '';
    let error: string | undefined;
    s.setEncoding('utf8');
    s.on('data', (x: string) => (data += x));
    s.on('error', (e: Error & { code?: string }) => (error = e.code));
    const drained = d.drain();
    const part = Buffer.alloc(16 * 1024, 'x'); // 4 parts: less than lingerMaxBytes
    s.write(`POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${4 * part.length}\r\n\r\n`);
    s.write(part);
    await until(() => data.includes('early answer'));
    // The client is still uploading after the answer came: a server that destroy()s now
    // resets it (EPIPE/ECONNRESET here).
    for (let i = 0; i < 3; i++) {
      await delay(30);
      s.write(part, (e) => (error ??= (e as (Error & { code?: string }) | null)?.code));
    }
    s.end();
    await closedOf(s);
    const report = await drained;
    assert.equal(error, undefined);
    assert.match(data, /connection: close[\s\S]*early answer$/i);
    assert.equal(report.closedAfterResponse, 1);
    assert.equal(report.lingerTimeouts, 0);
  });

  test('onUpgraded is called at drain start for an upgraded connection, and the drain waits for it to close', async () => {
    const server = http.createServer(app);
    const upgraded: string[] = [];
    const d = attachDrain(server, {
      onUpgraded: (socket, req) => {
        upgraded.push(req.url ?? '');
        socket.end('bye');
      },
    });
    server.on('upgrade', (_req, socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n');
    });
    const port = await listenLocal(server);
    const s = net.connect({ port, host: '127.0.0.1' });
    let data = '';
    s.setEncoding('utf8');
    s.on('data', (x: string) => (data += x));
    s.write('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n');
    await until(() => d.stats().connections.upgraded === 1);
    const report = await d.drain({ deadlineMs: 5000 });
    await closedOf(s);
    assert.deepEqual(upgraded, ['/ws']);
    assert.equal(report.atStart.upgraded, 1);
    assert.equal(report.upgradedNotified, 1);
    assert.match(data, /bye$/);
  });

  test('connections arriving as the drain starts are served, not refused or reset (the listener lingers until its accept queue is quiet)', async () => {
    const server = http.createServer(app);
    const d = attachDrain(server);
    const port = await listenLocal(server);
    const seen = Array.from({ length: 60 }, () => {
      const s = net.connect({ port, host: '127.0.0.1' });
      s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      let data = '';
      let error: string | undefined;
      s.setEncoding('utf8');
      s.on('data', (x: string) => (data += x));
      s.on('error', (e: Error & { code?: string }) => (error = e.code));
      return new Promise<{ data: string; error?: string }>((r) =>
        s.once('close', () => r({ data, error })),
      );
    });
    // Hold the loop while the connects go out: they land in the accept queue, or just after.
    const until = Date.now() + 100;
    while (Date.now() < until);
    const drained = d.drain({ deadlineMs: 10_000 });
    const outcomes = await Promise.all(seen);
    await drained;
    assert.deepEqual(
      outcomes.filter((o) => o.error !== undefined || !o.data.endsWith('ok')),
      [],
      'every queued connection got its answer',
    );
  });

  test('an app that sets Connection: keep-alive itself still says close during the drain (setHeader, or writeHead headers)', async () => {
    const server = http.createServer((req, res) => {
      setTimeout(
        () => {
          if (req.url === '/obj') res.writeHead(200, { Connection: 'keep-alive' });
          else res.setHeader('Connection', 'keep-alive');
          res.end('ok');
        },
        req.url === '/' ? 0 : 300,
      );
    });
    const d = attachDrain(server);
    const port = await listenLocal(server);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    assert.equal((await get(port, '/', agent)).connection, 'keep-alive', 'before the drain');
    const a = get(port, '/set', agent);
    const b = get(port, '/obj', agent);
    await until(() => d.stats().connections.active === 2);
    const drained = d.drain({ deadlineMs: 5000 });
    assert.deepEqual([(await a).connection, (await b).connection], ['close', 'close']);
    const report = await drained;
    assert.equal(report.closedAfterResponse, 2);
    agent.destroy();
  });

  test(
    'requests pipelined into a draining connection are all answered, and only the last response says Connection: close',
    bounded,
    async () => {
      const handled: string[] = [];
      const server = http.createServer((req, res) => {
        handled.push(req.url ?? '');
        setTimeout(() => res.end(`ok ${req.url}`), 20);
      });
      const d = attachDrain(server);
      const port = await listenLocal(server);
      const s = await dialRaw(port);
      const drained = d.drain({ deadlineMs: 10_000 });
      const seen = collectRaw(s);
      s.write(pipelined(['/1', '/2', '/3']));
      const { data, error } = await seen;
      const report = await drained;
      assert.equal(error, undefined);
      assert.deepEqual(handled, ['/1', '/2', '/3']);
      assert.deepEqual(data.match(/ok \/\d/g), ['ok /1', 'ok /2', 'ok /3']);
      assert.deepEqual(data.match(/connection: \S+/gi), [
        'Connection: keep-alive',
        'Connection: keep-alive',
        'Connection: close',
      ]);
      assert.equal(report.requestsCompleted, 3);
      assert.equal(report.pipelinedDropped, 0);
    },
  );

  test(
    'requests in flight on one connection when the drain starts are all answered, the last with Connection: close',
    bounded,
    async () => {
      const server = http.createServer((req, res) => {
        setTimeout(() => res.end(`ok ${req.url}`), 150);
      });
      const d = attachDrain(server);
      const port = await listenLocal(server);
      const s = await dialRaw(port);
      const seen = collectRaw(s);
      s.write(pipelined(['/1', '/2']));
      await until(() => d.stats().requests === 2);
      const report = await d.drain({ deadlineMs: 10_000 });
      const { data } = await seen;
      assert.deepEqual(data.match(/ok \/\d/g), ['ok /1', 'ok /2']);
      assert.deepEqual(data.match(/connection: \S+/gi), [
        'Connection: keep-alive',
        'Connection: close',
      ]);
      assert.equal(report.requestsCompleted, 2);
    },
  );

  test(
    'a request pipelined behind a Connection: close already sent never reaches the app; the client gets a FIN, not a reset',
    bounded,
    async () => {
      const handled: string[] = [];
      // Answered synchronously, so /1's Connection: close is written before node:http parses /2.
      const server = http.createServer((req, res) => {
        handled.push(req.url ?? '');
        res.end(`ok ${req.url}`);
      });
      const d = attachDrain(server);
      const port = await listenLocal(server);
      const s = await dialRaw(port);
      const drained = d.drain({ deadlineMs: 10_000 });
      const seen = collectRaw(s);
      s.write(pipelined(['/1', '/2', '/3']));
      const { data, error, ended } = await seen;
      const report = await drained;
      assert.deepEqual(handled, ['/1']);
      assert.deepEqual(data.match(/ok \/\d/g), ['ok /1']);
      assert.match(data, /connection: close/i);
      assert.equal(error, undefined);
      assert.equal(ended, true);
      assert.equal(report.pipelinedDropped, 2);
      assert.equal(report.forcedCloses, 0);
    },
  );

  test('options are checked with one-line errors', () => {
    const server = http.createServer(app);
    assert.throws(() => attachDrain(server, { minIdleMs: -1 }), /minIdleMs must be a number >= 0/);
    assert.throws(() => attachDrain(null as never), /must be an http.Server/);
    const d = attachDrain(server);
    assert.equal(attachDrain(server), d, 'attaching twice returns the first handle');
    d.detach();
  });

  test('runs on the machine Node (>= 20) without TypeScript: plain JavaScript, node: imports only', async (t) => {
    const sys = await promisify(execFile)('node', ['--version']).catch(() => null);
    if (!sys) return t.skip('no system node');
    const drainUrl = new URL('../../src/http/drain.js', import.meta.url).href;
    const script = `
      import http from 'node:http';
      import { attachDrain } from ${JSON.stringify(drainUrl)};
      const server = http.createServer((q, s) => (q.url === '/slow' ? setTimeout(() => s.end('ok'), 300) : s.end('ok')));
      const d = attachDrain(server);
      const get = (port, path, agent) => new Promise((r) => http.get({ port, host: '127.0.0.1', path, agent }, (res) => { res.resume(); res.on('end', () => r(res.headers.connection)); }));
      server.listen(0, '127.0.0.1', async () => {
        const agent = new http.Agent({ keepAlive: true });
        const port = server.address().port;
        await get(port, '/', agent);
        const slow = get(port, '/slow', agent);
        while (d.stats().connections.active < 1) await new Promise((r) => setTimeout(r, 5));
        const report = await d.drain({ deadlineMs: 5000 });
        const connection = await slow;
        agent.destroy();
        console.log(JSON.stringify({ completed: report.requestsCompleted, connection, version: process.version }));
      });`;
    const { stdout } = await promisify(execFile)(
      'node',
      ['--input-type=module', '--no-warnings', '-e', script],
      { cwd: fileURLToPath(new URL('.', import.meta.url)), timeout: 20_000 },
    );
    const out = JSON.parse(stdout);
    assert.equal(out.completed, 1);
    assert.equal(out.connection, 'close');
    assert.equal(out.version, sys.stdout.trim());
  });
});

describe('drain engine, interceptClose', () => {
  test("an app's own server.close() + closeIdleConnections() become the drain: no request on a reused socket fails, and close's callback runs once closed", async () => {
    const server = http.createServer(app);
    const d = attachDrain(server, { interceptClose: true, closeDeadlineMs: 10_000 });
    const port = await listenLocal(server);
    let done = false;
    const load = hammer(port, { stop: () => done });
    await until(() => d.stats().requests > 500);
    // What unmodified apps do on SIGTERM (node's closeIdleConnections races their clients).
    const closed = new Promise<void>((r) => server.close(() => r()));
    server.closeIdleConnections();
    assert.equal(d.draining, true);
    await closed;
    done = true;
    const out = await load;
    assert.deepEqual(out.reusedFailures, []);
    assert.equal(d.stats().connections.active + d.stats().connections.idle, 0);
    assert.equal(server.listening, false);
  });
});
