/**
 * A connection handler cancelled at the drain deadline is cleaned up in its cleanup window:
 * its `finally` and release clauses can still talk to the peer (real sockets, 127.0.0.1).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { bracket, isCancellation, sleep, spawn } from '../../src/core/index.ts';
import { type Connection, listen, type ReadResult, serve } from '../../src/net/index.ts';
import { injectCancellation } from '../../src/testing/index.ts';
import { checkLeaks } from '../helpers/leaks.ts';
import { collect, dial, pair } from './helpers.ts';

checkLeaks();

const bounded = { timeout: 20_000 };

/** A server on port 0 whose handler runs `handler`; shut down with a 50 ms drain deadline. */
async function withServer(
  handler: (conn: Connection) => Promise<void>,
  drive: (port: number) => Promise<void>,
): Promise<void> {
  const listener = await listen({ host: '127.0.0.1', port: 0 });
  const server = serve(listener, handler, { closeTimeoutMs: 1000 });
  try {
    await drive(listener.port!);
  } finally {
    await server.shutdown({ drainTimeoutMs: 50 });
  }
}

describe('net: cleanup after the drain deadline', bounded, () => {
  test('a handler cancelled at the drain deadline writes its farewell in finally', async () => {
    const listener = await listen({ host: '127.0.0.1', port: 0 });
    const server = serve(listener, async (conn) => {
      try {
        await conn.readLine(); // the client never sends a line
      } finally {
        await conn.write('bye\n');
      }
    });
    const client = await dial(listener.port!);
    const seen = collect(client);
    await sleep(20);
    const report = await server.shutdown({ drainTimeoutMs: 50 });
    assert.equal(report.cancelled, 1);
    const s = await seen;
    assert.equal(s.data, 'bye\n');
    assert.equal(s.ended, true);
    assert.equal(s.error, undefined, 'closed gracefully, no reset');
  });

  test('its release waits for the peer to acknowledge the farewell, then closes gracefully', async () => {
    let ack = '';
    let outcome = '';
    await withServer(
      (conn) =>
        bracket(
          () => conn,
          async (c) => {
            // Runs masked after the drain deadline cancelled `use`: a blocking read is fine.
            await c.write('bye\n');
            ack = (await c.readLine()) ?? '';
            outcome = (await c.gracefulClose({ timeoutMs: 1000 })).outcome;
          },
          (c) => c.readLine().then(() => {}),
        ),
      async (port) => {
        const client = await dial(port, { allowHalfOpen: true });
        client.setEncoding('utf8');
        client.on('data', (d: string) => {
          if (d.includes('bye')) client.end('ack\n');
        });
        client.on('end', () => client.destroy());
        await sleep(20);
      },
    );
    assert.equal(ack, 'ack');
    assert.equal(outcome, 'eof', 'the peer closed its side: no timeout, no reset');
  });

  test('readWithin in cleanup waits for data, not the drain: the peer can answer the farewell', async () => {
    let answer: ReadResult | undefined;
    await withServer(
      async (conn) => {
        try {
          await conn.readLine();
        } finally {
          await conn.write('bye?\n');
          answer = await conn.readWithin(2000);
        }
      },
      async (port) => {
        const client = await dial(port, { allowHalfOpen: true });
        client.setEncoding('utf8');
        client.on('data', (d: string) => {
          if (d.includes('bye?')) client.end('ok\n');
        });
        client.on('end', () => client.destroy());
        await sleep(20);
      },
    );
    assert.equal(answer?.kind, 'data');
    assert.equal(answer?.kind === 'data' ? answer.data.toString() : '', 'ok\n');
  });

  test("cancelling the server's starting task drains with drainTimeoutMs, not the 5 s cleanup window", async () => {
    // The owner's cleanup window (100 ms) is shorter than the handler (300 ms), the drain
    // deadline (2 s) longer: the server's own deadline is the one that counts.
    const listener = await listen({ host: '127.0.0.1', port: 0 });
    let finished = false;
    const owner = spawn(
      async () => {
        const server = serve(
          listener,
          async (conn) => {
            await sleep(300);
            await conn.write('done\n');
            finished = true;
          },
          { drainTimeoutMs: 2000 },
        );
        await server.wait();
      },
      { cleanupTimeoutMs: 100 },
    );
    const client = await dial(listener.port!);
    const seen = collect(client);
    await sleep(20);
    await owner.cancel();
    assert.equal(finished, true, 'the handler ran past the 100 ms cleanup window of the owner');
    assert.equal((await seen).data, 'done\n');
  });

  test('injected at any checkpoint of a conversation, its finally still says goodbye', async () => {
    // Invariant: whenever the conversation itself was cancelled, the peer receives the
    // farewell; it always sees an orderly end, never a reset.
    await injectCancellation({
      setup: async () => {
        const p = await pair();
        return { p, seen: collect(p.client), bodyCancelled: false };
      },
      scenario: async (s) => {
        const conn = s.p.conn;
        try {
          await conn.write('hello\n');
          await sleep(1);
          await conn.write('more\n');
          await conn.readWithin(1);
        } catch (e) {
          s.bodyCancelled = isCancellation(e);
          throw e;
        } finally {
          try {
            await conn.write('bye\n');
          } finally {
            await conn.gracefulClose({ timeoutMs: 1000 });
          }
        }
      },
      invariant: async (s, _outcome, k) => {
        const seen = await s.seen;
        if (k === 0 || s.bodyCancelled) assert.match(seen.data, /bye\n$/);
        assert.equal(seen.error, undefined);
        assert.equal(seen.ended, true);
        await s.p.close();
      },
    });
  });
});
