import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { checkLeaks } from './helpers.ts';

checkLeaks();

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));
const doc = readFileSync(join(root, 'docs/sync.md'), 'utf8');
const dir = mkdtempSync(join(tmpdir(), 'quiesce-sync-docs-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The runnable examples: fenced `ts` blocks that import the library. */
const examples = [...doc.matchAll(/```ts\n([\s\S]*?)```/g)]
  .map((m) => m[1])
  .filter((code) => /from 'quiesce(\/sync)?'/.test(code) && /\bawait\b|console\.log/.test(code));

/** `console.log(x); // 42` → the line 42 is expected on stdout, when every log says what it prints. */
function expectedOutput(code: string): string[] | null {
  const logs = code.split('\n').filter((l) => l.includes('console.log('));
  if (logs.length === 0) return null;
  const out: string[] = [];
  for (const l of logs) {
    const m = /;\s*\/\/ (.*?)(?: \(.*\))?$/.exec(l);
    if (!m || /\belse\b|\?/.test(l)) return null;
    out.push(m[1]);
  }
  return out;
}

describe('docs/sync.md', () => {
  test('has examples to run', () => {
    assert.ok(examples.length >= 10, `found ${examples.length}`);
  });

  for (const [i, code] of examples.entries()) {
    const first = code.split('\n').find((l) => !l.startsWith('import') && l.trim()) ?? '';
    test(`example ${i + 1} runs as documented: ${first.slice(0, 60)}`, {
      timeout: 20_000,
    }, async () => {
      const source = code
        .replaceAll("from 'quiesce/sync'", `from '${join(root, 'src/sync/index.ts')}'`)
        .replaceAll("from 'quiesce'", `from '${join(root, 'src/core/index.ts')}'`);
      const file = join(dir, `example-${i + 1}.mts`);
      writeFileSync(file, source);
      const { stdout, stderr } = await run(process.execPath, [file], { timeout: 15_000 });
      assert.equal(stderr, '');
      const want = expectedOutput(code);
      if (want) assert.deepEqual(stdout.trimEnd().split('\n'), want);
    });
  }
});
