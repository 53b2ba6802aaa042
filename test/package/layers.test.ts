// Invariant: a part imports only the parts below it, and core only through its public face
// (core/index.ts) or its declared low-level face (core/internal.ts).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const src = new URL('../../src/', import.meta.url).pathname;
// Bottom to top; a part may import any part earlier in this list.
const order = ['core', 'sync', 'net', 'http', 'supervisor', 'testing', 'cli'];
// Parts whose core imports already go through index.ts / internal.ts only. The others are
// switching; add each here once it does.
const throughFaces = ['sync', 'testing', 'supervisor', 'cli'];

function files(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...files(p));
    else if (/\.(ts|js)$/.test(e.name)) out.push(p);
  }
  return out;
}

function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/from '\.\.\/([a-z-]+)\/([^']+)'/g)].map((m) => `${m[1]}/${m[2]}`);
}

test('no part imports a part above it', () => {
  const bad: string[] = [];
  for (const part of order) {
    for (const f of files(join(src, part))) {
      for (const i of imports(f)) {
        const target = i.split('/')[0];
        if (order.indexOf(target) > order.indexOf(part)) bad.push(`${f}: ${i}`);
      }
    }
  }
  assert.deepEqual(bad, []);
});

test('parts above core import core only from core/index.ts or core/internal.ts', () => {
  const bad: string[] = [];
  for (const part of throughFaces) {
    for (const f of files(join(src, part))) {
      for (const i of imports(f)) {
        if (i.startsWith('core/') && i !== 'core/index.ts' && i !== 'core/internal.ts') {
          bad.push(`${f}: ${i}`);
        }
      }
    }
  }
  assert.deepEqual(bad, []);
});
