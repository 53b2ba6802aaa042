/**
 * The smallest graceful server: it says "Hello." and "Goodbye." to every client. On
 * SIGTERM or SIGINT it stops accepting, finishes the conversations in progress, and exits
 * (143 / 130); a second SIGINT forces the exit.
 *
 * Listens on the socket it inherited when started with LISTEN_FDS (systemd socket activation,
 * the quiesce supervisor), otherwise on HOST:PORT (default 127.0.0.1:8080).
 *
 *   npm start                      # or: node examples/hello-server.ts
 *   nc 127.0.0.1 8080
 */
import { run } from '../src/core/index.ts';
import { listenInherited, serve } from '../src/net/index.ts';
import { notifyReady } from '../src/supervisor/index.ts';

await run(async () => {
  const host = process.env.HOST ?? '127.0.0.1';
  const port = Number(process.env.PORT ?? 8080);
  const listener = await listenInherited(undefined, { fallback: { host, port } });
  const server = serve(
    listener,
    async (conn) => {
      await conn.write('Hello.\n');
      await conn.write('Goodbye.\n');
    },
    { drainTimeoutMs: 10_000 },
  );
  const a = listener.address;
  const where =
    a.kind === 'tcp' ? `${a.host}:${a.port}` : a.kind === 'unix' ? a.path : `fd ${a.fd}`;
  console.error(`hello-server: listening on ${where} (pid ${process.pid})`);
  // Tell a supervisor (quiesce, or systemd through systemd-notify) that this worker serves;
  // a no-op when run on its own.
  await notifyReady();
  // Cancelled by SIGTERM/SIGINT here; `run` then waits for the server task to finish draining.
  await server.wait();
});
