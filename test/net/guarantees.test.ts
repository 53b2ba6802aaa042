/**
 * quiesce/net's promises as a peer sees them, on real sockets (127.0.0.1, port 0):
 * 1. A healthy peer never sees a reset: it receives every byte of the reply and an orderly EOF,
 *    however it closes its own side and whatever request bytes the handler left unread.
 * 2. A cancelled read loses nothing: bytes whose hand-over a reader refuses (it was cancelled,
 *    or its select was won by another event) go back in front, in order.
 * Each test asserts on what the peer received, never on a server-side counter.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import type { Waiter } from '../../src/core/internal.ts';
import { listen, type ServeOptions, serve } from '../../src/net/index.ts';
import type { SelectEvent } from '../../src/sync/select.ts';
import { checkLeaks } from '../helpers/leaks.ts';
import { delay, type Pair, pair, until } from './helpers.ts';

checkLeaks();

const MiB = 1024 * 1024;

/** What a peer received, start to close. */
interface Received {
  bytes: number;
  /** Every received byte was the one expected at its offset. */
  intact: boolean;
  ended: boolean;
  error: string | undefined;
}

/** The reply every handler sends: byte i is `i % 251`, so a gap or a reorder shows. */
function reply(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = i % 251;
  return b;
}

/**
 * A peer that sends `request` and then reads. With `halfClose` it ends its side right after
 * the request; otherwise it ends it when the server's EOF arrives, as an ordinary client does.
 * With `slow` it takes nothing for 300 ms (the server's writes back up to the kernel), then
 * reads one socket read at a time, 2 ms apart.
 */
function peer(
  port: number,
  request: Buffer,
  options: { halfClose?: boolean; slow?: boolean },
): Promise<Received> {
  const got: Received = { bytes: 0, intact: true, ended: false, error: undefined };
  const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  s.on('connect', () => {
    s.write(request);
    if (options.halfClose) s.end();
    if (options.slow) {
      s.pause();
      setTimeout(() => s.resume(), 300);
    }
  });
  s.on('data', (d: Buffer) => {
    for (let i = 0; i < d.length; i++) {
      if (d[i] !== (got.bytes + i) % 251) {
        got.intact = false;
        break;
      }
    }
    got.bytes += d.length;
    if (options.slow) {
      s.pause();
      setTimeout(() => s.resume(), 2);
    }
  });
  s.on('end', () => {
    got.ended = true;
    if (!options.halfClose) s.end();
  });
  s.on('error', (e: Error & { code?: string }) => {
    got.error ??= e.code ?? e.message;
  });
  return new Promise((r) => s.once('close', () => r(got)));
}

/**
 * One exchange: the handler reads the line `line` (unless undefined), writes a `size`-byte
 * reply and returns; the peer sends `request`. Asserts the peer got all of it and an orderly
 * EOF, and no reset.
 */
async function expectWholeReply(o: {
  size: number;
  line?: string;
  request: Buffer;
  serve?: ServeOptions;
  halfClose?: boolean;
  slow?: boolean;
}): Promise<void> {
  const body = reply(o.size);
  const listener = await listen({ host: '127.0.0.1', port: 0 });
  const server = serve(
    listener,
    async (conn) => {
      if (o.line !== undefined) assert.equal(await conn.readLine(), o.line);
      await conn.write(body);
    },
    o.serve,
  );
  let got: Received;
  try {
    got = await peer(listener.port!, o.request, o);
  } finally {
    await server.shutdown({ drainTimeoutMs: 5000 });
  }
  assert.equal(got.error, undefined, 'the peer saw a reset');
  assert.equal(got.bytes, o.size, 'the peer did not receive the whole reply');
  assert.ok(got.intact, 'the reply arrived corrupted');
  assert.equal(got.ended, true, 'the peer saw no orderly EOF');
}

/** A request line and 200 KiB of body behind it: more than a connection buffers (64 KiB). */
const upload = Buffer.concat([Buffer.from('POST /upload\n'), Buffer.alloc(200 * 1024, 'b')]);

