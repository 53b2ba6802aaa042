import assert from 'node:assert/strict';
import type net from 'node:net';
import { afterEach, beforeEach, describe, test } from 'node:test';
import {
  boundedCleanup,
  currentTask,
  type Diagnostic,
  onDiagnostic,
  sleep,
  spawn,
} from '../../src/core/index.ts';
import {
  type Connection,
  ConnectionError,
  type Handler,
  listen,
  type ServeOptions,
  serve,
} from '../../src/net/index.ts';
import {
  assertNoLeaks,
  type ResourceSnapshot,
  snapshotResources,
} from '../../src/testing/index.ts';
import { closedOf, collect, converse, delay, dial, type Seen, until } from './helpers.ts';

let before: ResourceSnapshot;
beforeEach(() => {
  before = snapshotResources();
});
afterEach(() => assertNoLeaks(before, 1000));

async function start(handler: Handler, options?: ServeOptions) {
  const listener = await listen({ host: '127.0.0.1', port: 0 });
  const server = serve(listener, handler, options);
  return { server, port: listener.port! };
}

/** Tries to connect; resolves with the error code if refused, or 'connected'. */
function tryConnect(port: number): Promise<string> {
  return dial(port).then(
    (s) => {
      s.destroy();
      return 'connected';
    },
    (e: { code?: string }) => e.code ?? 'error',
  );
}

