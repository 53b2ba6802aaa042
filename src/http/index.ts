/**
 * quiesce/http — `node:http` servers (Express, Fastify, Koa, Hono unchanged) that shut down
 * without losing a request.
 *
 * Guarantees of this part, and where each is kept:
 * 1. From drain start every response carries `Connection: close`, decided when its headers
 *    are written (drain.js).
 * 2. A connection is never closed while its client may be sending on it, and closes are
 *    graceful — FIN, leftover bytes read and discarded (bounded), close — never a reset on a
 *    healthy peer (drain.js).
 * 3. A drain is bounded by its deadline, and silent connections do not hold it (drain.js).
 * 4. Every request is a task: client gone, request deadline and drain deadline cancel it, and
 *    its cleanup runs (serve-http.ts).
 * 5. One shutdown budget, split into propagation, drain and cancel grace, checked at start-up;
 *    readiness and liveness probes that behave as Kubernetes expects (serve-http.ts).
 */
export {
  attachDrain,
  type ConnectionCounts,
  type ConnectionState,
  type DrainHandle,
  type DrainOptions,
  type DrainReport,
  type DrainRunOptions,
  type DrainStats,
} from './drain.js';
export { ShutdownBudgetError } from './errors.ts';
export {
  HttpServer,
  type HttpServerState,
  type HttpShutdownOptions,
  type HttpShutdownReport,
  type RequestListener,
  resolveBudget,
  SHUTDOWN_BUDGET_ENV,
  type ServeHttpOptions,
  type ServeTarget,
  type ShutdownPhases,
  serveHttp,
} from './serve-http.ts';
