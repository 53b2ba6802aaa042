/**
 * An HTTP server as a quiesce worker: reload it under load and no request fails.
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
 * 3. On SIGTERM it stops accepting, lets in-flight requests finish, and exits 0.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { inheritedSockets } from '../src/net/index.ts';
import { notifyReady, supervisedWorker } from '../src/supervisor/index.ts';

const me = supervisedWorker();

const server = http.createServer((req, res) => {
  const delay = Number(new URL(req.url ?? '/', 'http://localhost').searchParams.get('delay') ?? 0);
  setTimeout(
    () => {
      res.setHeader('content-type', 'text/plain');
      res.end(`hello from generation ${me?.generation ?? 0}, pid ${process.pid}\n`);
    },
    Math.min(Math.max(delay, 0) || 0, 10_000),
  );
});

// The sockets handed over the systemd way (LISTEN_FDS, checked against LISTEN_PID).
const [inherited] = inheritedSockets();
const where = inherited
  ? { fd: inherited.fd }
  : { host: '127.0.0.1', port: Number(process.env.PORT ?? 8080) };

server.listen(where, async () => {
  const told = await notifyReady();
  if (!told.supervisor && !told.systemd) {
    const { port } = server.address() as AddressInfo;
    console.log(`http-worker: not supervised; listening on http://127.0.0.1:${port}/`);
  }
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    // Stop accepting; the supervisor's copy of the socket keeps the port open for the next
    // generation. In-flight requests finish; idle keep-alive connections close now.
    server.close(() => process.exit(0));
    server.closeIdleConnections();
  });
}
