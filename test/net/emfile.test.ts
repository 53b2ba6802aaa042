import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type net from 'node:net';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { collect, delay, dial, type Seen } from './helpers.ts';

const fixture = new URL('./fixtures/emfile-server.ts', import.meta.url).pathname;

test('EMFILE: out of descriptors the server neither crashes nor spins, and recovers when they free up', {
  timeout: 30_000,
}, async () => {
  // A descriptor limit of 64 leaves room for ~40 connections after Node's own.
  const child = spawn('prlimit', ['--nofile=64:64', process.execPath, fixture], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const out = createInterface({ input: child.stdout! });
  const pending: ((line: string) => void)[] = [];
  out.on('line', (l) => pending.shift()?.(l));
  const next = () =>
    new Promise<Record<string, number>>((r) => pending.push((l) => r(JSON.parse(l))));
  const stats = async () => {
    const answer = next();
    child.stdin!.write('stats\n');
    return answer;
  };
  try {
    const { port } = await next();
    // Hold far more connections than the child has descriptors for.
    const held: { socket: net.Socket; seen: Promise<Seen> }[] = [];
    for (let i = 0; i < 120; i++) {
      const socket = await dial(port).catch(() => null);
      if (socket) held.push({ socket, seen: collect(socket) });
    }
    await delay(300);
    const s1 = await stats();
    assert.ok(s1.open >= 20 && s1.open < 64, `open ${s1.open}`);
    // The excess was closed by libuv at once (EOF, no hello), not left hanging.
    const settled = await Promise.all(
      held.map(async (h) => {
        const r = await Promise.race([h.seen, delay(200).then(() => null)]);
        return r;
      }),
    );
    const dropped = settled.filter((r): r is Seen => r !== null);
    assert.ok(dropped.length >= 120 - s1.open - 5, `dropped ${dropped.length}`);
    for (const d of dropped) assert.equal(d.data, '');
    // While descriptors stay exhausted and clients keep knocking, the loop must stay idle
    // (a busy accept loop would burn a whole core) and responsive.
    const knock = setInterval(() => {
      dial(port).then(
        (s) => s.destroy(),
        () => {},
      );
    }, 20);
    const t0 = performance.now();
    await delay(600);
    clearInterval(knock);
    const s2 = await stats();
    const wall = performance.now() - t0;
    const cpu = s2.cpuMs - s1.cpuMs;
    assert.ok(cpu < wall * 0.5, `server burnt ${cpu.toFixed(0)} ms CPU in ${wall.toFixed(0)} ms`);
    assert.ok(s2.turns - s1.turns >= 20, 'the event loop kept turning');
    // Free the descriptors: the held clients finish, and new clients are served again.
    for (const h of held) if (!h.socket.destroyed) h.socket.write('bye\n');
    const finished = await Promise.all(held.map((h) => h.seen));
    const served = finished.filter((r) => r.data === 'Hello.\nGoodbye.\n').length;
    assert.equal(served, s1.open);
    const again = await dial(port);
    const seen = collect(again);
    again.write('bye\n');
    assert.equal((await seen).data, 'Hello.\nGoodbye.\n');
    child.kill('SIGTERM');
    assert.equal(await exit, 143);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exit;
  }
});
