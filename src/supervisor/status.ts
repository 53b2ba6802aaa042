/**
 * What `status()` (and `quiesce status`) reports: the shapes, and the snapshot of one
 * generation's workers.
 *
 * Guarantee: a snapshot is plain data (JSON-safe), taken synchronously, so it is consistent —
 * no worker is shown in two states or two generations.
 */
import type { Generation } from './generation.ts';
import type { WorkerState } from './worker.ts';

/** What a successful reload did. */
export interface ReloadResult {
  /** The generation now serving. */
  readonly generation: number;
  /** The generation it replaced (draining now), or null for the first start. */
  readonly previous: number | null;
  /** The new workers' process ids. */
  readonly pids: readonly number[];
  /** From the start of the new generation until all its workers were ready. */
  readonly readyMs: number;
}

/** One worker in `status()`. */
export interface WorkerStatus {
  readonly slot: number;
  readonly pid: number | null;
  readonly state: WorkerState | 'restarting' | 'crash-loop';
  readonly uptimeMs: number;
  /** Restarts of this slot after crashes. */
  readonly restarts: number;
  /** The worker's last `STATUS=` line, if it wrote one. */
  readonly status: string | null;
}

/** A generation's lifecycle. */
export type GenerationState = 'starting' | 'serving' | 'draining' | 'failed';

/** One generation in `status()`. */
export interface GenerationStatus {
  readonly id: number;
  readonly state: GenerationState;
  readonly workers: readonly WorkerStatus[];
}

/** A snapshot of the supervisor, as `quiesce status` shows it. */
export interface SupervisorStatus {
  readonly pid: number;
  readonly state: 'starting' | 'running' | 'stopping' | 'stopped';
  readonly command: readonly string[];
  readonly startedAt: string;
  readonly uptimeMs: number;
  readonly control: string | null;
  readonly listeners: readonly { name: string; address: string; fd: number }[];
  /** The serving generation, or null before the first one is ready. */
  readonly generation: number | null;
  readonly reloads: {
    readonly ok: number;
    readonly failed: number;
    readonly running: boolean;
    readonly queued: boolean;
    readonly lastError: string | null;
  };
  /** Live generations, newest first. */
  readonly generations: readonly GenerationStatus[];
}

/** @internal the snapshot of `g` at time `t` (library clock). */
export function generationStatus(g: Generation, t: number): GenerationStatus {
  return {
    id: g.id,
    state: g.state,
    workers: g.slots.flatMap((s): WorkerStatus[] => {
      const procs = [...g.members].filter((m) => m.slot === s).map((m) => m.proc);
      if (procs.length === 0) {
        if (g.state !== 'serving') return [];
        const state = s.state === 'crash-loop' ? 'crash-loop' : 'restarting';
        return [
          { slot: s.index, pid: null, state, uptimeMs: 0, restarts: s.restarts, status: null },
        ];
      }
      return procs.map((p) => ({
        slot: s.index,
        pid: p.pid ?? null,
        state: p.state,
        uptimeMs: Math.round(t - p.startedAt),
        restarts: s.restarts,
        status: p.status,
      }));
    }),
  };
}
