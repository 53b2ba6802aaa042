export { checkLeaks } from '../helpers/leaks.ts';

/** Lets queued promise continuations run: `n` microtask turns. */
export async function turns(n = 10): Promise<void> {
  for (let i = 0; i < n; i++) await null;
}

/** Bounds a test so that a hang fails with its name. */
export const bounded = { timeout: 15_000 };
