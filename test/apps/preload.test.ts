/**
 * The preload's rules, one by one: which listen means which inherited socket, that a
 * descriptor counts only if it is the supervisor's socket, and that an app with its own
 * SIGTERM handler keeps it while its server.close() drains.
 */
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as net from 'node:net';
import { join } from 'node:path';
import { fstatSync } from 'node:fs';
import { test } from 'node:test';
import {
  type Inherited,
  inheritedSockets,
  listenRequest,
  matchListen,
  parseAddress,
} from '../../src/supervisor/preload/sockets.js';
import { checkNoLeftovers, NODE, ROOT } from '../supervisor/helpers.ts';
import { startApp } from './helpers.ts';

checkNoLeftovers();

const sock = (fd: number, address: string): Inherited => ({
  fd,
  name: 'x',
  address,
  dev: 0,
  ino: 0,
  where: parseAddress(address)!,
  claimed: false,
});
const match = (args: unknown[], sockets: Inherited[]) =>
  matchListen(listenRequest(args, '/srv'), sockets)?.fd ?? null;

test('listen mapping: the socket with that port or path, else the only one of that kind; port 0 and handles never', () => {
  const one = [sock(3, '127.0.0.1:8080')];
  assert.equal(match([8080], one), 3);
  assert.equal(match([3000, '0.0.0.0'], one), 3, 'the only socket takes any named port');
  assert.equal(match([{ port: 3000, host: '::' }], one), 3);
  assert.equal(match(['3000'], one), 3, 'a numeric string is a port');
  assert.equal(match([0], one), null, 'an ephemeral port is never mapped');
  assert.equal(match([], one), null);
  assert.equal(match(['/tmp/x.sock'], one), null, 'a path does not take a TCP socket');
  assert.equal(match([{ handle: {} }], one), null);
  assert.equal(match([{ fd: 3 }], one), 3);
  assert.equal(match([{ fd: 4 }], one), null);
  const two = [sock(3, '*:8080'), sock(4, 'unix:/srv/admin.sock')];
  assert.equal(match([8080], two), 3);
  assert.equal(match(['admin.sock'], two), 4, 'relative paths resolve against the cwd');
  assert.equal(match([{ path: '/srv/admin.sock' }], two), 4);
  assert.equal(match([3000], two), null, 'several sockets: only an exact match');
  two[0].claimed = true;
  assert.equal(match([8080], two), null, 'a socket is claimed once');
  one[0].claimed = true;
  assert.equal(match([9090], one), null, 'a second server binds as usual');
  assert.deepEqual(parseAddress('[::1]:443'), { kind: 'tcp', port: 443 });
  assert.equal(parseAddress('nonsense'), null);
});

test('a descriptor counts only if it is the very socket described (device and inode)', async (t) => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  const st = fstatSync(fd);
  const describe = (over: object) =>
    JSON.stringify([
      { fd, name: 'http', address: '127.0.0.1:1', dev: st.dev, ino: st.ino, ...over },
    ]);
  assert.equal(inheritedSockets({ QUIESCE_LISTEN: describe({}) }).length, 1);
  assert.equal(inheritedSockets({ QUIESCE_LISTEN: describe({ ino: st.ino + 1 }) }).length, 0);
  assert.equal(inheritedSockets({ QUIESCE_LISTEN: describe({ fd: 1 }) }).length, 0);
  assert.equal(inheritedSockets({ QUIESCE_LISTEN: '{not json' }).length, 0);
  assert.equal(inheritedSockets({}).length, 0);
});

test('an app with its own SIGTERM handler keeps it, and its server.close() drains: the request in flight is answered with Connection: close', async (t) => {
  const sup = await startApp(t, {
    args: ['--drain-timeout', '20s'],
    worker: [NODE, join(ROOT, 'test/apps/fixtures/own-sigterm.js')],
  });
  const agent = new http.Agent({ keepAlive: true });
  t.after(() => agent.destroy());
  const slow = new Promise<{ status: number; connection: string | undefined }>(
    (resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: sup.port, path: '/slow', agent }, (res) => {
          res.resume();
          res.on('end', () =>
            resolve({ status: res.statusCode!, connection: res.headers.connection }),
          );
        })
        .on('error', reject);
    },
  );
  await new Promise((r) => setTimeout(r, 200));
  const stopped = sup.request('stop');
  const r = await slow;
  assert.deepEqual(r, { status: 200, connection: 'close' });
  await stopped;
  assert.equal(await sup.exited, 0);
  assert.match(sup.stderr(), /own handler: closing \d+/);
  assert.match(sup.stderr(), /own handler: closed \d+/);
});
