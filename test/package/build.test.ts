import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

test('the build emits .js and .d.ts for every public subpath, and each one loads', {
  timeout: 120_000,
}, async () => {
  const out = mkdtempSync(join(tmpdir(), 'quiesce-build-'));
  try {
    const tsc = join(root, 'node_modules/.bin/tsc');
    await run(tsc, ['-p', join(root, 'tsconfig.build.json'), '--outDir', out], { cwd: root });
    for (const [subpath, target] of Object.entries(pkg.exports)) {
      if (target === null || typeof target === 'string') continue;
      const { types, default: js } = target as { types: string; default: string };
      const rel = (p: string) => join(out, p.replace(/^\.\/dist\//, ''));
      assert.ok(existsSync(rel(types)), `${subpath}: ${types} was not emitted`);
      assert.ok(existsSync(rel(js)), `${subpath}: ${js} was not emitted`);
      // Plain JavaScript, no type stripping involved: what a user of the package runs.
      await run(
        process.execPath,
        ['--no-experimental-strip-types', '-e', `await import(${JSON.stringify(rel(js))})`],
        {
          cwd: out,
        },
      );
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