/** A gate a test opens to let handlers go on. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => {
    open = r;
  });
  return { open, opened };
}

describe('serve: graceful shutdown', { timeout: 30_000 }, () => {
  test("each connection's task is named <server>/conn-<connection id>, child of the server", async () => {
    const names: string[] = [];
    const { server, port } = await start(
      (conn) => {
        const t = currentTask()!;
        names.push(`${t.name} ${conn.id} ${t.parent?.name}`);
      },
      { name: 'echo' },
    );
    for (let i = 0; i < 2; i++) (await dial(port)).end();
    assert.ok(await until(() => names.length === 2));
    await server.shutdown();
    for (const n of names) {
      const [name, id, parent] = n.split(' ');
      assert.equal(name, `echo/conn-${id}`);
      assert.equal(parent, 'echo');
    }
  });

  test('100 connections in progress all complete, new ones are refused, then the server exits', async () => {
    const { server, port } = await start(async (conn) => {
      await conn.write('Hello.\n');
      const line = await conn.readLine();
      await conn.write(`you said ${line}\n`);
      await conn.write('Goodbye.\n');
    });
    const clients: net.Socket[] = [];
    const seen: Promise<Seen>[] = [];
    for (let i = 0; i < 100; i++) {
      const s = await dial(port);
      clients.push(s);
      seen.push(collect(s));
    }
    assert.ok(await until(() => server.stats.accepted === 100));
    const report = server.shutdown({ drainTimeoutMs: 10_000 });
    assert.equal(server.draining, true);
    await delay(20);
    assert.equal(await tryConnect(port), 'ECONNREFUSED');
    assert.equal(server.stopped, false, 'the server waits for its connections');
    clients.forEach((s, i) => {
      s.write(`line ${i}\n`);
    });
    const all = await Promise.all(seen);
    all.forEach((s, i) => {
      assert.equal(s.data, `Hello.\nyou said line ${i}\nGoodbye.\n`);
      assert.equal(s.error, undefined);
      assert.equal(s.ended, true);
    });
    const r = await report;
    assert.deepEqual(
      { drained: r.drained, cancelled: r.cancelled, deadline: r.deadlineReached },
      { drained: 100, cancelled: 0, deadline: false },
    );
    assert.equal(server.stopped, true);
    assert.equal(server.stats.completed, 100);
  });

  test('a shutdown that lands between accept and registration still serves that connection', async () => {
    let server!: ReturnType<typeof serve>;
    let served = 0;
    const listener = await listen({ host: '127.0.0.1', port: 0 });
    // Runs in the accept callback before the server registers the connection: the moment a
    // server that registers connections later would lose this one.
    listener.server.prependOnceListener('connection', () => void server.shutdown());
    server = serve(listener, async (conn) => {
      await conn.write('Hello.\nGoodbye.\n');
      served++;
    });
    const seen = await converse(listener.port!);
    await server.wait();
    assert.equal(seen.data, 'Hello.\nGoodbye.\n');
    assert.equal(served, 1);
  });

  test('a burst of connections in flight when the shutdown is requested is served, none reset', async () => {
    let first = true;
    let served = 0;
    // The first handler asks for shutdown from inside the accept callback, while the rest
    // of the burst still sits in the kernel's accept queue.
    const { server, port } = await start(async (conn) => {
      if (first) {
        first = false;
        void server.shutdown();
      }
      await conn.write('Hello.\n');
      await conn.write('Goodbye.\n');
      served++;
    });
    const results = await Promise.all(Array.from({ length: 30 }, () => converse(port)));
    await server.wait();
    for (const s of results) {
      assert.equal(s.error, undefined, 'no connection may be reset');
      assert.equal(s.data, 'Hello.\nGoodbye.\n');
    }
    assert.equal(served, 30);
    assert.equal(await tryConnect(port), 'ECONNREFUSED');
  });

  test('connections racing a shutdown are served completely or refused, never cut off', async () => {
    // Invariant: every client gets the whole reply, or is turned away before any byte.
    const { server, port } = await start(async (conn) => {
      await conn.write('Hello.\n');
      await delay(5);
      await conn.write('Goodbye.\n');
    });
    const results: Promise<Seen>[] = [];
    for (let i = 0; i < 60; i++) {
      results.push(converse(port));
      if (i === 30) void server.shutdown();
      if (i % 5 === 0) await delay(1);
    }
    const all = await Promise.all(results);
    await server.wait();
    let full = 0;
    for (const s of all) {
      if (s.data === 'Hello.\nGoodbye.\n') full++;
      else assert.equal(s.data, '', `a connection was cut off: ${JSON.stringify(s)}`);
    }
    assert.equal(full, server.stats.accepted);
    assert.ok(full >= 31);
  });

  test('a handler that never finishes is cancelled at the deadline and its cleanup runs', async () => {
    let cleaned = false;
    const { server, port } = await start(async (conn) => {
      try {
        await conn.write('working\n');
        await sleep(Number.POSITIVE_INFINITY);
      } finally {
        // Cleanup that must talk to the peer runs shielded, with its own bound.
        await boundedCleanup(1000, () => conn.write('cleanup\n'));
        cleaned = true;
      }
    });
    const s = await dial(port);
    const seen = collect(s);
    assert.ok(await until(() => server.connections === 1));
    const t0 = performance.now();
    const r = await server.shutdown({ drainTimeoutMs: 100 });
    assert.ok(performance.now() - t0 >= 90);
    assert.equal(r.cancelled, 1);
    assert.equal(r.deadlineReached, true);
    assert.equal(cleaned, true);
    const got = await seen;
    assert.equal(got.data, 'working\ncleanup\n');
    assert.equal(got.error, undefined);
  });

  test('the report counts as cancelled only handlers still running (or waiting for a slot) at the deadline', async () => {
    const { server, port } = await start(
      async (conn) => {
        if ((await conn.readLine()) === 'hang') await sleep(Number.POSITIVE_INFINITY);
        await conn.write('bye\n');
      },
      { maxConnections: 1, closeTimeoutMs: 800 },
    );
    const clients: net.Socket[] = [];
    try {
      // Its handler returns, then its close waits for an EOF this peer never sends.
      const quiet = await dial(port, { allowHalfOpen: true });
      clients.push(quiet);
      quiet.on('error', () => {});
      quiet.write('done\n');
      assert.ok(await until(() => server.stats.completed === 1));
      const hung = await dial(port); // takes the slot and never finishes
      clients.push(hung);
      const seen = [collect(hung)];
      hung.write('hang\n');
      const waiting = await dial(port); // waits for the slot until the deadline
      clients.push(waiting);
      seen.push(collect(waiting));
      assert.ok(await until(() => server.stats.waiting === 1));
      const r = await server.shutdown({ drainTimeoutMs: 100 });
      assert.equal(r.deadlineReached, true);
      assert.deepEqual(
        { drained: r.drained, cancelled: r.cancelled },
        { drained: 1, cancelled: 2 },
      );
      await Promise.all(seen);
    } finally {
      for (const c of clients) c.destroy();
      await Promise.all([server.shutdown({ drainTimeoutMs: 0 }), ...clients.map(closedOf)]);
    }
  });

  test('a later shutdown with a shorter deadline brings the deadline forward', async () => {
    const { server, port } = await start(() => sleep(Number.POSITIVE_INFINITY));
    const s = await dial(port);
    const seen = collect(s);
    assert.ok(await until(() => server.connections === 1));
    const slow = server.shutdown({ drainTimeoutMs: 60_000 });
    const t0 = performance.now();
    const r = await server.shutdown({ drainTimeoutMs: 50 });
    assert.ok(performance.now() - t0 < 5000);
    assert.equal(r.cancelled, 1);
    assert.equal(await slow, r);
    await seen;
  });

  test('cancelling the task that started the server drains it instead of cutting connections', async () => {
    const g = gate();
    let server!: ReturnType<typeof serve>;
    const listener = await listen({ host: '127.0.0.1', port: 0 });
    const main = spawn(async () => {
      server = serve(listener, async (conn) => {
        await conn.write('Hello.\n');
        await g.opened;
        await conn.write('Goodbye.\n');
      });
      await server.wait();
    });
    const s = await dial(listener.port!);
    const seen = collect(s);
    assert.ok(await until(() => server?.connections === 1));
    const cancelled = main.cancel('SIGTERM');
    await delay(20);
    assert.equal(server.draining, true);
    assert.equal(main.done, false, 'the task waits for its server to drain');
    assert.equal(await tryConnect(listener.port!), 'ECONNREFUSED');
    g.open();
    await cancelled;
    assert.equal((await seen).data, 'Hello.\nGoodbye.\n');
    assert.equal(server.stopped, true);
  });

  test('long-lived handlers hear about the drain: readWithin returns shutdown', async () => {
    const { server, port } = await start(async (conn) => {
      for (;;) {
        const r = await conn.readWithin(60_000);
        if (r.kind === 'data') await conn.write(r.data);
        else if (r.kind === 'shutdown') {
          await conn.write('server going away\n');
          return;
        } else return;
      }
    });
    const s = await dial(port);
    const seen = collect(s);
    s.write('ping\n');
    assert.ok(await until(() => server.stats.accepted === 1));
    await delay(20);
    const r = await server.shutdown({ drainTimeoutMs: 5000 });
    assert.equal(r.cancelled, 0);
    assert.equal((await seen).data, 'ping\nserver going away\n');
  });

  test('conn.draining, drainSignal and waitDraining tell handlers', async () => {
    const log: string[] = [];
    const { server, port } = await start(async (conn) => {
      log.push(`draining=${conn.draining}`);
      conn.drainSignal.addEventListener('abort', () => log.push('signal'));
      await conn.waitDraining();
      log.push(`draining=${conn.draining}`);
    });
    const seen = converse(port);
    assert.ok(await until(() => log.length === 1));
    await server.shutdown();
    await seen;
    assert.deepEqual(log, ['draining=false', 'signal', 'draining=true']);
  });

  test('await using shuts the server down at scope exit', async () => {
    let port = 0;
    {
      const listener = await listen({ host: '127.0.0.1', port: 0 });
      port = listener.port!;
      await using server = serve(listener, async (conn) => {
        await conn.write('Hello.\n');
      });
      assert.equal((await converse(port)).data, 'Hello.\n');
      assert.equal(server.draining, false);
    }
    assert.equal(await tryConnect(port), 'ECONNREFUSED');
  });
});

describe('serve: failures stay contained', { timeout: 30_000 }, () => {
  test('a handler that throws is reported, its peer sees an orderly close, the server lives on', async () => {
    const errors: unknown[] = [];
    const { server, port } = await start(
      async (conn) => {
        await conn.write('Hello.\n');
        if ((await conn.readLine()) === 'boom') throw new Error('handler bug');
        await conn.write('fine\n');
      },
      { onError: (e) => errors.push(e) },
    );
    const bad = await converse(port, 'boom\n');
    assert.equal(bad.data, 'Hello.\n');
    assert.equal(bad.error, undefined);
    const good = await converse(port, 'hi\n');
    assert.equal(good.data, 'Hello.\nfine\n');
    assert.equal(errors.length, 1);
    assert.equal((errors[0] as Error).message, 'handler bug');
    assert.equal(server.stats.failed, 1);
    await server.shutdown();
  });

  test('without onError, a handler error becomes a QUIESCE_HANDLER_ERROR diagnostic', async () => {
    const seen: Diagnostic[] = [];
    const restore = onDiagnostic((d) => seen.push(d));
    try {
      const { server, port } = await start(() => {
        throw new Error('sync throw');
      });
      await converse(port);
      assert.ok(await until(() => seen.length === 1));
      assert.equal(seen[0].code, 'QUIESCE_HANDLER_ERROR');
      assert.equal((seen[0].error as Error).message, 'sync throw');
      await server.shutdown();
    } finally {
      restore();
    }
  });

  test('an async onError or onAcceptError that rejects is a QUIESCE_HANDLER_ERROR diagnostic, never an unhandled rejection', async () => {
    const seen: Diagnostic[] = [];
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    const restore = onDiagnostic((d) => seen.push(d));
    try {
      const { server, port } = await start(
        () => {
          throw new Error('handler failed');
        },
        {
          onError: async () => {
            await Promise.resolve();
            throw new Error('log sink unavailable');
          },
          onAcceptError: () => Promise.reject(new Error('accept log sink unavailable')),
        },
      );
      await converse(port);
      server.listener.server.emit(
        'error',
        Object.assign(new Error('accept EMFILE'), { code: 'EMFILE', syscall: 'accept' }),
      );
      assert.ok(await until(() => seen.length === 2 || unhandled.length > 0));
      await delay(20); // an unhandled rejection is reported a tick after the fact
      assert.deepEqual(unhandled, []);
      assert.deepEqual(seen.map((d) => [d.code, (d.error as Error).message]).sort(), [
        ['QUIESCE_HANDLER_ERROR', 'accept log sink unavailable'],
        ['QUIESCE_HANDLER_ERROR', 'log sink unavailable'],
      ]);
      assert.match(seen.find((d) => /onError/.test(d.message))!.message, /handler failed/);
      assert.equal(server.stats.failed, 1);
      await server.shutdown();
    } finally {
      restore();
      process.off('unhandledRejection', onUnhandled);
    }
  });

  test('onError and onAcceptError must be functions', async () => {
    const listener = await listen({ host: '127.0.0.1', port: 0 });
    try {
      assert.throws(
        () => serve(listener, () => {}, { onError: 'log' as never }),
        /onError must be a function/,
      );
      assert.throws(
        () => serve(listener, () => {}, { onAcceptError: {} as never }),
        /onAcceptError must be a function/,
      );
    } finally {
      await listener.close();
    }
  });

  test('a peer that resets mid-write fails that handler with ConnectionError only', async () => {
    const errors: unknown[] = [];
    const { server, port } = await start(
      async (conn) => {
        const chunk = Buffer.alloc(256 * 1024, 1);
        for (let i = 0; i < 10_000; i++) await conn.write(chunk);
      },
      { onError: (e) => errors.push(e) },
    );
    const s = await dial(port);
    s.on('error', () => {});
    s.pause();
    assert.ok(await until(() => server.connections === 1));
    await delay(30);
    s.resetAndDestroy();
    assert.ok(await until(() => errors.length === 1));
    assert.ok(errors[0] instanceof ConnectionError);
    assert.ok(await until(() => server.connections === 0));
    await server.shutdown();
  });

  test('a slowloris client is cut off at the idle limit, counted, not reported as a failure', async () => {
    const errors: unknown[] = [];
    const { server, port } = await start(
      async (conn) => {
        await conn.readLine();
        await conn.write('never\n');
      },
      { idleTimeoutMs: 250, onError: (e) => errors.push(e) },
    );
    const s = await dial(port);
    const seen = collect(s);
    const drip = setInterval(() => s.write('x'), 30);
    const t0 = performance.now();
    const got = await seen;
    clearInterval(drip);
    const ms = performance.now() - t0;
    assert.ok(ms >= 240 && ms < 3000, `held for ${ms} ms`);
    assert.equal(got.data, '');
    assert.equal(server.stats.idleTimeouts, 1);
    assert.deepEqual(errors, []);
    await server.shutdown();
  });
});

describe('serve: limits', { timeout: 30_000 }, () => {
  test('at maxConnections new connections wait unread for a slot and are never dropped', async () => {
    const gates: (() => void)[] = [];
    let running = 0;
    let peak = 0;
    const { server, port } = await start(
      async (conn: Connection) => {
        running++;
        peak = Math.max(peak, running);
        await new Promise<void>((r) => gates.push(r));
        await conn.write('served\n');
        running--;
      },
      { maxConnections: 2 },
    );
    const seen = Array.from({ length: 6 }, () => converse(port));
    assert.ok(await until(() => server.stats.accepted === 6 && gates.length === 2));
    assert.equal(server.stats.waiting, 4);
    while (gates.length > 0 || server.connections > 0) {
      gates.shift()?.();
      await delay(10);
    }
    for (const s of await Promise.all(seen)) assert.equal(s.data, 'served\n');
    assert.equal(peak, 2);
    await server.shutdown();
  });

  test('connections waiting for a slot at shutdown are still served within the drain', async () => {
    const { server, port } = await start(
      async (conn) => {
        await delay(30);
        await conn.write('served\n');
      },
      { maxConnections: 1 },
    );
    const seen = Array.from({ length: 4 }, () => converse(port));
    assert.ok(await until(() => server.stats.accepted === 4));
    const r = await server.shutdown({ drainTimeoutMs: 5000 });
    assert.equal(r.cancelled, 0);
    for (const s of await Promise.all(seen)) assert.equal(s.data, 'served\n');
  });
});
