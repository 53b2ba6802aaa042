/**
 * An Express 5 app, unchanged, served by quiesce/http. The only quiesce lines are the last
 * ones: `serveHttp(app, …)` instead of `app.listen(…)`, inside `run` so SIGTERM drains.
 *
 *   node examples/express-app.ts                # HOST/PORT, default 127.0.0.1:8080
 *   curl http://127.0.0.1:8080/users/1
 *
 * A route may use `currentSignal()` (from quiesce) for work the request's client may abandon:
 * it aborts when the client goes away, at the drain deadline, and at `requestTimeoutMs`.
 */
import express from 'express';
import { currentSignal, run } from '../src/core/index.ts';
import { serveHttp } from '../src/http/index.ts';
import { listenInherited } from '../src/net/index.ts';
import { notifyReady } from '../src/supervisor/index.ts';

const app = express();
app.get('/users/:id', (req, res) => {
  res.json({ id: req.params.id, name: `user ${req.params.id}` });
});
app.get('/report', async (_req, res) => {
  // Any API taking an AbortSignal stops when the request is cancelled.
  await new Promise((resolve, reject) => {
    const t = setTimeout(resolve, 500);
    currentSignal().addEventListener('abort', () => {
      clearTimeout(t);
      reject(currentSignal().reason);
    });
  });
  res.send('report ready\n');
});

await run(async () => {
  const host = process.env.HOST ?? '127.0.0.1';
  const port = Number(process.env.PORT ?? 8080);
  const listener = await listenInherited(undefined, { fallback: { host, port } });
  const server = await serveHttp(
    app,
    { listener },
    { drainTimeoutMs: 10_000, requestTimeoutMs: 30_000 },
  );
  console.error(`express-app: listening on ${host}:${server.port} (pid ${process.pid})`);
  await notifyReady();
  await server.wait();
});
