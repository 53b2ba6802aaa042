/**
 * Command-line parsing for `quiesce`. Pure: argv in, a command or a `UsageError` out.
 *
 * Guarantees:
 * 1. Every mistake is a `UsageError` whose message names the offending word and the fix, and
 *    whose `command` names the help that explains it (`run` for every `run` option); the CLI
 *    prints it with that pointer and exits with status 2.
 * 2. For `run`, options stop at `--` or at the first word that is not an option, so the
 *    worker's own flags are never read as ours.
 */
import { QuiesceError } from '../core/index.ts';
import {
  checkDistinct,
  type ListenSpec,
  MAX_WORKERS,
  parseListenSpec,
  type SupervisorOptions,
  supervisorDefaults,
} from '../supervisor/index.ts';

/** A mistake on the command line (exit status 2). */
export class UsageError extends QuiesceError {
  /** The subcommand whose help applies, if known. */
  readonly command: string | undefined;
  constructor(message: string, command?: string) {
    super('ERR_USAGE', message);
    this.command = command;
  }
}

/** Where the client commands find the supervisor. */
export interface Target {
  readonly name: string;
  readonly control: string | undefined;
}

/** A parsed command line. */
export type Command =
  | {
      readonly kind: 'help';
      readonly topic: string | undefined;
      /** `quiesce` with no command at all: the help goes to stderr, exit status 2. */
      readonly bare?: boolean;
    }
  | { readonly kind: 'version' }
  | {
      readonly kind: 'run';
      /** Exactly the options the user set; the supervisor applies its defaults to the rest. */
      readonly options: RunOptions;
      readonly command: string;
      readonly args: readonly string[];
    }
  | ({ readonly kind: 'reload'; readonly json: boolean } & Target)
  | ({ readonly kind: 'status'; readonly json: boolean; readonly ready: boolean } & Target)
  | ({ readonly kind: 'stop'; readonly wait: boolean } & Target);

/** The supervisor options `quiesce run` can set. */
export type RunOptions = Omit<
  SupervisorOptions,
  'command' | 'args' | 'env' | 'cwd' | 'log' | 'closeLeakedFds' | 'listen'
> & { readonly listen?: readonly ListenSpec[] };

interface OptSpec {
  readonly long: string;
  readonly short?: string;
  readonly value: boolean;
}

const RUN_OPTS: OptSpec[] = [
  { long: 'listen', short: 'l', value: true },
  { long: 'workers', short: 'w', value: true },
  { long: 'ready-timeout', value: true },
  { long: 'drain-timeout', value: true },
  { long: 'drain-spread', value: true },
  { long: 'warm-up', value: true },
  { long: 'shutdown-delay', value: true },
  { long: 'assume-ready-after', value: true },
  { long: 'ready-on-listen', value: false },
  { long: 'no-preload', value: false },
  { long: 'no-compile-cache', value: false },
  { long: 'drain-signal', value: true },
  { long: 'max-restarts', value: true },
  { long: 'restart-window', value: true },
  { long: 'name', value: true },
  { long: 'control', value: true },
  { long: 'no-control', value: false },
  { long: 'no-systemd', value: false },
  { long: 'help', short: 'h', value: false },
];

const CLIENT_OPTS: OptSpec[] = [
  { long: 'name', value: true },
  { long: 'control', value: true },
  { long: 'json', value: false },
  { long: 'help', short: 'h', value: false },
];

const STOP_OPTS: OptSpec[] = [
  { long: 'name', value: true },
  { long: 'control', value: true },
  { long: 'no-wait', value: false },
  { long: 'help', short: 'h', value: false },
];

// Past these, a value is a typo, not a policy (and --workers would exhaust descriptors).
const MAX_RESTARTS = 1_000_000;

const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH'];

/** The longest duration an option takes: past a day, a timeout is a typo, not a policy. */
export const MAX_DURATION_MS = 24 * 3_600_000;

/** Commands and their help topics. */
export const COMMANDS = ['run', 'reload', 'status', 'stop'] as const;

/**
 * Parses a duration: `500ms`, `10s`, `2m`, `1h`, or a bare number of milliseconds; at most
 * `MAX_DURATION_MS` (24h). `command` names the help a mistake points to.
 * @example
 * parseDuration('--drain-timeout', '30s'); // 30000
 */
