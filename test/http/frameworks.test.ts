/**
 * Express 5, Fastify 5, Koa and Hono's node adapter, unchanged, through serveHttp: the same
 * shutdown tests for each.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { getRequestListener } from '@hono/node-server';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import Koa from 'koa';
import { sleep } from '../../src/core/index.ts';
import { type RequestListener, serveHttp } from '../../src/http/index.ts';
import { delay, hammer, idleAndInflight, until } from './helpers.ts';
import { checkLeaks } from '../helpers/leaks.ts';

checkLeaks();

/** What each framework's app answers: `/` → ok, `/slow?ms=N` → slow after N ms, `/wait` → a quiesce sleep whose finally is recorded. */
interface Built {
  app: RequestListener;
  cleaned: () => boolean;
  started: () => boolean;
}

const ms = (url: string | undefined) =>
  Number(new URL(url ?? '/', 'http://x').searchParams.get('ms'));

function waitHandler(state: { started: boolean; cleaned: boolean }) {
  return async () => {
    state.started = true;
    try {
      await sleep(30_000);
    } finally {
      state.cleaned = true;
    }
  };
}

const frameworks: Record<string, () => Promise<Built>> = {
  async express() {
    const st = { started: false, cleaned: false };
    const app = express();
    const wait = waitHandler(st);
    app.get('/', (_req, res) => void res.send('ok'));
    app.get('/slow', async (req, res) => {
      await delay(ms(req.url));
      res.send('slow');
    });
    app.get('/wait', async (_req, res) => {
      await wait();
      res.send('never');
    });
    return { app, cleaned: () => st.cleaned, started: () => st.started };
  },
  async fastify() {
    const st = { started: false, cleaned: false };
    const f = Fastify();
    const wait = waitHandler(st);
    f.get('/', async () => 'ok');
    f.get('/slow', async (req) => {
      await delay(ms(req.url));
      return 'slow';
    });
    f.get('/wait', async () => {
      await wait();
      return 'never';
    });
    await f.ready();
    return { app: f.routing, cleaned: () => st.cleaned, started: () => st.started };
  },
  async koa() {
    const st = { started: false, cleaned: false };
    const app = new Koa();
    const wait = waitHandler(st);
    app.use(async (ctx) => {
      if (ctx.path === '/slow') {
        await delay(ms(ctx.url));
        ctx.body = 'slow';
      } else if (ctx.path === '/wait') {
        await wait();
        ctx.body = 'never';
      } else ctx.body = 'ok';
    });
    return { app: app.callback(), cleaned: () => st.cleaned, started: () => st.started };
  },
  async hono() {
    const st = { started: false, cleaned: false };
    const app = new Hono();
    const wait = waitHandler(st);
    app.get('/', (c) => c.text('ok'));
    app.get('/slow', async (c) => {
      await delay(ms(c.req.url));
      return c.text('slow');
    });
    app.get('/wait', async (c) => {
      await wait();
      return c.text('never');
    });
    return {
      app: getRequestListener(app.fetch) as RequestListener,
      cleaned: () => st.cleaned,
      started: () => st.started,
    };
  },
};

const local = { port: 0, host: '127.0.0.1' };

for (const [name, build] of Object.entries(frameworks)) {
  describe(`${name} through serveHttp`, () => {
    test('200 idle keep-alive clients + 5 in-flight 1 s: all 5 succeed with Connection: close, idle ones close cleanly, shutdown right after the last response', async () => {
      const { app } = await build();
      const server = await serveHttp(app, local);
      const { report, responses, idle, afterLastMs } = await idleAndInflight(
        server.port!,
        () => server.stats().connections.active,
        () => server.shutdown({ drainTimeoutMs: 10_000 }),
      );
      assert.deepEqual(
        responses.map((r) => [r.status, r.body, r.connection]),
        Array(5).fill([200, 'slow', 'close']),
      );
      for (const seen of idle) assert.equal(seen.error, undefined);
      assert.equal(report.requestsCompleted, 5);
      assert.equal(report.forcedCloses, 0);
      assert.ok(afterLastMs < 1000, `shutdown ${afterLastMs} ms after the last response`);
    });

    test('50 keep-alive clients hammering through shutdown: no request on a reused socket fails', async () => {
      const { app } = await build();
      const server = await serveHttp(app, local);
      let done = false;
      const load = hammer(server.port!, { stop: () => done });
      await until(() => server.stats().requests > 300);
      const report = await server.shutdown({ drainTimeoutMs: 10_000 });
      done = true;
      const out = await load;
      assert.deepEqual(out.reusedFailures, []);
      assert.ok(out.closeHeaders > 0);
      assert.equal(report.forcedCloses, 0);
    });

    test('a client that disconnects mid-request cancels the handler, and its finally runs', async () => {
      const b = await build();
      const server = await serveHttp(b.app, local);
      const s = net.connect({ port: server.port!, host: '127.0.0.1' });
      s.on('error', () => {});
      s.write('GET /wait HTTP/1.1\r\nHost: x\r\n\r\n');
      await until(b.started);
      s.destroy();
      assert.ok(await until(b.cleaned), 'finally ran');
      await server.shutdown({ drainTimeoutMs: 5000 });
    });
  });
}
