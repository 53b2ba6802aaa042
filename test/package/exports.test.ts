import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));

test('the package exposes exactly the public subpaths and closes internals', () => {
  assert.deepEqual(Object.keys(pkg.exports).sort(), [
    '.',
    './http',
    './internal/*',
    './net',
    './package.json',
    './supervisor',
    './sync',
    './testing',
  ]);
  assert.equal(pkg.exports['./internal/*'], null);
  assert.equal(pkg.type, 'module');
});
