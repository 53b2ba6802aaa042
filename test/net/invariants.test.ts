/**
 * Guarantees of quiesce/net under cancellation injection: whichever checkpoint a cancellation
 * lands on, the promised end state holds and nothing leaks (tasks, deadlines, sockets, timers).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { adopt, bracket, sleep } from '../../src/core/index.ts';
import { listen, type Server, serve } from '../../src/net/index.ts';
import { injectCancellation } from '../../src/testing/index.ts';
import { converse, type Seen } from './helpers.ts';
import { checkLeaks } from '../helpers/leaks.ts';

checkLeaks();

describe('invariants under cancellation', { timeout: 60_000 }, () => {
  test('cancelling the owner at any checkpoint drains its server: conversations complete, nothing leaks', async () => {
    // Invariant: every conversation started is answered in full, and the server has stopped.
    const { checkpoints } = await injectCancellation({
      setup: async () => ({
        listener: await listen({ host: '127.0.0.1', port: 0 }),
        seen: [] as Seen[],
        server: null as Server | null,
      }),
      scenario: async (s) => {
        s.server = serve(s.listener, async (conn) => {
          await conn.write('Hello.\n');
          await sleep(5);
          await conn.write('Goodbye.\n');
        });
        for (let i = 0; i < 3; i++) s.seen.push(await adopt(converse(s.listener.port!)));
        await s.server.shutdown();
      },
      invariant: async (s) => {
        await s.server?.shutdown().catch(() => {});
        await s.listener.close();
        assert.equal(s.server?.stopped, true);
        for (const x of s.seen) assert.equal(x.data, 'Hello.\nGoodbye.\n');
      },
    });
    assert.ok(checkpoints >= 4, `only ${checkpoints} checkpoints exercised`);
  });

  test('handlers cancelled mid-read at the drain deadline run their bracket release exactly once', async () => {
    // Invariant: acquired === released after the server stopped, whatever was cancelled when.
    let acquired = 0;
    let released = 0;
    const listener = await listen({ host: '127.0.0.1', port: 0 });
    const server = serve(listener, (conn) =>
      bracket(
        () => {
          acquired++;
        },
        () => {
          released++;
        },
        async () => {
          for (;;) {
            const line = await conn.readLine();
            if (line === null) return;
            await conn.write(`${line}\n`);
          }
        },
      ),
    );
    const talk = Array.from({ length: 5 }, (_, i) =>
      converse(listener.port!, `m${i}\n`, { end: true }),
    );
    for (const [i, seen] of (await Promise.all(talk)).entries()) assert.equal(seen.data, `m${i}\n`);
    // Connections that stay open (no EOF) until the deadline cancels them mid-read.
    const open = Array.from({ length: 5 }, () => converse(listener.port!, 'x\n'));
    await new Promise((r) => setTimeout(r, 50));
    const report = await server.shutdown({ drainTimeoutMs: 50 });
    for (const seen of await Promise.all(open)) {
      assert.equal(seen.data, 'x\n');
      assert.equal(seen.error, undefined);
    }
    assert.equal(acquired, 10);
    assert.equal(released, 10);
    assert.equal(report.cancelled, 5);
  });
});
