import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as net from '../../src/net/index.ts';

test('quiesce/net exports exactly its public surface', () => {
  assert.deepEqual(Object.keys(net).sort(), [
    'ConcurrentReadError',
    'Connection',
    'ConnectionClosedError',
    'ConnectionError',
    'IdleTimeoutError',
    'LISTEN_FDS_START',
    'LineTooLongError',
    'ListenError',
    'Listener',
    'ListenerInUseError',
    'NoInheritedSocketError',
    'Server',
    'inheritedSockets',
    'listen',
    'listenInherited',
    'parseListenFds',
    'serve',
  ]);
});

test('every error of quiesce/net has a stable, distinct code', () => {
  const codes = [
    new net.ConnectionError('x'),
    new net.ConnectionClosedError('x'),
    new net.IdleTimeoutError(1),
    new net.LineTooLongError(1),
    new net.ConcurrentReadError(),
    new net.ListenError('x'),
    new net.NoInheritedSocketError('x'),
    new net.ListenerInUseError('x'),
  ].map((e) => e.code);
  assert.deepEqual(codes, [
    'ERR_CONNECTION_BROKEN',
    'ERR_CONNECTION_CLOSED',
    'ERR_IDLE_TIMEOUT',
    'ERR_LINE_TOO_LONG',
    'ERR_CONCURRENT_READ',
    'ERR_LISTEN',
    'ERR_NO_INHERITED_SOCKET',
    'ERR_LISTENER_IN_USE',
  ]);
});
