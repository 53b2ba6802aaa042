/**
 * Shutdown of an unmodified app, in the process that listens on the supervisor's sockets.
 *
 * Guarantees:
 * 1. Every server that listens is tracked; node:http and node:https servers get quiesce/http's
 *    drain engine as soon as they listen, and their `close()` — the app's own, or ours — runs
 *    that drain (`Connection: close` on what is in flight, idle keep-alive connections closed
 *    without the close/request race, forced at the budget) before its callback.
 * 2. On the drain signal, if no handler of the app listens for it, every tracked server drains
 *    (in parallel) within the budget (`QUIESCE_DRAIN_TIMEOUT_MS` less a margin, so that the
 *    forced end comes before the supervisor's SIGKILL), then the process exits with status 0.
 *    If the app has its own handler, that handler alone decides; guarantee 1 still applies.
 * 3. The drain is started once; more signals while it runs change nothing.
 * 4. The `Connection: close` of busy keep-alive connections is spread over
 *    `QUIESCE_DRAIN_SPREAD_MS` (default 0: at once), so that after a reload their clients
 *    move to the new workers a few at a time instead of all in the same instant.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { attachDrain } from '../../http/drain.js';

/** @type {Map<import('node:net').Server, () => Promise<void>>} */
const servers = new Map();

/**
 * The budget the supervisor gives a draining worker, less what the forced end needs.
 * @param {NodeJS.ProcessEnv} env
 */
export function drainBudgetMs(env) {
  const raw = env.QUIESCE_DRAIN_TIMEOUT_MS;
  const total = raw === undefined || raw === '' ? Number.NaN : Number(raw);
  const budget = Number.isFinite(total) && total >= 0 ? total : 30_000;
  return Math.max(0, budget - Math.min(1000, budget / 10));
}

const budget = drainBudgetMs(process.env);
// Most of the budget for requests to finish, the rest for the sockets still open after that.
const deadlineMs = Math.round(budget * 0.9);
const graceMs = budget - deadlineMs;
const spreadMs = drainSpreadMs(process.env);

/**
 * The window over which a drain hands keep-alive connections over (guarantee 4).
 * @param {NodeJS.ProcessEnv} env
 */
export function drainSpreadMs(env) {
  const raw = env.QUIESCE_DRAIN_SPREAD_MS;
  const v = raw === undefined || raw === '' ? 0 : Number(raw);
  return Number.isFinite(v) && v > 0 ? v : 0;
}

/**
 * Remembers `server` for the drain on the signal; gives HTTP servers the drain (guarantee 1).
 * @param {import('node:net').Server} server
 */
export function trackServer(server) {
  if (servers.has(server)) return;
  if (server instanceof http.Server || server instanceof https.Server) {
    const drainer = attachDrain(server);
    const close = server.close;
    /** @type {Promise<void> | null} */
    let drained = null;
    const drain = () =>
      (drained ??= drainer.drain({ deadlineMs, graceMs, spreadMs }).then(
        () => {},
        () => {},
      ));
    /** @param {((err?: Error) => void) | undefined} cb */
    server.close = function closeDraining(cb) {
      // The engine stops the listener with this same call once it drains: that one is net's.
      if (drainer.draining) return close.call(this, cb);
      drain().then(() => cb?.());
      return this;
    };
    servers.set(server, drain);
  } else {
    servers.set(server, () => new Promise((resolve) => server.close(() => resolve())));
  }
}

/**
 * Installs the drain-signal handler (guarantee 2).
 * @param {NodeJS.ProcessEnv} env
 */
export function shutdownOnSignal(env) {
  const signal = /** @type {NodeJS.Signals} */ (env.QUIESCE_DRAIN_SIGNAL || 'SIGTERM');
  let started = false;
  const onSignal = () => {
    if (started) return;
    if (process.listeners(signal).some((l) => l !== onSignal)) return;
    started = true;
    const late = setTimeout(() => process.exit(0), budget + 100);
    Promise.all([...servers.values()].map((drain) => drain())).then(() => {
      clearTimeout(late);
      process.exit(0);
    });
  };
  process.on(signal, onSignal);
}
