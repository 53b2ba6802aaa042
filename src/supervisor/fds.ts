/**
 * Descriptor hygiene: what a worker inherits is exactly stdin/stdout/stderr, the listening
 * sockets and the readiness pipe.
 *
 * Guarantees:
 * 1. Everything Node opens is close-on-exec, and the supervisor passes its sockets explicitly,
 *    so the only way an unrelated descriptor reaches a worker is by having been inherited by
 *    the supervisor itself without close-on-exec. `closeLeakedFds` closes those (Linux, where
 *    `/proc/self/fdinfo` shows the flag); elsewhere it does nothing.
 * 2. It never closes 0–2 nor a descriptor in `keep` (the sockets systemd passed).
 */
import { closeSync, readdirSync, readFileSync } from 'node:fs';

// O_CLOEXEC on Linux (all architectures Node supports there).
const O_CLOEXEC = 0o2000000;

/**
 * Closes every descriptor above 2 that this process inherited without close-on-exec, except
 * those in `keep`; returns the numbers it closed. Call it before anything else is opened.
 * **Cancellation**: synchronous; not a checkpoint.
 * @example
 * closeLeakedFds(new Set([3, 4])); // keep the sockets systemd passed
 */
export function closeLeakedFds(keep: ReadonlySet<number>): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc/self/fd');
  } catch {
    return [];
  }
  const closed: number[] = [];
  for (const e of entries) {
    const fd = Number(e);
    if (!Number.isInteger(fd) || fd <= 2 || keep.has(fd)) continue;
    let info: string;
    try {
      info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // the directory handle readdirSync used, closed since
    }
    const m = /^flags:\s*([0-7]+)/m.exec(info);
    if (!m || (Number.parseInt(m[1], 8) & O_CLOEXEC) !== 0) continue;
    try {
      closeSync(fd);
      closed.push(fd);
    } catch {}
  }
  return closed;
}
