/**
 * Shared by the tests of unmodified apps: the example apps, an HTTP load client that counts
 * every failure by kind (keep-alive on or off), and a supervisor start whose cleanup also
 * ends what the workers started (wrappers' children), by process group.
 */
import { spawnSync } from 'node:child_process';
import * as http from 'node:http';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import {
  ROOT,
  type StartOptions,
  type Sup,
  startSupervisor,
  tempDir,
} from '../supervisor/helpers.ts';

export const EXPRESS_APP = join(ROOT, 'examples/apps/express-app.js');
export const FASTIFY_APP = join(ROOT, 'examples/apps/fastify-app.js');
export const NPM_START_DIR = join(ROOT, 'examples/apps/npm-start');

/** The machine's own Node (the first `node` in PATH outside node_modules), if it is >= 20. */
export const SYSTEM_NODE: string | null = (() => {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir === '' || dir.includes('node_modules')) continue;
    const r = spawnSync(join(dir, 'node'), ['-p', 'process.versions.node'], { encoding: 'utf8' });
    if (r.status === 0 && Number(r.stdout.split('.')[0]) >= 20) return join(dir, 'node');
  }
  return null;
})();

/** A PATH whose first `node` is `node` (its directory first). */
export function pathWithNode(node: string): string {
  return `${join(node, '..')}:${process.env.PATH ?? ''}`;
}

/** How one HTTP request ended. */
export type Kind = 'ok' | 'connect' | 'reset' | 'timeout' | 'non2xx' | 'other';
export type Counts = Record<Kind, number>;

function classify(e: NodeJS.ErrnoException): Kind {
  if (e.code === 'ECONNREFUSED') return 'connect';
  if (e.code === 'ECONNRESET' || e.code === 'EPIPE' || e.message === 'socket hang up') {
    return 'reset';
  }
  return 'other';
}

/** One GET; resolves how it ended (never rejects). */
export function get(
  port: number,
  path: string,
  agent: http.Agent | false,
  timeoutMs = 10_000,
): Promise<Kind> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (k: Kind) => {
      if (settled) return;
      settled = true;
      resolve(k);
    };
    const req = http.get({ host: '127.0.0.1', port, path, agent, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () =>
        finish(res.statusCode! >= 200 && res.statusCode! < 300 ? 'ok' : 'non2xx'),
      );
      res.on('error', (e) => finish(classify(e)));
    });
    req.on('timeout', () => {
      finish('timeout');
      req.destroy();
    });
    req.on('error', (e) => finish(classify(e)));
  });
}

/**
 * `concurrency` clients sending GET / back to back until `stop()`, on keep-alive connections
 * or a new connection each. Invariant checked by the tests: every request ends 'ok'.
 */
export function httpLoad(port: number, o: { keepAlive: boolean; concurrency?: number }) {
  const concurrency = o.concurrency ?? 8;
  const agent = o.keepAlive ? new http.Agent({ keepAlive: true, maxSockets: concurrency }) : false;
  const counts: Counts = { ok: 0, connect: 0, reset: 0, timeout: 0, non2xx: 0, other: 0 };
  let stopped = false;
  const loops = Array.from({ length: concurrency }, async () => {
    while (!stopped) counts[await get(port, '/', agent)]++;
  });
  return {
    counts,
    async stop(): Promise<Counts> {
      stopped = true;
      await Promise.all(loops);
      if (agent) agent.destroy();
      return counts;
    },
  };
}

/** The failures in `c` (everything but 'ok'). */
export function failures(c: Counts): Omit<Counts, 'ok'> {
  const { ok: _ok, ...rest } = c;
  return rest;
}

export const NO_FAILURES = { connect: 0, reset: 0, timeout: 0, non2xx: 0, other: 0 };

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {}
}

/**
 * `quiesce run` over an app; the cleanup also SIGKILLs each worker's process group (a worker
 * is started as the leader of its own group), so nothing a wrapper started outlives the test.
 */
export async function startApp(
  t: TestContext,
  o: Omit<StartOptions, 't' | 'dir'> & { dir?: string },
): Promise<Sup> {
  const dir = o.dir ?? tempDir(t);
  let sup: Sup | null = null;
  t.after(async () => {
    if (!sup) return;
    if (sup.proc.exitCode === null && sup.proc.signalCode === null) {
      sup.proc.kill('SIGTERM');
      const force = setTimeout(() => sup?.proc.kill('SIGKILL'), 5000);
      await sup.exited;
      clearTimeout(force);
    }
    for (const pid of sup.workerPids()) killGroup(pid);
  });
  sup = await startSupervisor({ ...o, t, dir });
  return sup;
}
