import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { testDocExamples } from '../helpers/doc-examples.ts';

// The examples run as child processes of this one: their supervisors' runtime directory is
// this file's own, so nothing is left under the real tmpdir or $XDG_RUNTIME_DIR.
const runtime = mkdtempSync(join(tmpdir(), 'quiesce-docs-run-'));
process.env.XDG_RUNTIME_DIR = runtime;
after(() => rmSync(runtime, { recursive: true, force: true }));

testDocExamples('docs/supervisor.md', 1);
