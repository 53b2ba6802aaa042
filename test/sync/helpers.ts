import { afterEach, beforeEach } from 'node:test';
import {
  assertNoLeaks,
  type ResourceSnapshot,
  snapshotResources,
} from '../../src/testing/index.ts';

/** Every test in the file must leave no task, deadline, timer or handle behind. */
export function checkLeaks(): void {
  let before: ResourceSnapshot;
  beforeEach(() => {
    before = snapshotResources();
  });
  afterEach(() => assertNoLeaks(before));
}

/** Lets queued promise continuations run: `n` microtask turns. */
export async function turns(n = 10): Promise<void> {
  for (let i = 0; i < n; i++) await null;
}

/** Bounds a test so that a hang fails with its name. */
export const bounded = { timeout: 15_000 };
