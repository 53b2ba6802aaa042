// Runs every test with TMPDIR pointing at a directory of its own, then fails the run if any test
// left something in it. A file a test forgets under the machine's real tmpdir has broken
// `npm start` before (a stray `<tmpdir>/quiesce-<uid>`), so the suite checks it on every run
// instead of trusting each test's cleanup.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// npm and npx, which some tests start, keep their own compile cache in the tmpdir: not ours.
const NOT_OURS = new Set(['node-compile-cache']);

const dir = mkdtempSync(join(tmpdir(), 'quiesce-suite-'));
const args = [
  '--test',
  '--test-concurrency=2',
  '--test-timeout=60000',
  ...(process.argv.length > 2 ? process.argv.slice(2) : ['test/**/*.test.ts']),
];
const child = spawn(process.execPath, args, {
  stdio: 'inherit',
  env: { ...process.env, TMPDIR: dir },
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => {
  const left = readdirSync(dir).filter((name) => !NOT_OURS.has(name));
  rmSync(dir, { recursive: true, force: true });
  if (left.length > 0) {
    console.error(`\nthe tests left ${left.length} entries in their tmpdir: ${left.join(', ')}`);
    process.exit(1);
  }
  process.exit(code ?? (signal ? 1 : 0));
});
