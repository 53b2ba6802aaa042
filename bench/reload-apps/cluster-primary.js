// A node:cluster primary with 2 workers and a rolling restart on SIGHUP: fork a new worker,
// wait until it listens, disconnect an old one and wait for its exit, then the next. A new
// worker that exits before it listens ends the restart (the old ones keep serving). A worker
// that dies on its own is replaced. Prints `ready`, `reloaded N` / `reload failed N`, and
// `pids a,b` whenever the set of workers changes.
import cluster from 'node:cluster';
cluster.setupPrimary({ exec: process.env.APP_ENTRY });
/** @type {import('node:cluster').Worker[]} */
let workers = [];
const planned = new Set();
const pids = () => console.log(`pids ${workers.map((w) => w.process.pid).join(',')}`);
/** @returns {Promise<import('node:cluster').Worker | null>} */
const fork = () =>
  new Promise((resolve) => {
    const w = cluster.fork({ PORT: process.env.PORT });
    const fail = () => resolve(null);
    w.once('exit', fail);
    w.once('listening', () => {
      w.off('exit', fail);
      w.once('exit', () => {
        if (planned.has(w)) return;
        // Died on its own: replace it.
        workers = workers.filter((x) => x !== w);
        fork().then((n) => {
          if (n) workers.push(n);
          pids();
        });
      });
      resolve(w);
    });
  });
let chain = (async () => {
  for (let i = 0; i < 2; i++) {
    const w = await fork();
    if (w) workers.push(w);
  }
  console.log('ready');
  pids();
})();
let n = 0;
process.on('SIGHUP', () => {
  chain = chain.then(async () => {
    const id = ++n;
    for (const old of [...workers]) {
      const fresh = await fork();
      if (!fresh) {
        console.log(`reload failed ${id}`);
        return;
      }
      planned.add(old);
      const gone = new Promise((r) => old.once('exit', r));
      old.disconnect();
      await gone;
      workers = workers.filter((x) => x !== old).concat(fresh);
    }
    pids();
    console.log(`reloaded ${id}`);
  });
});
process.on('SIGTERM', () => {
  for (const w of Object.values(cluster.workers ?? {})) {
    if (!w) continue;
    planned.add(w);
    w.disconnect();
  }
  cluster.on('exit', () => {
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
  });
  setTimeout(() => process.exit(0), 5000).unref();
});
