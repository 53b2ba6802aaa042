import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

/** Every `.d.ts` file under `dir`. */
function declarations(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.d.ts'))
    .map((f) => join(dir, f));
}

test('@internal members do not ship in the .d.ts (stripInternal), and the shipped declarations type-check', {
  timeout: 120_000,
}, async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'quiesce-dts-'));
  t.after(() => rmSync(out, { recursive: true, force: true }));
  const tsc = join(root, 'node_modules/.bin/tsc');
  await run(tsc, ['-p', join(root, 'tsconfig.build.json'), '--outDir', out], { cwd: root });
  const files = declarations(out);
  assert.ok(files.length > 20, `only ${files.length} declaration files`);
  for (const f of files) {
    assert.doesNotMatch(readFileSync(f, 'utf8'), /@internal/, `${f} ships an @internal member`);
  }
  // Members marked @internal in the sources, from several parts: none is declared.
  const text = (rel: string) => readFileSync(join(out, rel), 'utf8');
  assert.doesNotMatch(text('net/listener.d.ts'), /bindUnixPath|attach\(|get taken\(\)/);
  assert.doesNotMatch(text('supervisor/options.d.ts'), /function normalize|interface Settings/);
  assert.match(text('supervisor/options.d.ts'), /supervisorDefaults/);
  await t.test(
    'a strict consumer (skipLibCheck off) type-checks the shipped declarations',
    async () => {
      writeFileSync(
        join(out, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            noEmit: true,
            strict: true,
            skipLibCheck: false,
            module: 'nodenext',
            moduleResolution: 'nodenext',
            target: 'es2024',
            lib: ['es2024', 'esnext.disposable'],
            types: ['node'],
            typeRoots: [join(root, 'node_modules/@types')],
          },
          include: ['**/*.d.ts'],
        }),
      );
      await run(tsc, ['-p', join(out, 'tsconfig.json')], { cwd: out });
    },
  );
});
