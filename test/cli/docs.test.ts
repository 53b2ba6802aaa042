/**
 * The command lines the docs give to people in a checkout: each one runs on the pinned Node
 * (through `npm run quiesce --`, never `node src/cli/main.ts`, which fails on an older system
 * node), each one parses, and the documented client loops work without `nc`.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseArgs } from '../../src/cli/args.ts';
import {
  checkNoLeftovers,
  cleanEnv,
  killAndWait,
  ROOT,
  startSupervisor,
  tempDir,
} from '../supervisor/helpers.ts';

checkNoLeftovers();

const PAGES = [
  'docs/cli.md',
  'docs/supervisor.md',
  'examples/http-worker.ts',
  'examples/python-worker.py',
];
const text = (page: string) => readFileSync(join(ROOT, page), 'utf8');

/** Every `npm run [-s] quiesce -- …` in `page`, as argv for the CLI (comments and `&` cut). */
function npmCommands(page: string): string[][] {
  // Command lines only (a line, or after `&`), not prose quoting the form.
  return [...text(page).matchAll(/(?:^[\s*]*|& )npm run (?:-s )?quiesce -- ([^#&`\n]*)/gm)].map(
    (m) => m[1].trim().split(/\s+/),
  );
}

test('every in-repo command in the docs goes through `npm run quiesce --` and parses', () => {
  let count = 0;
  for (const page of PAGES) {
    assert.doesNotMatch(
      text(page),
      /node src\/cli\/main\.ts/,
      `${page} runs the CLI on the system node`,
    );
    for (const argv of npmCommands(page)) {
      count++;
      const c = parseArgs(argv);
      assert.notEqual(c.kind, 'help', `${page}: ${argv.join(' ')}`);
      if (c.kind === 'run') assert.match(c.command, /^(node|python3)$/);
    }
  }
  assert.ok(count >= 10, `only ${count} commands found`);
});

/** Runs `argv` until it printed `want` Hello/Goodbye exchanges (or `ms` passed); its stdout. */
async function clientRun(argv: string[], want: number, ms = 10_000): Promise<string> {
  const p: ChildProcess = spawn(argv[0], argv.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: cleanEnv(),
  });
  let out = '';
  try {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      p.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (out.split('Goodbye.\n').length > want) {
          clearTimeout(timer);
          resolve();
        }
      });
      p.stderr!.resume();
      p.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  } finally {
    await killAndWait(p);
  }
  return out;
}

test('the documented client loops (bash /dev/tcp, Node one-liner) talk to the Hello/Goodbye server', {
  timeout: 60_000,
}, async (t) => {
  const cli = text('docs/cli.md');
  const shell = [...cli.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]).join('');
  assert.doesNotMatch(shell, /\bnc\b/, 'the docs rely on nc, which fresh machines lack');
  const bash = /^while sleep [\d.]+; do (.*); done/m.exec(cli);
  const node = /^node -e '(.*)'$/m.exec(cli);
  assert.ok(bash && node, 'the two client loops are in docs/cli.md');
  const dir = tempDir(t);
  const sup = await startSupervisor({ t, dir });
  const port = (s: string) => s.replaceAll('8080', String(sup.port));
  // The bash loop, three rounds instead of forever.
  const fromBash = await clientRun(['bash', '-c', `for i in 1 2 3; do ${port(bash[1])}; done`], 3);
  assert.equal(fromBash, 'Hello.\nGoodbye.\n'.repeat(3));
  const fromNode = await clientRun([process.execPath, '-e', port(node[1])], 2);
  assert.match(fromNode, /^(Hello\.\nGoodbye\.\n){2}/);
  assert.doesNotMatch(fromBash + fromNode, /FAILED/);
});

test('`npm run quiesce --` runs the CLI from a checkout', { timeout: 30_000 }, async () => {
  const out = await new Promise<{ code: number | null; stdout: string }>((resolve, reject) => {
    const p = spawn('npm', ['run', '-s', 'quiesce', '--', 'help', 'run'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'ignore'],
      env: cleanEnv(),
    });
    let stdout = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    const timer = setTimeout(() => p.kill('SIGKILL'), 25_000);
    p.once('error', reject);
    p.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout });
    });
  });
  assert.equal(out.code, 0);
  assert.match(out.stdout, /^Usage: quiesce run/);
});
