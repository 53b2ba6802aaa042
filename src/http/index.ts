/**
 * quiesce/http — reserved for the `node:http` lifecycle of DESIGN §3 (graceful draining of
 * keep-alive connections, request-scoped cancellation, readiness). It exports nothing yet;
 * the subpath exists so that the package's public surface is fixed from the first release.
 * Until it lands, serve HTTP through `quiesce/supervisor` with keep-alive off (see
 * examples/http-worker.ts).
 */
export {};
