import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ArgumentError, isCancellation, spawn } from '../../src/core/index.ts';
import {
  ConcurrentReadError,
  Connection,
  ConnectionClosedError,
  ConnectionError,
  IdleTimeoutError,
  LineTooLongError,
} from '../../src/net/index.ts';
import { after, select } from '../../src/sync/index.ts';
import { injectCancellation, useTestClock } from '../../src/testing/index.ts';
import { collect, delay, pair } from './helpers.ts';
import { checkLeaks } from '../helpers/leaks.ts';
import { timerDelayUnderSwallowingLoop } from '../helpers/starvation.ts';

checkLeaks();

describe('Connection reads', { timeout: 20_000 }, () => {
  test('read returns the bytes that arrived, then null at the peer EOF', async () => {
    const p = await pair();
    p.client.end('hello');
    let got = '';
    for (let b = await p.conn.read(); b !== null; b = await p.conn.read()) got += b;
    assert.equal(got, 'hello');
    assert.equal(await p.conn.read(), null);
    await p.close();
  });

  test('read(maxBytes) never returns more than asked and keeps the rest', async () => {
    const p = await pair();
    p.client.end('abcdefg');
    const parts: string[] = [];
    for (let b = await p.conn.read(3); b !== null; b = await p.conn.read(3)) {
      assert.ok(b.length <= 3);
      parts.push(b.toString());
    }
    assert.equal(parts.join(''), 'abcdefg');
    await p.close();
  });

  test('readLine splits on \\n across chunks, drops \\r, returns the unterminated rest, then null', async () => {
    const p = await pair();
    p.client.write('one\r\ntw');
    await delay(20);
    p.client.write('o\nthr');
    await delay(20);
    p.client.end('ee');
    assert.equal(await p.conn.readLine(), 'one');
    assert.equal(await p.conn.readLine(), 'two');
    assert.equal(await p.conn.readLine(), 'three');
    assert.equal(await p.conn.readLine(), null);
    await p.close();
  });

  test('readLine refuses a line longer than maxBytes instead of buffering it', async () => {
    const p = await pair();
    p.client.write('x'.repeat(5000));
    await assert.rejects(p.conn.readLine({ maxBytes: 1000 }), LineTooLongError);
    await p.close();
  });

  test('readLine waits past 64 KiB for a line its maxBytes allows: the socket is not paused under it', async () => {
    // Without this a line of 64 KiB or more waited forever (here: until the idle limit).
    const p = await pair({ idleTimeoutMs: 3000 });
    try {
      p.client.write(`${'a'.repeat(65536)}\n${'b'.repeat(100_000)}\r\n${'c'.repeat(200_000)}`);
      assert.equal(await p.conn.readLine(), 'a'.repeat(65536));
      assert.equal(await p.conn.readLine({ maxBytes: 1 << 20 }), 'b'.repeat(100_000));
      // Too long is still found out, past 64 KiB too: after maxBytes + 1 bytes, not a hang.
      await assert.rejects(p.conn.readLine({ maxBytes: 150_000 }), LineTooLongError);
    } finally {
      await p.close();
    }
  });

  test('maxBytes is a whole count of bytes: a fraction is refused, and nothing is consumed', async () => {
    const p = await pair();
    try {
      p.client.end('abcd');
      await delay(20);
      for (const bad of [1.5, 0.5, 0, -1, Number.NaN, '2' as never]) {
        await assert.rejects(p.conn.read(bad), ArgumentError);
        await assert.rejects(p.conn.readLine({ maxBytes: bad }), ArgumentError);
        await assert.rejects(p.conn.readWithin(10, { maxBytes: bad }), ArgumentError);
        assert.throws(() => p.conn.readEvent(bad), ArgumentError);
        assert.throws(() => p.conn.lineEvent({ maxBytes: bad }), ArgumentError);
      }
      assert.equal(String(await p.conn.read(1)), 'a');
      assert.equal(String(await p.conn.read(Number.POSITIVE_INFINITY)), 'bcd');
      assert.equal(await p.conn.read(), null);
    } finally {
      await p.close();
    }
  });

  test('backpressure: a flooding peer is held by the kernel, not buffered in the process', async () => {
    const p = await pair();
    const total = 16 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 7);
    let sent = 0;
    const pump = () => {
      while (sent < total) {
        sent += chunk.length;
        if (!p.client.write(chunk)) {
          p.client.once('drain', pump);
          return;
        }
      }
      p.client.end();
    };
    pump();
    try {
      assert.ok(await p.conn.read(1)); // starts the socket reading
      await delay(200);
      // Nobody reads: the connection pauses at 64 KiB unread and the stream stops at its
      // high-water mark (64 KiB), each overshooting by at most one 64 KiB socket read; the
      // kernel holds the rest.
      const inProcess = p.conn.bytesRead - 1;
      assert.ok(inProcess <= 4 * 64 * 1024, `${inProcess} bytes buffered in the process`);
      assert.ok(p.conn.bytesRead < total / 2, `read ${p.conn.bytesRead} of ${total} unasked`);
      let got = 1;
      for (let b = await p.conn.read(); b !== null; b = await p.conn.read()) got += b.length;
      assert.equal(got, total);
    } finally {
      await p.close();
    }
  });

  test('two reads at once are refused', async () => {
    const p = await pair();
    const first = p.conn.read();
    await assert.rejects(p.conn.read(), ConcurrentReadError);
    p.client.write('x');
    assert.equal(String(await first), 'x');
    await p.close();
  });

  test('a second read never takes the partial line of a waiting readLine: it is refused', async () => {
    const p = await pair({ idleTimeoutMs: 3000 });
    try {
      const line = spawn(() => p.conn.readLine());
      p.client.write('abc');
      await delay(50); // 'abc' is buffered, the readLine waits for its '\n'
      await assert.rejects(p.conn.read(), ConcurrentReadError);
      await assert.rejects(p.conn.readLine(), ConcurrentReadError);
      await assert.rejects(p.conn.readWithin(10), ConcurrentReadError);
      await assert.rejects(select(p.conn.readEvent(), after(10)), ConcurrentReadError);
      p.client.write('def\n');
      assert.equal(await line.wait(), 'abcdef');
    } finally {
      await p.close();
    }
  });

  test('a read on a connection closed here raises ConnectionClosedError', async () => {
    const p = await pair();
    const pending = p.conn.read();
    p.conn.destroy();
    await assert.rejects(pending, ConnectionClosedError);
    await assert.rejects(p.conn.read(), ConnectionClosedError);
    await p.close();
  });

  test('a read on a reset connection raises ConnectionError', async () => {
    const p = await pair();
    const pending = p.conn.read();
    p.client.resetAndDestroy();
    const e = await pending.then(
      () => null,
      (err: unknown) => err,
    );
    assert.ok(e instanceof ConnectionError, String(e));
    await p.close();
  });
});

