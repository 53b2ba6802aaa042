/**
 * A plain node:http handler served by quiesce/http: keep-alive on, and a shutdown that loses
 * no request. `/slow?ms=N` answers after N ms in a quiesce `sleep`, so a client that goes away
 * (or the drain deadline) cancels it and its `finally` runs.
 *
 *   node examples/http-plain.ts                 # HOST/PORT, default 127.0.0.1:8080
 *   curl -i http://127.0.0.1:8080/slow?ms=2000 & kill -TERM <pid>   # completes, then exit 143
 *
 * Readiness on /readyz, liveness on /livez. Under the quiesce supervisor or systemd it serves
 * the inherited socket and reports ready once it listens.
 */
import { run, sleep } from '../src/core/index.ts';
import { serveHttp } from '../src/http/index.ts';
import { listenInherited } from '../src/net/index.ts';
import { notifyReady } from '../src/supervisor/index.ts';

await run(async () => {
  const host = process.env.HOST ?? '127.0.0.1';
  const port = Number(process.env.PORT ?? 8080);
  const listener = await listenInherited(undefined, { fallback: { host, port } });
  const server = await serveHttp(
    async (req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname === '/slow') {
        try {
          await sleep(Math.min(Number(url.searchParams.get('ms')) || 0, 10_000));
        } finally {
          if (!res.writableEnded && res.destroyed)
            console.error('http-plain: client gone, cleaned up');
        }
      }
      res.setHeader('content-type', 'text/plain');
      res.end(`hello from pid ${process.pid}\n`);
    },
    { listener },
    { drainTimeoutMs: 10_000, readinessPath: '/readyz', livenessPath: '/livez' },
  );
  console.error(`http-plain: listening on ${host}:${server.port} (pid ${process.pid})`);
  await notifyReady();
  const report = await server.wait(); // SIGTERM: readiness fails, drain, exit 143
  console.error(
    `http-plain: drained (${report.requestsCompleted} requests completed during the drain)`,
  );
});