export function parseDuration(flag: string, text: string, command = 'run'): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) {
    throw new UsageError(
      `${flag}: "${text}" is not a duration (examples: 500ms, 10s, 2m)`,
      command,
    );
  }
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 'ms'] ?? 1;
  const ms = Math.round(Number(m[1]) * unit);
  if (ms > MAX_DURATION_MS) {
    throw new UsageError(`${flag}: ${text} is more than the maximum, 24h`, command);
  }
  return ms;
}

function parseCount(flag: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text) || Number(text) < min) {
    throw new UsageError(`${flag}: "${text}" is not a whole number >= ${min}`, 'run');
  }
  if (Number(text) > max) {
    throw new UsageError(`${flag}: ${text} is more than the maximum, ${max}`, 'run');
  }
  return Number(text);
}

type Parsed = { opts: Map<string, string[]>; rest: string[] };

/** Reads options until `--` or (when `stopAtWord`) the first non-option word. */
function parseOptions(
  argv: readonly string[],
  specs: OptSpec[],
  cmd: string,
  stopAtWord: boolean,
): Parsed {
  const opts = new Map<string, string[]>();
  const rest: string[] = [];
  const add = (k: string, v: string) => opts.set(k, [...(opts.get(k) ?? []), v]);
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      if (stopAtWord) break;
      rest.push(a);
      continue;
    }
    let name: string;
    let inline: string | undefined;
    let spec: OptSpec | undefined;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      inline = eq < 0 ? undefined : a.slice(eq + 1);
      spec = specs.find((s) => s.long === name);
    } else {
      name = a.slice(1);
      spec = specs.find((s) => s.short === name);
    }
    if (!spec) throw new UsageError(`unknown option ${a}`, cmd);
    if (!spec.value) {
      if (inline !== undefined) throw new UsageError(`--${spec.long} takes no value`, cmd);
      add(spec.long, '');
      continue;
    }
    let v = inline;
    if (v === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`--${spec.long} needs a value`, cmd);
      v = argv[++i];
    }
    add(spec.long, v);
  }
  rest.push(...argv.slice(i));
  return { opts, rest };
}

function last(p: Parsed, k: string): string | undefined {
  const v = p.opts.get(k);
  return v ? v[v.length - 1] : undefined;
}

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

function checkName(name: string, cmd: string): string {
  if (!NAME.test(name)) {
    throw new UsageError(`--name: "${name}" is not a name (1 to 64 letters, digits, . _ -)`, cmd);
  }
  return name;
}

function checkControl(path: string | undefined, cmd: string): string | undefined {
  if (path === '') throw new UsageError('--control needs a path, not an empty string', cmd);
  return path;
}

function target(p: Parsed, cmd: string): Target {
  if (p.rest.length > 0) throw new UsageError(`unexpected argument "${p.rest[0]}"`, cmd);
  return {
    name: checkName(last(p, 'name') ?? supervisorDefaults.name, cmd),
    control: checkControl(last(p, 'control'), cmd),
  };
}

/**
 * Parses `quiesce`'s arguments (without `node` and the script).
 * @example
 * parseArgs(['run', '--listen', '8080', '--', 'node', 'server.js']).kind; // 'run'
 */