describe('Connection reads under cancellation', { timeout: 30_000 }, () => {
  test('a loop swallowing the cancellation of reads and writes that need not wait does not starve a timer', async () => {
    const p = await pair();
    try {
      p.client.end();
      assert.equal(await p.conn.read(), null); // at EOF a read completes without waiting
      for (const op of [() => p.conn.read(), () => p.conn.readLine(), () => p.conn.write('x')]) {
        const late = await timerDelayUnderSwallowingLoop(op);
        assert.ok(late < 500, `the 5 ms timer fired after ${late.toFixed(0)} ms`);
      }
    } finally {
      await p.close();
    }
  });

  test('a cancelled read consumed nothing: the next read gets the bytes', async () => {
    const p = await pair();
    const t = spawn(() => p.conn.read());
    await delay(10);
    await t.cancel();
    assert.ok((await t.result()).ok === false);
    p.client.write('kept');
    assert.equal(String(await p.conn.read()), 'kept');
    await p.close();
  });

  test('cancelled at any checkpoint, readLine loses and duplicates no line', async () => {
    // Invariant: lines returned + what is still readable afterwards === everything sent.
    const sent = 'a\nb\nc\n';
    await injectCancellation({
      setup: async () => {
        const p = await pair();
        p.client.write('a\nb');
        setTimeout(() => p.client.end('\nc\n'), 5);
        return { p, lines: [] as string[] };
      },
      scenario: async (s) => {
        for (let i = 0; i < 3; i++) s.lines.push((await s.p.conn.readLine())!);
      },
      invariant: async (s) => {
        let rest = '';
        for (let b = await s.p.conn.read(); b !== null; b = await s.p.conn.read()) rest += b;
        const seen = s.lines.map((l) => `${l}\n`).join('') + rest;
        assert.equal(seen, sent);
        await s.p.close();
      },
    });
  });

  test('readWithin: a silent peer yields timeout — no exception, no byte lost', async () => {
    const p = await pair();
    assert.deepEqual(await p.conn.readWithin(50), { kind: 'timeout' });
    p.client.write('late');
    const r = await p.conn.readWithin(1000);
    assert.equal(r.kind, 'data');
    assert.equal(String((r as { data: Buffer }).data), 'late');
    p.client.end();
    assert.deepEqual(await p.conn.readWithin(1000), { kind: 'eof' });
    await p.close();
  });

  test('readWithin racing its timer against arriving data never loses or reorders a byte', async () => {
    // Invariant: the concatenation of all 'data' results equals the byte stream sent.
    const p = await pair();
    let expected = '';
    for (let i = 0; i < 300; i++) expected += `${i},`;
    const writer = (async () => {
      for (let i = 0; i < 300; i++) {
        p.client.write(`${i},`);
        if (i % 7 === 0) await delay(Math.floor(Math.random() * 3));
      }
      p.client.end();
    })();
    let got = '';
    let timeouts = 0;
    for (;;) {
      const r = await p.conn.readWithin(1, { maxBytes: 5 });
      if (r.kind === 'eof') break;
      if (r.kind === 'timeout') timeouts++;
      else if (r.kind === 'data') got += r.data;
    }
    await writer;
    assert.equal(got, expected);
    assert.ok(timeouts >= 0);
    await p.close();
  });

  test('the losing readEvent of a select consumes nothing', async () => {
    const p = await pair();
    p.client.write('partial');
    const r = await select(p.conn.lineEvent(), after(30));
    assert.equal(r.index, 1);
    p.client.write(' line\n');
    assert.equal(await p.conn.readLine(), 'partial line');
    await p.close();
  });
});

