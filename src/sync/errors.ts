/**
 * The errors of `quiesce/sync`. Both are ordinary (synchronous) errors with stable codes: a
 * closed channel or queue is a fact about the data, never a cancellation.
 */
import { QuiesceError } from '../core/index.ts';

/**
 * A write to a closed `Chan`, or a `read()` from one that is closed and drained.
 * `code`: `ERR_CHAN_CLOSED`.
 */
export class ChanClosedError extends QuiesceError {
  constructor(op: 'read' | 'write') {
    super(
      'ERR_CHAN_CLOSED',
      op === 'read'
        ? 'read from a closed channel with no buffered item left'
        : 'write to a closed channel',
    );
  }
}

/**
 * A put to a closed `Queue` (including a put that was blocked when it closed — its item was not
 * added), or a `get()` from one that is closed and drained. `code`: `ERR_QUEUE_CLOSED`.
 */
export class QueueClosedError extends QuiesceError {
  constructor(op: 'get' | 'put') {
    super(
      'ERR_QUEUE_CLOSED',
      op === 'get'
        ? 'get from a closed queue with no buffered item left'
        : 'put to a closed queue (the item was not added)',
    );
  }
}
