/**
 * serveHttp: requests as tasks, the shutdown phases, probes — real sockets on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import { currentSignal, run, sleep, spawn } from '../../src/core/index.ts';
import {
  type HttpServer,
  resolveBudget,
  ShutdownBudgetError,
  serveHttp,
} from '../../src/http/index.ts';
import { listen } from '../../src/net/index.ts';
import { delay, get, until } from './helpers.ts';
import { checkLeaks } from '../helpers/leaks.ts';

const local = { port: 0, host: '127.0.0.1' };

// A test that fails (or is cut at its timeout) must not leave its server running: the file
// would never end. Every server a test starts is shut down after it, bounded by the
// cancel grace (the drain deadline is at once).
const started = new Set<HttpServer>();
afterEach(async () => {
  for (const s of started) if (s.state !== 'stopped') await s.shutdown({ drainTimeoutMs: 0 });
  started.clear();
});

checkLeaks();

/** `serveHttp`, shut down after the test whatever its outcome. */
async function serve(...args: Parameters<typeof serveHttp>): Promise<HttpServer> {
  const s = await serveHttp(...args);
  started.add(s);
  return s;
}

/** For a test that would wait forever on a broken server: it fails at this bound instead. */
const bounded = { timeout: 20_000 };

/** A raw request that the client abandons once the handler has started. */
async function abandon(port: number, path: string, started: () => boolean): Promise<void> {
  const s = net.connect({ port, host: '127.0.0.1' });
  s.on('error', () => {});
  s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
  await until(started);
  s.destroy();
}

