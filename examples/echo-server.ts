/**
 * An echo server: sends back every byte it receives. A client silent for a minute is let go;
 * on SIGTERM/SIGINT each connection finishes the chunk in hand, is closed gracefully (the
 * client sees EOF, never a reset) and the process exits.
 *
 * Reads use `readWithin`, so the timeout, the client's EOF and the server's drain are values
 * to switch on — no exception is thrown for any of them (the event-poll style of `select`).
 *
 *   PORT=8081 node examples/echo-server.ts
 *   nc 127.0.0.1 8081
 */
import { run } from '../src/core/index.ts';
import { listenInherited, serve } from '../src/net/index.ts';

await run(async () => {
  const host = process.env.HOST ?? '127.0.0.1';
  const port = Number(process.env.PORT ?? 8081);
  const listener = await listenInherited(undefined, { fallback: { host, port } });
  const server = serve(listener, async (conn) => {
    for (;;) {
      const r = await conn.readWithin(60_000);
      if (r.kind !== 'data') return; // 'eof', 'timeout' or 'shutdown': we are done either way
      await conn.write(r.data);
    }
  });
  const a = listener.address;
  const where =
    a.kind === 'tcp' ? `${a.host}:${a.port}` : a.kind === 'unix' ? a.path : `fd ${a.fd}`;
  console.error(`echo-server: listening on ${where} (pid ${process.pid})`);
  await server.wait();
});