describe('Connection writes', { timeout: 20_000 }, () => {
  test('write waits for drain and a cancelled write wrote nothing', async () => {
    const p = await pair();
    p.client.pause();
    const big = Buffer.alloc(1024 * 1024, 97); // 'a'
    let writes = 0;
    // Fill until the socket reports it is over its high-water mark.
    while (!p.conn.socket.writableNeedDrain) {
      await p.conn.write(big);
      writes++;
    }
    const blocked = spawn(() => p.conn.write('MARK'));
    await delay(30);
    assert.equal(blocked.done, false, 'write should wait for drain');
    await blocked.cancel();
    const r = await blocked.result();
    assert.equal(r.ok, false);
    const seen = collect(p.client);
    p.client.resume();
    await p.conn.write('END');
    p.conn.end();
    const s = await seen;
    assert.equal(s.data.length, writes * big.length + 3);
    assert.ok(!s.data.includes('MARK'));
    assert.ok(s.data.endsWith('END'));
    await p.close();
  });

  test('a peer that resets mid-write makes write raise ConnectionError', async () => {
    const p = await pair();
    const big = Buffer.alloc(256 * 1024, 1);
    p.client.pause();
    setTimeout(() => p.client.resetAndDestroy(), 20);
    const e = await (async () => {
      for (let i = 0; i < 10_000; i++) await p.conn.write(big);
      return null;
    })().catch((err: unknown) => err);
    assert.ok(e instanceof ConnectionError, String(e));
    await p.close();
  });

  test('write after end raises ConnectionClosedError', async () => {
    const p = await pair();
    p.conn.end();
    await assert.rejects(p.conn.write('x'), ConnectionClosedError);
    await p.close();
  });
});

describe('gracefulClose', { timeout: 20_000 }, () => {
  test('the peer sees all our data and EOF, never ECONNRESET, even with its data unread', async () => {
    const p = await pair();
    const seen = collect(p.client);
    p.client.write('request we never read\n'.repeat(100));
    await delay(20);
    await p.conn.write('reply\n'.repeat(1000));
    const r = await p.conn.gracefulClose({ timeoutMs: 2000 });
    const s = await seen;
    assert.equal(r.outcome, 'eof');
    assert.ok(r.discardedBytes > 0);
    assert.equal(s.error, undefined);
    assert.equal(s.ended, true);
    assert.equal(s.data, 'reply\n'.repeat(1000));
    await p.close();
  });

  test('control: destroy() with unread data does reset the peer (what gracefulClose avoids)', async () => {
    const p = await pair();
    const seen = collect(p.client);
    p.client.write('unread\n'); // stays in the kernel: the paused socket never reads it
    await delay(20);
    await p.conn.write('reply\n');
    p.conn.destroy();
    const s = await seen;
    assert.equal(s.error, 'ECONNRESET');
    await p.close();
  });

  test('a peer that never closes is bounded by timeoutMs', async () => {
    const p = await pair();
    const seen = collect(p.client, { endOnEnd: false }); // reads, never ends its side
    const t0 = performance.now();
    const r = await p.conn.gracefulClose({ timeoutMs: 150 });
    const ms = performance.now() - t0;
    assert.equal(r.outcome, 'timeout');
    assert.ok(ms >= 140 && ms < 2000, `took ${ms} ms`);
    assert.ok(p.conn.socket.destroyed);
    await p.close();
    assert.equal((await seen).ended, true);
  });

  test('a peer that floods is bounded by maxBytes, long before the timeout', async () => {
    const p = await pair();
    const chunk = Buffer.alloc(64 * 1024, 1);
    let stop = false;
    const flood = () => {
      while (!stop && p.client.write(chunk));
      if (!stop) p.client.once('drain', flood);
    };
    p.client.on('error', () => {
      stop = true;
    });
    flood();
    const t0 = performance.now();
    const r = await p.conn.gracefulClose({ timeoutMs: 10_000, maxBytes: 256 * 1024 });
    stop = true;
    assert.equal(r.outcome, 'limit');
    assert.ok(r.discardedBytes > 256 * 1024);
    assert.ok(performance.now() - t0 < 5000);
    await p.close();
  });

  test('runs to completion in the finally of a cancelled task', async () => {
    const p = await pair();
    const seen = collect(p.client);
    let result: unknown;
    const t = spawn(async () => {
      try {
        await p.conn.write('bye\n');
        await p.conn.read(); // blocks until cancelled
      } finally {
        result = await p.conn.gracefulClose({ timeoutMs: 2000 });
      }
    });
    await delay(20);
    await t.cancel();
    const r = await t.result();
    assert.ok(!r.ok);
    assert.deepEqual(result, { outcome: 'eof', discardedBytes: 0 });
    const s = await seen;
    assert.equal(s.data, 'bye\n');
    assert.equal(s.error, undefined);
    await p.close();
  });

  test('on a socket that had already closed: closed and gracefulClose resolve at once', {
    timeout: 3000,
  }, async () => {
    const p = await pair();
    try {
      p.conn.socket.destroy();
      await p.conn.closed;
      const late = new Connection(p.conn.socket);
      await late.closed;
      assert.deepEqual(await late.gracefulClose(), { outcome: 'closed', discardedBytes: 0 });
      await assert.rejects(late.read(), ConnectionClosedError);
    } finally {
      await p.close();
    }
  });

  test('is idempotent and fails pending reads with ConnectionClosedError', async () => {
    const p = await pair();
    p.client.on('end', () => p.client.end());
    const pending = p.conn.read();
    const a = p.conn.gracefulClose();
    const b = p.conn.gracefulClose();
    assert.equal(a, b);
    await assert.rejects(pending, ConnectionClosedError);
    assert.equal((await a).outcome, 'eof');
    await p.close();
  });
});

