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
