// Invariant: a part imports only the parts below it (core → sync → net → http → supervisor →
// cli; testing beside the chain, on core and sync), never one above or beside it, and core only
// through its public face (core/index.ts) or its declared low-level face (core/internal.ts).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';

const src = new URL('../../src/', import.meta.url).pathname;

/** What each part may import (besides itself). */
const allowed: Record<string, readonly string[]> = {
  core: [],
  sync: ['core'],
  net: ['core', 'sync'],
  http: ['core', 'sync', 'net'],
  supervisor: ['core', 'sync', 'net', 'http'],
  testing: ['core', 'sync'],
  cli: ['core', 'sync', 'net', 'http', 'supervisor'],
};
function files(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...files(p));
    else if (/\.(ts|js)$/.test(e.name)) out.push(p);
  }
  return out;
}

/** Every relative module a file imports (static, re-export or dynamic), as `part/path`. */
function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '') // JSDoc types (`import('node:net').Server`) are not imports
    .replace(/^\s*\/\/.*$/gm, '');
  const specs = [
    ...text.matchAll(/\bfrom\s+'(\.[^']+)'/g),
    ...text.matchAll(/\bimport\s*\(\s*'(\.[^']+)'\s*\)/g),
    ...text.matchAll(/^\s*import\s+'(\.[^']+)'/gm),
  ].map((m) => m[1]);
  return specs.map((s) => relative(src, resolve(dirname(file), s)));
}

const partOf = (rel: string) => rel.split('/')[0];

test('the layering check sees every kind of import it guards against', () => {
  const nested = imports(join(src, 'supervisor/preload/shutdown.js'));
  assert.ok(nested.includes('http/drain.js'), 'a ../../ import from a nested folder');
  const dynamic = imports(join(src, 'supervisor/notify.ts'));
  assert.ok(dynamic.includes('core/index.ts'), 'a dynamic import');
});

test('no part imports a part above it or beside it', () => {
  const bad: string[] = [];
  for (const part of Object.keys(allowed)) {
    for (const f of files(join(src, part))) {
      for (const i of imports(f)) {
        const target = partOf(i);
        if (target !== part && !allowed[part].includes(target)) {
          bad.push(`${relative(src, f)} imports ${i}`);
        }
      }
    }
  }
  assert.deepEqual(bad, []);
});

test('parts above core import core only from core/index.ts or core/internal.ts', () => {
  const bad: string[] = [];
  for (const part of Object.keys(allowed)) {
    if (part === 'core') continue;
    for (const f of files(join(src, part))) {
      for (const i of imports(f)) {
        if (i.startsWith('core/') && i !== 'core/index.ts' && i !== 'core/internal.ts') {
          bad.push(`${relative(src, f)} imports ${i}`);
        }
      }
    }
  }
  assert.deepEqual(bad, []);
});

test("the CLI stands on the supervisor's public face only", () => {
  const bad = files(join(src, 'cli')).flatMap((f) =>
    imports(f)
      .filter((i) => partOf(i) === 'supervisor' && i !== 'supervisor/index.ts')
      .map((i) => `${relative(src, f)} imports ${i}`),
  );
  assert.deepEqual(bad, []);
});
