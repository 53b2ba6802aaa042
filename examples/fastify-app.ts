/**
 * A Fastify 5 app, unchanged, served by quiesce/http: after `await app.ready()`, hand its
 * router (`app.routing`) to `serveHttp` instead of calling `app.listen`. Fastify's hooks,
 * plugins and error handling run as usual; the drain (`Connection: close`, no-race idle
 * closes) and the request cancellation are quiesce's.
 *
 *   node examples/fastify-app.ts                # HOST/PORT, default 127.0.0.1:8080
 *   curl http://127.0.0.1:8080/
 */
import Fastify from 'fastify';
import { run, sleep } from '../src/core/index.ts';
import { serveHttp } from '../src/http/index.ts';
import { listenInherited } from '../src/net/index.ts';
import { notifyReady } from '../src/supervisor/index.ts';

const app = Fastify();
app.get('/', async () => ({ hello: 'world' }));
app.get('/slow', async () => {
  await sleep(500); // a quiesce checkpoint: cancelled if the client leaves
  return { done: true };
});

await run(async () => {
  await app.ready();
  const host = process.env.HOST ?? '127.0.0.1';
  const port = Number(process.env.PORT ?? 8080);
  const listener = await listenInherited(undefined, { fallback: { host, port } });
  const server = await serveHttp(app.routing, { listener }, { drainTimeoutMs: 10_000 });
  console.error(`fastify-app: listening on ${host}:${server.port} (pid ${process.pid})`);
  await notifyReady();
  await server.wait();
  await app.close(); // Fastify's onClose hooks (database pools, …)
});
