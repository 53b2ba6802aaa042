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
