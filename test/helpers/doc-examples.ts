/**
 * Runs the examples of a Markdown page as real programs: every fenced `ts` block that imports
 * from `quiesce…` and awaits or logs something. When every `console.log(…)` line ends with a
 * `// expected output` comment, stdout must be exactly those lines, in order.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));
const parts = ['sync', 'net', 'http', 'supervisor', 'testing'];

function expectedOutput(code: string): string[] | null {
  const logs = code.split('\n').filter((l) => l.includes('console.log('));
  if (logs.length === 0) return null;
  const out: string[] = [];
  for (const l of logs) {
    // `console.log(x); // 42 (because …)`: the parenthesis is commentary, not output; a log
    // on a conditional line cannot promise its output.
    const m = /;\s*\/\/ (.*?)(?: \(.*\))?$/.exec(l);
    if (!m || /\belse\b|\?/.test(l)) return null;
    out.push(m[1]);
  }
  return out;
}

/** Declares one test per runnable example of `page` (a path from the repository root). */
export function testDocExamples(page: string, minimum: number): void {
  const doc = readFileSync(join(root, page), 'utf8');
  const examples = [...doc.matchAll(/```ts\n([\s\S]*?)```/g)]
    .map((m) => m[1])
    .filter((code) => /from 'quiesce(\/\w+)?'/.test(code) && /\bawait\b|console\.log/.test(code));
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-docs-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  describe(page, () => {
    test(`has at least ${minimum} runnable examples`, () => {
      assert.ok(examples.length >= minimum, `found ${examples.length}`);
    });
    for (const [i, code] of examples.entries()) {
      const first = code.split('\n').find((l) => !l.startsWith('import') && l.trim()) ?? '';
      test(`example ${i + 1} runs as documented: ${first.slice(0, 60)}`, {
        timeout: 20_000,
      }, async () => {
        let source = code.replaceAll("from 'quiesce'", `from '${join(root, 'src/core/index.ts')}'`);
        for (const p of parts) {
          source = source.replaceAll(
            `from 'quiesce/${p}'`,
            `from '${join(root, `src/${p}/index.ts`)}'`,
          );
        }
        const file = join(dir, `example-${i + 1}.mts`);
        writeFileSync(file, source);
        const { stdout, stderr } = await run(process.execPath, [file], { timeout: 15_000 });
        assert.equal(stderr, '');
        const want = expectedOutput(code);
        if (want) assert.deepEqual(stdout.trimEnd().split('\n'), want);
      });
    }
  });
}
