/**
 * The preload `quiesce run` gives Node workers (through `NODE_OPTIONS=--import=…`), so that an
 * app that knows nothing of quiesce — `app.listen(8080)` — runs as a worker as it is. Plain
 * JavaScript on purpose: it runs on the worker's own Node, whatever version >= 20 is first in
 * `PATH`, and it imports only Node built-ins (every worker start, and every wrapper's start,
 * pays for what it loads).
 *
 * Guarantees:
 * 1. It acts only where the supervisor's sockets are (sockets.js, guarantee 1): in every other
 *    process, and in worker threads, it does nothing but stay in `NODE_OPTIONS`.
 * 2. A `listen(port)`, `listen({ port, host })`, `listen(path)` or `listen({ fd })` that means
 *    one of the sockets (sockets.js, guarantee 2) listens on the inherited descriptor instead
 *    of binding: no EADDRINUSE, and the connections come from the queue the supervisor keeps.
 * 3. `READY=1` goes to the supervisor once every inherited socket is listened on in this
 *    process — written by the process that listens, never by a wrapper.
 * 4. A wrapper that does not listen hands the sockets on to its children (pass-on.js), so
 *    `quiesce run -- npm start` (npm → sh → node) works like `-- node app.js`.
 * 5. In the process that listens: `LISTEN_PID` is its own pid (so libraries that check it,
 *    quiesce/net among them, accept the sockets under a wrapper too), and every node:http or
 *    node:https server that listens gets the HTTP drain (shutdown.js). On the drain signal
 *    (`QUIESCE_DRAIN_SIGNAL`, default SIGTERM) the servers drain within the budget and the
 *    process exits — unless the app handles that signal itself: then its handler runs, and
 *    the drain applies when it calls `server.close()`.
 * 6. With `QUIESCE_WARM_UP` (`--warm-up`), a node:http server answers that many requests of
 *    its own before it listens on an inherited socket (warm-up.js); without it, nothing waits.
 */
import { isMainThread } from 'node:worker_threads';
import { inheritedSockets } from './sockets.js';

// Everything else loads only here, in a process that holds the sockets (guarantee 1).
const sockets = isMainThread ? inheritedSockets(process.env) : [];
if (sockets.length > 0) (await import('./install.js')).install(sockets);
