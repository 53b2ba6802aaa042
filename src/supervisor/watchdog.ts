/**
 * The watchdog: a tiny shell process that outlives the supervisor only to stop its workers.
 * A supervisor killed with SIGKILL (or by the OOM killer) runs no code at all; without this,
 * its workers — in their own sessions, on purpose — would serve old code forever.
 *
 * Guarantees:
 * 1. The supervisor's death, however it happens, is noticed: the watchdog reads a pipe whose
 *    only write end the supervisor holds, and the kernel closes it when the supervisor dies.
 * 2. On that end-of-file, every worker process group still registered gets the drain signal,
 *    and SIGKILL once `drainTimeoutMs` has passed; then the watchdog exits. Workers of any
 *    language drain as they would on a stop; nothing needs to run inside them.
 * 3. After a clean stop no group is registered, and the watchdog exits at once.
 * 4. It never keeps the supervisor alive (unreferenced), runs in its own session (a terminal's
 *    Ctrl-C does not reach it), and costs one `/bin/sh`: no Node process, no polling while the
 *    supervisor lives.
 */
import { type ChildProcess, spawn } from 'node:child_process';

// stdin: "+PGID" registers a group, "-PGID" forgets it. EOF: the supervisor is gone.
const SCRIPT = `
sig=$1; steps=$2; sup=$3; groups=""
while IFS= read -r l; do
  case "$l" in
    +*) groups="$groups \${l#+}" ;;
    -*) g=\${l#-}; n=""; for x in $groups; do [ "$x" = "$g" ] || n="$n $x"; done; groups=$n ;;
  esac
done
[ -z "$groups" ] && exit 0
echo "quiesce: supervisor $sup is gone: sending SIG$sig to its workers' process groups:$groups" >&2
for g in $groups; do kill -s "$sig" -- "-$g" 2>/dev/null; done
i=0
while [ "$i" -lt "$steps" ]; do
  alive=""
  for g in $groups; do kill -s 0 -- "-$g" 2>/dev/null && alive="$alive $g"; done
  [ -z "$alive" ] && exit 0
  groups=$alive; i=$((i + 1)); sleep 0.1
done
echo "quiesce: workers still running after the drain timeout: SIGKILL to$groups" >&2
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
exit 0
`;

/** @internal the supervisor's side of the watchdog process. */
export class Watchdog {
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  #closed = false;

  private constructor(child: ChildProcess) {
    this.#child = child;
    this.#exited = new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.once('error', () => resolve());
    });
    child.stdin?.on('error', () => {}); // a watchdog that died: the supervisor lives on
    child.unref();
    (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  }

  /**
   * Starts the watchdog; null if it cannot be started (the supervisor runs without it).
   * **Cancellation**: synchronous; not a checkpoint.
   */
  static start(drainSignal: NodeJS.Signals, drainTimeoutMs: number): Watchdog | null {
    try {
      const steps = String(Math.ceil(drainTimeoutMs / 100));
      const child = spawn(
        '/bin/sh',
        [
          '-c',
          SCRIPT,
          'quiesce-watchdog',
          drainSignal.replace(/^SIG/, ''),
          steps,
          String(process.pid),
        ],
        { stdio: ['pipe', 'ignore', 'inherit'], detached: true },
      );
      if (child.pid === undefined) return null;
      return new Watchdog(child);
    } catch {
      return null;
    }
  }

  /** The watchdog's pid. */
  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** Registers process group `pgid` (a worker just started). */
  add(pgid: number): void {
    if (!this.#closed) this.#child.stdin?.write(`+${pgid}\n`);
  }

  /** Forgets process group `pgid` (the worker's group is gone). */
  remove(pgid: number): void {
    if (!this.#closed) this.#child.stdin?.write(`-${pgid}\n`);
  }

  /**
   * Ends the watchdog after a clean stop and waits (up to a second) until it has exited.
   * **Cancellation**: not a checkpoint.
   */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#child.stdin?.end();
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#exited,
      new Promise<void>((r) => {
        timer = setTimeout(r, 1000);
      }),
    ]);
    clearTimeout(timer);
  }
}