describe('serveHttp', () => {
  test('serves on the bound port and shuts down with a report', async () => {
    const server = await serve((_req, res) => res.end('hello'), local);
    assert.equal(typeof server.port, 'number');
    const agent = new http.Agent({ keepAlive: true });
    const r = await get(server.port!, '/', agent);
    assert.equal(r.body, 'hello');
    const report = await server.shutdown({ drainTimeoutMs: 5000 });
    assert.equal(report.atStart.idle, 1);
    assert.equal(report.deadlineReached, false);
    assert.equal(server.state, 'stopped');
    agent.destroy();
  });

  test(
    'a client that disconnects mid-request aborts the handler’s signal and its finally runs',
    bounded,
    async () => {
      let aborted = false;
      let cleaned = false;
      let started = false;
      const server = await serve(async (_req, res) => {
        started = true;
        currentSignal().addEventListener('abort', () => (aborted = true));
        try {
          await sleep(30_000);
          res.end('too late');
        } finally {
          cleaned = true;
        }
      }, local);
      await abandon(server.port!, '/', () => started);
      assert.ok(await until(() => cleaned), 'finally ran');
      assert.equal(aborted, true);
      const report = await server.shutdown();
      assert.equal(report.requestsCancelled, 0);
    },
  );

  test(
    'a task the handler spawned is cancelled with its request when the client goes away',
    bounded,
    async () => {
      let childCleaned = false;
      let started = false;
      const server = await serve(async (_req, res) => {
        const child = spawn(async () => {
          started = true;
          try {
            await sleep(30_000);
          } finally {
            childCleaned = true;
          }
        });
        await child.result();
        res.end('never');
      }, local);
      await abandon(server.port!, '/', () => started);
      assert.ok(await until(() => childCleaned), "the child's finally ran");
      await server.shutdown();
    },
  );

  test(
    'a handler in a quiesce sleep is cancelled at the drain deadline and cleans up; its client gets a 503',
    bounded,
    async () => {
      let cleaned = false;
      const server = await serve(
        async (_req, res) => {
          try {
            await sleep(60_000);
            res.end('never');
          } finally {
            cleaned = true;
          }
        },
        local,
        { cancelGraceMs: 2000 },
      );
      const agent = new http.Agent({ keepAlive: true });
      const r = get(server.port!, '/', agent);
      await until(() => server.stats().requestsRunning === 1);
      const report = await server.shutdown({ drainTimeoutMs: 200 });
      assert.equal(cleaned, true);
      assert.equal((await r).status, 503);
      assert.equal(report.requestsCancelled, 1);
      assert.equal(report.deadlineReached, true);
      assert.equal(report.forcedCloses, 0, 'the 503 went out within the grace');
      agent.destroy();
    },
  );

  test(
    'a handler that ignores everything does not hold shutdown past deadline + grace',
    bounded,
    async () => {
      const server = await serve(() => new Promise(() => {}), local, { cancelGraceMs: 200 });
      const agent = new http.Agent({ keepAlive: true });
      const r = get(server.port!, '/', agent).catch((e: Error & { code?: string }) => e.code);
      await until(() => server.stats().requestsRunning === 1);
      const t0 = performance.now();
      const report = await server.shutdown({ drainTimeoutMs: 200 });
      const took = performance.now() - t0;
      assert.ok(took < 5000, `took ${took} ms`);
      assert.equal(await r, 'ECONNRESET');
      assert.equal(report.forcedCloses, 1);
      assert.equal(report.handlersAbandoned, 1);
      assert.equal(server.stats().requestsRunning, 0);
      agent.destroy();
    },
  );

  test(
    'requests a client pipelines into a draining connection are all answered; only the last says Connection: close',
    bounded,
    async () => {
      const server = await serve(async (req, res) => {
        await sleep(50);
        res.end(`ok ${req.url}`);
      }, local);
      const s = net.connect({ port: server.port!, host: '127.0.0.1' });
      let data = '';
      s.setEncoding('utf8');
      s.on('data', (x: string) => (data += x));
      s.on('end', () => s.end());
      const closed = new Promise((r) => s.once('close', r));
      const send = (paths: string[]) =>
        s.write(paths.map((p) => `GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`).join(''));
      send(['/0']);
      await until(() => data.includes('ok /0'));
      const stopped = server.shutdown({ drainTimeoutMs: 5000 });
      await until(() => server.state === 'draining');
      send(['/1', '/2', '/3']); // within minIdleMs of /0: the connection is still open
      const report = await stopped;
      await closed;
      assert.deepEqual(data.match(/ok \/\d/g), ['ok /0', 'ok /1', 'ok /2', 'ok /3']);
      assert.deepEqual(data.match(/connection: \S+/gi), [
        'Connection: keep-alive',
        'Connection: keep-alive',
        'Connection: keep-alive',
        'Connection: close',
      ]);
      assert.equal(report.requestsCompleted, 3);
      assert.equal(report.pipelinedDropped, 0);
      assert.equal(report.forcedCloses, 0);
    },
  );

  test('requestTimeoutMs cancels a request task at its deadline', bounded, async () => {
    let cause: unknown;
    const server = await serve(
      async (_req, res) => {
        try {
          await sleep(30_000);
        } catch (e) {
          cause = (e as { cancelCause?: { kind: string } }).cancelCause?.kind;
          throw e;
        } finally {
          res.end();
        }
      },
      local,
      { requestTimeoutMs: 100 },
    );
    const agent = new http.Agent({ keepAlive: true });
    await get(server.port!, '/', agent);
    assert.equal(cause, 'deadline');
    await server.shutdown();
    agent.destroy();
  });

  test(
    'cancelling the task that started the server is a graceful shutdown: the request in flight completes',
    bounded,
    async () => {
      let server!: HttpServer;
      const main = spawn(async () => {
        server = await serve(async (_req, res) => {
          await delay(300);
          res.end('done');
        }, local);
        await server.wait();
      });
      await until(() => server !== undefined);
      const agent = new http.Agent({ keepAlive: true });
      const r = get(server.port!, '/', agent);
      await until(() => server.stats().requestsRunning === 1);
      await main.cancel();
      const got = await r;
      assert.equal(got.body, 'done');
      assert.equal(got.connection, 'close');
      assert.equal(server.state, 'stopped');
      agent.destroy();
    },
  );

  test('run(main) + SIGTERM-style cancellation and await using both drain', async () => {
    let port = 0;
    await run(
      async () => {
        await using server = await serve((_req, res) => res.end('ok'), local);
        port = server.port!;
        const agent = new http.Agent({ keepAlive: true });
        assert.equal((await get(port, '/', agent)).body, 'ok');
        agent.destroy();
      },
      { signals: [] },
    );
    await assert.rejects(
      get(port, '/', new http.Agent()),
      (e: Error & { code?: string }) => e.code === 'ECONNREFUSED',
    );
  });

  test('serves a quiesce/net Listener (so an inherited socket or a unix path works too)', async () => {
    const listener = await listen({ host: '127.0.0.1', port: 0 });
    const server = await serve((_req, res) => res.end('via listener'), { listener });
    const agent = new http.Agent({ keepAlive: true });
    assert.equal((await get(server.port!, '/', agent)).body, 'via listener');
    const report = await server.shutdown();
    assert.equal(report.idleClosed, 1);
    assert.equal(listener.closed, true);
    agent.destroy();
  });

  test('serves a unix socket through a net Listener, and drains it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'quiesce-http-'));
    try {
      const listener = await listen({ path: join(dir, 'http.sock') });
      const server = await serve((_req, res) => res.end('via unix'), { listener });
      assert.equal(server.port, undefined);
      const agent = new http.Agent({ keepAlive: true });
      const body = await new Promise<string>((resolve, reject) => {
        http
          .get({ socketPath: join(dir, 'http.sock'), path: '/', agent }, (res) => {
            let b = '';
            res.on('data', (d) => (b += d));
            res.on('end', () => resolve(b));
          })
          .on('error', reject);
      });
      assert.equal(body, 'via unix');
      const report = await server.shutdown();
      assert.equal(report.idleClosed, 1);
      agent.destroy();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('adopts a listening http.Server as it is: its own request listener runs as a task', async () => {
    let signalSeen = false;
    const node = http.createServer((_req, res) => {
      signalSeen = currentSignal() instanceof AbortSignal;
      res.end('adopted');
    });
    await new Promise<void>((r) => node.listen(0, '127.0.0.1', r));
    const server = await serve(null, node);
    const agent = new http.Agent({ keepAlive: true });
    assert.equal((await get(server.port!, '/', agent)).body, 'adopted');
    assert.equal(signalSeen, true);
    await server.shutdown();
    assert.equal(node.listening, false);
    agent.destroy();
  });

  test('readiness fails from the shutdown request on while serving goes on; liveness passes until stopped', async () => {
    const server = await serve((_req, res) => res.end('app'), local, {
      readinessPath: '/readyz',
      livenessPath: '/livez',
      propagationMs: 400,
      startReady: false,
    });
    const port = server.port!;
    const agent = new http.Agent(); // probes, like kubelet, open a connection each
    assert.equal((await get(port, '/readyz', agent)).status, 503, 'starting');
    assert.equal((await get(port, '/livez', agent)).status, 200);
    server.setReady(true);
    assert.equal((await get(port, '/readyz', agent)).status, 200, 'serving');
    const stopped = server.shutdown();
    assert.equal(server.state, 'propagating');
    const ready = await get(port, '/readyz', agent);
    assert.equal(ready.status, 503, 'draining');
    assert.equal(ready.body, 'draining\n');
    assert.equal((await get(port, '/livez', agent)).status, 200, 'alive while draining');
    assert.equal((await get(port, '/', agent)).body, 'app', 'still serving during propagation');
    const report = await stopped;
    assert.ok(report.propagationMs >= 350, `propagation ${report.propagationMs}`);
  });

  test('propagation ends early once new connections stop (propagationQuietMs)', async () => {
    const server = await serve((_req, res) => res.end('app'), local, {
      propagationMs: 20_000,
      propagationQuietMs: 200,
    });
    const report = await server.shutdown();
    assert.ok(report.propagationMs < 5000, `propagation ${report.propagationMs}`);
  });

  test('the shutdown budget is split into phases and checked at start-up', async () => {
    assert.deepEqual(resolveBudget({ shutdownBudgetMs: 30_000, propagationMs: 5000 }, {}), {
      budgetMs: 30_000,
      propagationMs: 5000,
      drainTimeoutMs: 23_000,
      cancelGraceMs: 2000,
    });
    assert.equal(
      resolveBudget({}, { QUIESCE_SHUTDOWN_BUDGET_SECONDS: '10' }).drainTimeoutMs,
      8000,
      'from the environment (Kubernetes grace period)',
    );
    assert.equal(resolveBudget({}, {}).drainTimeoutMs, 30_000);
    assert.throws(
      () => resolveBudget({ shutdownBudgetMs: 5000, propagationMs: 4000 }, {}),
      (e: Error) =>
        e instanceof ShutdownBudgetError &&
        /budget of 5000 ms cannot hold propagationMs 4000/.test(e.message),
    );
    assert.throws(
      () => resolveBudget({}, { QUIESCE_SHUTDOWN_BUDGET_SECONDS: 'thirty' }),
      /QUIESCE_SHUTDOWN_BUDGET_SECONDS must be a number of seconds/,
    );
    await assert.rejects(
      serveHttp(() => {}, local, { shutdownBudgetMs: 1000, drainTimeoutMs: 5000 }),
      ShutdownBudgetError,
    );
  });

  test('warns when keepAliveTimeout is not above the load balancer idle timeout', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => warnings.push(w.code ?? '');
    process.on('warning', onWarning);
    try {
      const a = await serve(() => {}, local, { loadBalancerIdleTimeoutMs: 60_000 });
      const b = await serve(() => {}, local, {
        loadBalancerIdleTimeoutMs: 60_000,
        keepAliveTimeoutMs: 65_000,
      });
      await delay(20);
      await a.shutdown();
      await b.shutdown();
    } finally {
      process.off('warning', onWarning);
    }
    assert.deepEqual(warnings, ['QUIESCE_KEEPALIVE_TIMEOUT']);
  });

  test('user mistakes are one-line errors', async () => {
    await assert.rejects(serveHttp('app' as never, local), /app must be a request listener/);
    await assert.rejects(
      serveHttp(() => {}, {} as never),
      /target must be/,
    );
    await assert.rejects(
      serveHttp(() => {}, { port: -1 }),
      /port must be an integer/,
    );
    await assert.rejects(
      serveHttp(() => {}, local, { readinessPath: 'readyz' }),
      /readinessPath must be a path/,
    );
    const node = http.createServer();
    await assert.rejects(serveHttp(null, node), /must already listen/);
    const taken = await serve(() => {}, local);
    await assert.rejects(
      serveHttp(() => {}, { port: taken.port!, host: '127.0.0.1' }),
      /cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE \(another process listens there\)/,
    );
    await taken.shutdown();
  });
});

describe('serveHttp, long-lived responses', () => {
  test('an SSE stream ends itself on drainSignal, within the drain, and its client sees the last event', async () => {
    let server!: HttpServer;
    server = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const tick = setInterval(() => res.write('data: tick\n\n'), 20);
      server.drainSignal.addEventListener('abort', () => {
        clearInterval(tick);
        res.end('event: bye\ndata: draining\n\n');
      });
    }, local);
    const seen = new Promise<string>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: server.port, path: '/events' }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => resolve(text));
        })
        .on('error', reject);
    });
    await until(() => server.stats().requestsRunning === 1);
    await delay(60);
    const report = await server.shutdown({ drainTimeoutMs: 5000 });
    assert.match(await seen, /data: tick[\s\S]*event: bye\ndata: draining\n\n$/);
    assert.equal(report.deadlineReached, false);
    assert.equal(report.requestsCompleted, 1);
  });
});
