/**
 * Finding the worker's program before the first start.
 *
 * Guarantees:
 * 1. A typo is a clear error at once (`CommandNotFoundError`, `CommandNotExecutableError`),
 *    instead of a worker that dies with status 127 on every start.
 * 2. The lookup follows the shell's: a name without `/` is searched in `PATH`, skipping
 *    entries that are not executable.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { CommandNotExecutableError, CommandNotFoundError } from './errors.ts';

function check(path: string, shown: string): string | null {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch {
    return null;
  }
  if (st.isDirectory()) throw new CommandNotExecutableError(shown, 'it is a directory');
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new CommandNotExecutableError(shown, 'permission denied (not executable)');
  }
  return path;
}

/**
 * The absolute path of `command`: looked up in `PATH` when it has no `/`, else relative to
 * `cwd`. Throws `CommandNotFoundError` or `CommandNotExecutableError`.
 * **Cancellation**: synchronous; not a checkpoint.
 * @example
 * resolveCommand('node', process.env); // '/usr/local/bin/node'
 */
export function resolveCommand(
  command: string,
  env: NodeJS.ProcessEnv,
  cwd: string = process.cwd(),
): string {
  if (command === '') throw new CommandNotFoundError('(empty)');
  if (command.includes('/')) {
    const found = check(resolve(cwd, command), command);
    if (!found) throw new CommandNotFoundError(command);
    return found;
  }
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    try {
      const found = check(join(resolve(cwd, dir), command), command);
      if (found) return found;
    } catch (e) {
      // A non-executable entry early in PATH does not hide an executable one later (as in sh).
      if (!(e instanceof CommandNotExecutableError)) throw e;
    }
  }
  throw new CommandNotFoundError(command);
}
