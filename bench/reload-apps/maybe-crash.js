// Chaos: a "deploy" that crashes at start. If the file named by CRASH_FILE says `crash`, this
// process exits with status 1 before the app starts; otherwise it runs the app in APP.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

let mode = '';
try {
  mode = readFileSync(process.env.CRASH_FILE ?? '', 'utf8').trim();
} catch {}
if (mode === 'crash') {
  console.error(`app ${process.pid}: crashing at start (chaos)`);
  process.exit(1);
}
await import(pathToFileURL(String(process.env.APP)).href);
