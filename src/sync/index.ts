/**
 * quiesce/sync — MVar, Chan, Queue, Semaphore and `select`, all safe under cancellation.
 *
 * Guarantees of this part, and where each is kept:
 * 1. Cancelled means it did not happen: every blocking operation waits by core's
 *    register → claim → commit | abort protocol, so an interrupted wait took, added or holds
 *    nothing, and a wait that was handed its value returns it (mvar.ts, chan.ts, queue.ts,
 *    semaphore.ts).
 * 2. No item is lost or duplicated and no permit leaked, whatever is cancelled when.
 * 3. `MVar.modify`/`with` leave the MVar full whatever happens (mvar.ts).
 * 4. FIFO: items in order, waiters served in arrival order (all four).
 * 5. `select` commits exactly one event; the losers leave no trace; a timer, an abort or a
 *    closed channel is a result, not an exception (select.ts).
 * 6. An operation that does not block is not interruptible under `mask`.
 * 7. An `Event` is set once and wakes every waiter; a wait on it is a checkpoint (event.ts).
 */
export { type ChanRead, Chan } from './chan.ts';
export { ChanClosedError, QueueClosedError } from './errors.ts';
export { Event } from './event.ts';
export { MVar } from './mvar.ts';
export { Queue } from './queue.ts';
export {
  after,
  aborted,
  deadlineAt,
  type EventValue,
  type SelectEvent,
  type Selected,
  select,
  taskDone,
  type Waiter,
} from './select.ts';
export { Semaphore } from './semaphore.ts';