describe('idle limit', { timeout: 20_000 }, () => {
  test('a slowloris peer trickling bytes cannot hold a readLine past the idle limit', async () => {
    const p = await pair({ idleTimeoutMs: 300 });
    const drip = setInterval(() => p.client.write('x'), 40);
    const t0 = performance.now();
    const e = await p.conn.readLine().catch((err: unknown) => err);
    const ms = performance.now() - t0;
    clearInterval(drip);
    assert.ok(e instanceof IdleTimeoutError, String(e));
    assert.ok(ms >= 290 && ms < 1500, `took ${ms} ms`);
    await p.close();
  });

  test('a peer that does not read cannot hold a blocked write past the idle limit', async () => {
    const p = await pair({ idleTimeoutMs: 300 });
    p.client.pause();
    const big = Buffer.alloc(1024 * 1024, 1);
    const e = await (async () => {
      for (let i = 0; i < 1000; i++) await p.conn.write(big);
    })().catch((err: unknown) => err);
    assert.ok(e instanceof IdleTimeoutError, String(e));
    await p.close();
  });

  test('connections sharing an idle limit each give up at their own limit, from each blocking call', async () => {
    // Invariant: a blocked read fails exactly at its call's time + the limit (virtual clock),
    // whatever the other connections with that limit did meanwhile.
    using clock = useTestClock(0);
    const [a, b, c] = await Promise.all([1, 2, 3].map(() => pair({ idleTimeoutMs: 1000 })));
    try {
      const failedAt = new Map<string, number>();
      const watch = (name: string, read: Promise<unknown>) =>
        read.then(
          () => failedAt.set(name, -1),
          (e: unknown) => failedAt.set(name, e instanceof IdleTimeoutError ? clock.now() : -2),
        );
      const first = a.conn.read();
      watch('b', b.conn.read());
      watch('c', c.conn.read());
      await clock.advance(400);
      a.client.write('x');
      assert.equal(String(await first), 'x');
      watch('a', a.conn.read()); // blocks at 400: gives up at 1400, after b and c
      await clock.advance(600);
      assert.deepEqual(
        [failedAt.get('b'), failedAt.get('c'), failedAt.get('a')],
        [1000, 1000, undefined],
      );
      await clock.advance(399);
      assert.equal(failedAt.get('a'), undefined);
      await clock.advance(1);
      assert.equal(failedAt.get('a'), 1400);
    } finally {
      await Promise.all([a, b, c].map((p) => p.close()));
    }
  });

  test('readWithin shorter than the idle limit still returns timeout as a value', async () => {
    const p = await pair({ idleTimeoutMs: 1000 });
    assert.deepEqual(await p.conn.readWithin(20), { kind: 'timeout' });
    const e = await p.conn.readWithin(5000).catch((err: unknown) => err);
    assert.ok(e instanceof IdleTimeoutError);
    assert.ok(!isCancellation(e));
    await p.close();
  });
});
