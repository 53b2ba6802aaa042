/**
 * The errors `quiesce/http` throws. Each is a class with a stable `code` (docs/errors.md).
 */
import { QuiesceError } from '../core/index.ts';

/** The shutdown phases do not fit the shutdown budget (checked at start-up). */
export class ShutdownBudgetError extends QuiesceError {
  constructor(message: string) {
    super('ERR_SHUTDOWN_BUDGET', message);
  }
}
