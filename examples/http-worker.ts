/**
 * An HTTP server as a quiesce worker: reload it under load, keep-alive on, and no request fails.
 *
 *   npm run quiesce -- run --listen 127.0.0.1:8080 --workers 2 -- node examples/http-worker.ts
 *   curl http://127.0.0.1:8080/             # hello from generation 1, pid …
 *   npm run quiesce -- reload               # or: kill -HUP <supervisor pid>
 *   curl 'http://127.0.0.1:8080/?delay=2000' & npm run quiesce -- reload   # it completes
 *
 * (`npm run quiesce` runs the CLI on the repository's pinned Node 24, and puts that Node first
 * on PATH, so `node` after the second `--` is Node 24 too, whatever the system has.)
 *
 * What makes it a good worker:
 * 1. It takes its socket from the supervisor (fd 3, `LISTEN_FDS`) and binds nothing itself;
 *    run alone, it listens on $PORT (default 8080) instead.
 * 2. It says `READY=1` only once it listens (`notifyReady`), so the supervisor drains the old
 *    generation only when this one can answer.
 * 3. Keep-alive stays on: on SIGTERM quiesce/http drains it — every response from then on says
 *    `Connection: close`, idle connections are closed only when the client cannot be sending
 *    on them, in-flight requests finish — then it exits (143).
 */
import { run } from '../src/core/index.ts';
import { serveHttp } from '../src/http/index.ts';
import { listenInherited } from '../src/net/index.ts';
import { notifyReady, supervisedWorker } from '../src/supervisor/index.ts';

const me = supervisedWorker();

await run(async () => {
  // The socket handed over the systemd way (LISTEN_FDS, checked against LISTEN_PID), or $PORT.
  const listener = await listenInherited(undefined, {
    fallback: { host: '127.0.0.1', port: Number(process.env.PORT ?? 8080) },
  });
  const server = await serveHttp(
    (req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const delay = Math.min(Math.max(Number(url.searchParams.get('delay') ?? 0) || 0, 0), 10_000);
      setTimeout(() => {
        res.setHeader('content-type', 'text/plain');
        res.end(`hello from generation ${me?.generation ?? 0}, pid ${process.pid}\n`);
      }, delay);
    },
    { listener },
    { drainTimeoutMs: 10_000 },
  );
  const told = await notifyReady();
  if (!told.supervisor && !told.systemd) {
    console.log(`http-worker: not supervised; listening on http://127.0.0.1:${server.port}/`);
  }
  await server.wait();
});