export function parseArgs(argv: readonly string[]): Command {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) return { kind: 'help', topic: undefined, bare: true };
  if (cmd === '-h' || cmd === '--help') return { kind: 'help', topic: undefined };
  if (cmd === 'help') {
    const [topic, extra] = rest;
    if (topic !== undefined && !(COMMANDS as readonly string[]).includes(topic)) {
      throw new UsageError(`unknown help topic "${topic}" (topics: ${COMMANDS.join(', ')})`);
    }
    if (extra !== undefined) throw new UsageError(`unexpected argument "${extra}"`);
    return { kind: 'help', topic };
  }
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') return { kind: 'version' };
  switch (cmd) {
    case 'run':
      return parseRun(rest);
    case 'reload': {
      const p = parseOptions(rest, CLIENT_OPTS, cmd, false);
      if (p.opts.has('help')) return { kind: 'help', topic: cmd };
      return { kind: cmd, json: p.opts.has('json'), ...target(p, cmd) };
    }
    case 'status': {
      const p = parseOptions(rest, [...CLIENT_OPTS, { long: 'ready', value: false }], cmd, false);
      if (p.opts.has('help')) return { kind: 'help', topic: cmd };
      const ready = p.opts.has('ready');
      if (ready && p.opts.has('json')) {
        throw new UsageError('--ready and --json contradict each other', cmd);
      }
      return { kind: cmd, json: p.opts.has('json'), ready, ...target(p, cmd) };
    }
    case 'stop': {
      const p = parseOptions(rest, STOP_OPTS, cmd, false);
      if (p.opts.has('help')) return { kind: 'help', topic: cmd };
      return { kind: 'stop', wait: !p.opts.has('no-wait'), ...target(p, cmd) };
    }
    default:
      if (cmd.startsWith('-'))
        throw new UsageError(`unknown option ${cmd} (expected a command first)`);
      throw new UsageError(`unknown command "${cmd}" (commands: ${COMMANDS.join(', ')})`);
  }
}

function parseRun(argv: readonly string[]): Command {
  const p = parseOptions(argv, RUN_OPTS, 'run', true);
  if (p.opts.has('help')) return { kind: 'help', topic: 'run' };
  const options: { -readonly [K in keyof RunOptions]: RunOptions[K] } = {};
  if (p.opts.has('listen')) {
    try {
      const listen = (p.opts.get('listen') ?? []).map(parseListenSpec);
      checkDistinct(listen);
      options.listen = listen;
    } catch (e) {
      throw new UsageError((e as Error).message, 'run');
    }
  }
  const dur = (flag: string, min = 0): number | undefined => {
    const v = last(p, flag);
    if (v === undefined) return undefined;
    const d = parseDuration(`--${flag}`, v, 'run');
    if (d < min) throw new UsageError(`--${flag} must be at least ${min} ms`, 'run');
    return d;
  };
  const count = (flag: string, min: number, max: number): number | undefined => {
    const v = last(p, flag);
    return v === undefined ? undefined : parseCount(`--${flag}`, v, min, max);
  };
  const set = <K extends keyof RunOptions>(k: K, v: RunOptions[K] | undefined) => {
    if (v !== undefined) options[k] = v;
  };
  set('workers', count('workers', 1, MAX_WORKERS));
  set('readyTimeoutMs', dur('ready-timeout', 1));
  set('drainTimeoutMs', dur('drain-timeout'));
  set('drainSpreadMs', dur('drain-spread'));
  set('warmUp', last(p, 'warm-up'));
  set('shutdownDelayMs', dur('shutdown-delay'));
  set('assumeReadyAfterMs', dur('assume-ready-after'));
  set('maxRestarts', count('max-restarts', 0, MAX_RESTARTS));
  set('restartWindowMs', dur('restart-window', 1));
  const signal = last(p, 'drain-signal')?.toUpperCase();
  if (signal !== undefined) {
    const drainSignal = (signal.startsWith('SIG') ? signal : `SIG${signal}`) as NodeJS.Signals;
    if (!SIGNALS.includes(drainSignal)) {
      throw new UsageError(`--drain-signal: use one of ${SIGNALS.join(', ')}`, 'run');
    }
    options.drainSignal = drainSignal;
  }
  if (p.opts.has('ready-on-listen') && p.opts.has('no-preload')) {
    throw new UsageError('--ready-on-listen and --no-preload contradict each other', 'run');
  }
  if (p.opts.has('no-preload')) options.preload = false;
  if (p.opts.has('no-compile-cache')) options.compileCache = false;
  if (p.opts.has('no-systemd')) options.systemd = false;
  if (p.opts.has('control') && p.opts.has('no-control')) {
    throw new UsageError('--control and --no-control contradict each other', 'run');
  }
  if (p.opts.has('no-control')) options.control = false;
  else set('control', checkControl(last(p, 'control'), 'run'));
  const name = last(p, 'name');
  if (name !== undefined) options.name = checkName(name, 'run');
  const [command, ...args] = p.rest;
  if (command === undefined) {
    throw new UsageError(
      'missing the worker command (quiesce run [options] -- <command> [args…])',
      'run',
    );
  }
  return { kind: 'run', options, command, args };
}