describe('a healthy peer never sees a reset', { timeout: 60_000 }, () => {
  test('a peer that half-closes right after its request, then reads slowly, receives all 8 MB of the reply and EOF', async () => {
    // A generous close limit: the subject is that the peer's early EOF does not end the close
    // while our reply is still leaving, not how fast a loaded machine moves 8 MB.
    await expectWholeReply({
      size: 8 * MiB,
      line: 'GET /big',
      request: Buffer.from('GET /big\n'),
      serve: { closeTimeoutMs: 30_000 },
      halfClose: true,
      slow: true,
    });
  });

  test('a handler that returns without reading the request does not reset the peer', async () => {
    // Nothing is read before a handler asks, so the whole request waits in the kernel when the
    // handler returns: closing the socket then would make the kernel answer with a reset.
    await expectWholeReply({ size: MiB, request: Buffer.alloc(8192, 'q') });
  });

  test('a handler that reads one line and leaves the rest of the request unread does not reset the peer', async () => {
    // Part of the body is still in the kernel when the handler returns; it is within
    // closeMaxBytes, so this is a healthy peer.
    await expectWholeReply({
      size: MiB,
      line: 'POST /upload',
      request: upload,
      serve: { closeMaxBytes: MiB },
    });
  });

  test('the same handler with a peer that half-closes and reads slowly: all bytes, EOF, no reset', async () => {
    await expectWholeReply({
      size: 4 * MiB,
      line: 'POST /upload',
      request: upload,
      serve: { closeMaxBytes: MiB, closeTimeoutMs: 30_000 },
      halfClose: true,
      slow: true,
    });
  });
});

/**
 * A waiter standing for a reader that was cancelled (or whose select another event won)
 * between the wake-up and the hand-over: it looks pending until then, refuses every commit,
 * as the waiter contract allows, and the producer must keep what it offered.
 */
function refusingWaiter<T>(): Waiter<T> & { offered: T[] } {
  const offered: T[] = [];
  return {
    offered,
    get pending() {
      return true;
    },
    commit(value: T) {
      offered.push(value);
      return false;
    },
    fail() {
      return false;
    },
  };
}

/** Registers a refusing reader on `event`, sends `bytes`, and returns what it was offered. */
async function refuseOnArrival<T>(p: Pair, event: SelectEvent<T>, bytes: string): Promise<T[]> {
  const w = refusingWaiter<T>();
  const unregister = event.register(w);
  p.client.write(bytes);
  const offered = await until(() => w.offered.length > 0, 5000);
  unregister();
  assert.ok(offered, 'nothing was offered to the blocked reader');
  return w.offered;
}

/** Everything `conn.read()` returns up to EOF, as text. */
async function readToEnd(p: Pair): Promise<string> {
  let out = '';
  for (let b = await p.conn.read(); b !== null; b = await p.conn.read()) out += b.toString();
  return out;
}

describe('a cancelled read loses nothing', { timeout: 30_000 }, () => {
  test('bytes already buffered, offered at registration and refused, are read next, in order', async () => {
    const p = await pair();
    try {
      p.client.write('first ');
      assert.equal((await p.conn.read())?.toString(), 'first ');
      p.client.write('second');
      await delay(50); // let it reach the connection's buffer
      const w = refusingWaiter<Buffer | null>();
      p.conn.readEvent().register(w)();
      assert.equal(w.offered.length, 1, 'the bytes were not offered');
      p.client.end(' third');
      assert.equal(await readToEnd(p), 'second third');
    } finally {
      await p.close();
    }
  });

  test('bytes that arrive for a blocked reader whose hand-over is refused are read next, in order', async () => {
    const p = await pair();
    try {
      await refuseOnArrival(p, p.conn.readEvent(), 'arrived while the reader was being cancelled');
      p.client.end();
      assert.equal(await readToEnd(p), 'arrived while the reader was being cancelled');
    } finally {
      await p.close();
    }
  });

  test('a whole line refused by a cancelled readLine stays for the next one, with what follows', async () => {
    const p = await pair();
    try {
      assert.deepEqual(await refuseOnArrival(p, p.conn.lineEvent(), 'one\ntw'), ['one']);
      p.client.end('o\nthree');
      const lines: string[] = [];
      for (let l = await p.conn.readLine(); l !== null; l = await p.conn.readLine()) lines.push(l);
      assert.deepEqual(lines, ['one', 'two', 'three']);
    } finally {
      await p.close();
    }
  });
});
