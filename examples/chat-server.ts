/**
 * A small chat room: every line a client sends goes to every other client. Broadcast is a
 * `Chan` with one duplicate (`dup()`) per client, so each client reads its own copy of every
 * message; each connection waits on three events at once with `select` — a line from its
 * client, a message from the room, the server draining — and acts on exactly one.
 * On SIGTERM/SIGINT every client is told the server is going away, and the process exits.
 *
 *   PORT=8082 node examples/chat-server.ts
 *   nc 127.0.0.1 8082        # in two terminals
 */
import { mask, run } from '../src/core/index.ts';
import { listenInherited, serve } from '../src/net/index.ts';
import { Chan, select } from '../src/sync/index.ts';

interface Message {
  readonly from: number;
  readonly text: string;
}

await run(async () => {
  const host = process.env.HOST ?? '127.0.0.1';
  const port = Number(process.env.PORT ?? 8082);
  const listener = await listenInherited(undefined, { fallback: { host, port } });
  // The room itself reads nothing: only the clients' duplicates receive messages.
  const room = new Chan<Message>();
  room.detach();
  const server = serve(
    listener,
    async (conn) => {
      await conn.write('Your name? ');
      const name = (await conn.readLine({ maxBytes: 64 }))?.trim() || `guest${conn.id}`;
      const inbox = room.dup();
      try {
        inbox.write({ from: conn.id, text: `* ${name} joined` });
        await conn.write(`* welcome, ${name}\n`);
        for (;;) {
          const r = await select(
            conn.lineEvent({ maxBytes: 1024 }),
            inbox.readEvent(),
            conn.drainingEvent(),
          );
          if (r.index === 0) {
            if (r.value === null) break; // the client left
            inbox.write({ from: conn.id, text: `${name}: ${r.value}` });
          } else if (r.index === 1) {
            if (r.value.done) break;
            const m = r.value.value;
            if (m.from !== conn.id) await conn.write(`${m.text}\n`);
          } else {
            await conn.write('* the server is shutting down, bye\n');
            break;
          }
        }
      } finally {
        // Masked: the goodbye is sent even when this connection was cancelled (a write to a
        // Chan never blocks, so the mask cannot make it hang).
        await mask(async () => {
          if (!inbox.closed) inbox.write({ from: conn.id, text: `* ${name} left` });
          inbox.detach();
        });
      }
    },
    { idleTimeoutMs: 10 * 60_000 },
  );
  const a = listener.address;
  const where =
    a.kind === 'tcp' ? `${a.host}:${a.port}` : a.kind === 'unix' ? a.path : `fd ${a.fd}`;
  console.error(`chat-server: listening on ${where} (pid ${process.pid})`);
  await server.wait();
});
