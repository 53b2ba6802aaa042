/**
 * Preloaded into Node workers by `quiesce run --ready-on-listen` (through `NODE_OPTIONS`), for
 * servers that do not call `notifyReady()` themselves: the worker reports `READY=1` once it
 * listens on every socket it was given.
 *
 * Guarantees:
 * 1. The signal comes from the worker itself, when its own `listen()` on an inherited socket
 *    has completed — not from a probe, which could not tell the generations apart.
 * 2. Only `listen({ fd })` on the inherited descriptors (3 … 3+LISTEN_FDS−1) counts; any other
 *    server the worker starts is ignored.
 * 3. The preload removes itself from `NODE_OPTIONS`, so processes the worker starts do not
 *    load it (nor report readiness on the worker's behalf).
 */
import * as net from 'node:net';
import { notifyReady } from './notify.ts';

const self = process.env.QUIESCE_PRELOAD;
if (self && process.env.NODE_OPTIONS) {
  process.env.NODE_OPTIONS = process.env.NODE_OPTIONS.split(self).join('').trim();
}
delete process.env.QUIESCE_PRELOAD;

const count = Number(process.env.LISTEN_FDS ?? 0);
const pending = new Set<number>();
if (process.env.QUIESCE_READY_FD && Number.isInteger(count) && count > 0) {
  for (let fd = 3; fd < 3 + count; fd++) pending.add(fd);
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function (this: net.Server, ...args: unknown[]) {
    const first = args[0] as { fd?: unknown } | null | undefined;
    const fd = typeof first === 'object' && first !== null ? first.fd : undefined;
    if (typeof fd === 'number' && pending.has(fd)) {
      this.once('listening', () => {
        pending.delete(fd);
        if (pending.size === 0) {
          net.Server.prototype.listen = listen;
          void notifyReady();
        }
      });
    }
    return listen.apply(this, args as Parameters<typeof listen>);
  } as typeof listen;
}
