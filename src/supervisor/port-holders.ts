/**
 * Who holds an address: the processes with a listening socket on a TCP port or a unix path,
 * read from /proc (Linux). Used only on the error path — "address already in use" — so the
 * user learns which process to stop (often the workers of a supervisor that was killed).
 *
 * Guarantees:
 * 1. Never throws and never blocks on the network: what /proc does not show (another OS,
 *    processes of other users without privileges) is simply left out.
 * 2. Bounded: at most `MAX_SHOWN` holders are named, and each /proc file is read once.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

const MAX_SHOWN = 5;

/** The address whose holders to look for. */
export type HeldAddress = { kind: 'tcp'; port: number } | { kind: 'unix'; path: string };

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** Inodes of the listening sockets on `a`. */
function listeningInodes(a: HeldAddress): Set<string> {
  const inodes = new Set<string>();
  if (a.kind === 'tcp') {
    const hexPort = a.port.toString(16).toUpperCase().padStart(4, '0');
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
      for (const line of read(table).split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        // sl local rem st … inode: st 0A is LISTEN.
        if (f.length > 9 && f[3] === '0A' && f[1].endsWith(`:${hexPort}`)) inodes.add(f[9]);
      }
    }
  } else {
    for (const line of read('/proc/net/unix').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // Num RefCount Protocol Flags Type St Inode Path; flag 00010000 is __SO_ACCEPTCON.
      if (f.length > 7 && f[7] === a.path && (Number.parseInt(f[3], 16) & 0x10000) !== 0) {
        inodes.add(f[6]);
      }
    }
  }
  return inodes;
}

/**
 * The processes holding a listening socket on `a`: pid and command line, at most `MAX_SHOWN`.
 * **Cancellation**: synchronous; not a checkpoint.
 * @example
 * findHolders({ kind: 'tcp', port: 8080 }); // [{ pid: 4242, command: 'node app.js' }]
 */
export function findHolders(a: HeldAddress): { pid: number; command: string }[] {
  const inodes = listeningInodes(a);
  if (inodes.size === 0) return [];
  const wanted = new Set([...inodes].map((i) => `socket:[${i}]`));
  const out: { pid: number; command: string }[] = [];
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return [];
  }
  for (const pid of pids) {
    if (Number(pid) === process.pid) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or not ours to look at
    }
    const holds = fds.some((fd) => {
      try {
        return wanted.has(readlinkSync(`/proc/${pid}/fd/${fd}`));
      } catch {
        return false;
      }
    });
    if (!holds) continue;
    const command = read(`/proc/${pid}/cmdline`).split('\0').filter(Boolean).join(' ');
    out.push({ pid: Number(pid), command: command || '?' });
    if (out.length >= MAX_SHOWN) break;
  }
  return out;
}

/**
 * `'; held by pid 4242 (node app.js)'` for the error message, or `''` when nobody is found.
 * **Cancellation**: synchronous; not a checkpoint.
 */
export function describeHolders(a: HeldAddress): string {
  const hs = findHolders(a);
  if (hs.length === 0) return '';
  const cut = (c: string) => (c.length > 80 ? `${c.slice(0, 77)}...` : c);
  return `; held by ${hs.map((h) => `pid ${h.pid} (${cut(h.command)})`).join(', ')}`;
}
