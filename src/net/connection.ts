/**
 * `Connection`: one TCP or unix-socket connection, read and written with checkpoints.
 *
 * Guarantees, and who keeps them:
 * 1. Backpressure is real: nothing is read before the first read asks, and the socket is
 *    paused whenever PAUSE_AT bytes wait unread, so per connection at most PAUSE_AT (or one
 *    `readLine`'s `maxBytes`) plus the stream's high-water mark plus one socket read is ever
 *    buffered, whatever the peer sends; the rest waits in the kernel and TCP slows the peer.
 * 2. A cancelled read loses no byte: bytes are handed to a reader only through the commit
 *    protocol, and bytes whose commit is refused go back in front ("cancelled means it did
 *    not happen").
 * 3. A cancelled write wrote nothing: `write` waits for room *before* it hands its bytes to the
 *    socket, and hands them over without another wait.
 * 4. `readWithin` never throws for a timeout, the peer's EOF or the server's drain: they are
 *    values (`{ kind: 'timeout' | 'eof' | 'shutdown' }`), raced event-poll style.
 * 5. With an idle limit, every blocking read or write gives up after that long *from its call*,
 *    however the peer trickles bytes in — a slow peer cannot hold a connection open.
 * 6. `gracefulClose` never throws, is bounded by its timeout, and lets a healthy peer see our
 *    data and an orderly EOF, never a reset.
 */
import type net from 'node:net';
import { ArgumentError } from '../core/index.ts';
import {
  addDeadline,
  block,
  type Deadline,
  inCleanup,
  now,
  pendingCancellation,
  rejectCancelled,
  removeDeadline,
  type Waiter,
} from '../core/internal.ts';
import { after, type SelectEvent, select } from '../sync/select.ts';
import { type DrainFlag, neverDraining } from './drain.ts';
import {
  ConcurrentReadError,
  ConnectionClosedError,
  ConnectionError,
  IdleTimeoutError,
  LineTooLongError,
} from './errors.ts';

/** What `readWithin` returns: data, or why there is none — never an exception for these. */
export type ReadResult =
  | { readonly kind: 'data'; readonly data: Buffer }
  | { readonly kind: 'eof' }
  | { readonly kind: 'timeout' }
  | { readonly kind: 'shutdown' };

/** Options for `readWithin`. */
export interface ReadWithinOptions {
  /** Return at most this many bytes. Default: whatever is buffered. */
  maxBytes?: number;
  /** Return `{ kind: 'shutdown' }` when the server drains and no data is waiting. Default: true. */
  returnOnShutdown?: boolean;
}

/** Options for `readLine`. */
export interface ReadLineOptions {
  /** The longest line accepted, in bytes; longer ones raise `LineTooLongError`. Default: 65536. */
  maxBytes?: number;
}

/** Options for `gracefulClose`. */
export interface GracefulCloseOptions {
  /** How long to wait for the peer's EOF (and for our data to leave) before closing. Default: 2000. */
  timeoutMs?: number;
  /** Stop discarding after this many bytes from the peer. Default: 65536. */
  maxBytes?: number;
}

/** How a `gracefulClose` ended. */
export interface GracefulCloseResult {
  /**
   * `'eof'`: the peer closed its side — the clean end. `'timeout'`: it did not in time.
   * `'limit'`: it kept sending past `maxBytes`. `'error'`: the connection broke (reset).
   * `'closed'`: it was already closed on this side.
   */
  readonly outcome: 'eof' | 'timeout' | 'limit' | 'error' | 'closed';
  /** Bytes read and thrown away while waiting. */
  readonly discardedBytes: number;
}

/** @internal how a server configures its connections. */
export interface ConnectionSettings {
  idleTimeoutMs?: number;
  drain?: DrainFlag;
  id?: number;
}

const DEFAULT_LINE_MAX = 65536;
// The bits of Connection#flags.
const FLOWING = 1;
const LISTENING = 2;
const DISCARDING = 4;
const EOF_SEEN = 8;
const CLOSED_HERE = 16;
const CLOSE_EMITTED = 32;
const IS_CLOSED = 64;

/** A connection's state for closing, made only when it closes or `closed` is asked for. */
interface Rare {
  discarded: number;
  quiet: (() => void) | null;
  closing: Promise<GracefulCloseResult> | null;
  closed: Promise<void> | null;
  resolveClosed: (() => void) | null;
}
// What a blocked reader reads: bit 0 is the kind (data or line), bit 1 says it came from an
// event (`readEvent`, `lineEvent`); the error messages name the call from these.
const DATA = 0;
const LINE = 1;
const DATA_EVENT = 2;
const LINE_EVENT = 3;
/** `#readerMax` and `#readerIdleAt` for "no limit": a small integer keeps the field unboxed. */
const NONE = -1;
/** Unread bytes at which a connection stops reading from the socket (see guarantee 1). */
const PAUSE_AT = 65536;
const RESOLVED: Promise<void> = Promise.resolve();
/** Where a socket's shared listeners find their connection. */
const kConnection = Symbol('quiesce.connection');
type Owned = net.Socket & { [kConnection]: Connection };
/** What a reader's poll gives: a value (with the bytes it consumed), a failure, or "wait". */
type Polled<T> = { value: T; raw: Buffer | null } | Error | undefined;
const END: { value: null; raw: null } = { value: null, raw: null };
const VOID: { value: undefined } = { value: undefined };

function noop(): void {}

/**
 * The error for a `maxBytes` that is not a whole count: a fraction would make the byte count
 * drift from the bytes buffered (`Buffer.subarray` truncates), and bytes would be lost.
 */
function badMax(max: unknown, what: string): ArgumentError | null {
  if (max === Number.POSITIVE_INFINITY) return null;
  if (typeof max === 'number' && Number.isInteger(max) && max >= 1) return null;
  return new ArgumentError(
    `${what}: maxBytes must be an integer >= 1 or Infinity, got ${String(max)}`,
  );
}

let nextId = 1;
// The connection whose read is blocking right now: `block` calls its register synchronously,
// so a shared register finds the connection here instead of in a closure made per read.
let blocking: Connection | null = null;
let registerNext: (w: Waiter<any>) => void;
let onIdle: (l: IdleList) => void;

/**
 * The connections of one idle limit whose reads blocked, ordered by their reader's limit
 * (`#readerIdleAt`), with one deadline for the head: an idle connection holds two links
 * instead of a deadline of its own. A read that blocks moves its connection to the tail,
 * which keeps the order in O(1) — with one limit and a clock that does not go back, a later
 * call's limit is never earlier. A connection whose read has settled stays linked until the
 * head's deadline or its close finds it (no work per read that did not block).
 */
interface IdleList {
  readonly ms: number;
  head: Connection | null;
  tail: Connection | null;
  // Armed for the head's limit or earlier (a moved head leaves it early: it fires, re-arms).
  timer: Deadline | null;
}
// One list per idle limit in use (a server's connections share theirs); a few bytes each.
const idleLists = new Map<number, IdleList>();
type Listener = (this: net.Socket, ...args: any[]) => void;
let listeners: Record<'end' | 'error' | 'drain' | 'close' | 'data', Listener>;

/**
 * A connection handed to a `serve` handler. Reads are for one task at a time; writes may come
 * from several tasks (they go out in call order).
 * `await using conn` closes it gracefully.
 */
export class Connection implements AsyncDisposable {
  /** The Node socket underneath — an escape hatch; reading it directly voids guarantee 2. */
  readonly socket: net.Socket;
  /** A number unique in this process, for logs. */
  readonly id: number;
  // The list of this connection's idle limit; null without a limit.
  readonly #idle: IdleList | null;
  readonly #drain: DrainFlag;
  // Bytes received and not yet returned to a reader, in order; null until the first bytes
  // arrive (an idle connection holds no array).
  // Invariant: #queued === sum of #chunks[i].length, and no chunk is empty.
  #chunks: Buffer[] | null = null;
  #queued = 0;
  // readLine: the first #scanned unread bytes hold no '\n'.
  #scanned = 0;
  // Invariant: #flowing === the socket is resumed by us; false whenever #queued >= #pauseAt()
  // after a chunk arrived, outside gracefulClose.
  get #flowing(): boolean {
    return (this.#flags & FLOWING) !== 0;
  }
  set #flowing(v: boolean) {
    this.#flag(FLOWING, v);
  }
  get #listening(): boolean {
    return (this.#flags & LISTENING) !== 0;
  }
  set #listening(v: boolean) {
    this.#flag(LISTENING, v);
  }
  get #discarding(): boolean {
    return (this.#flags & DISCARDING) !== 0;
  }
  set #discarding(v: boolean) {
    this.#flag(DISCARDING, v);
  }
  get #eof(): boolean {
    return (this.#flags & EOF_SEEN) !== 0;
  }
  set #eof(v: boolean) {
    this.#flag(EOF_SEEN, v);
  }
  get #closedHere(): boolean {
    return (this.#flags & CLOSED_HERE) !== 0;
  }
  set #closedHere(v: boolean) {
    this.#flag(CLOSED_HERE, v);
  }
  get #closeEmitted(): boolean {
    return (this.#flags & CLOSE_EMITTED) !== 0;
  }
  set #closeEmitted(v: boolean) {
    this.#flag(CLOSE_EMITTED, v);
  }
  // The socket emitted 'close', or was destroyed.
  get #isClosed(): boolean {
    return (this.#flags & IS_CLOSED) !== 0;
  }
  set #isClosed(v: boolean) {
    this.#flag(IS_CLOSED, v);
  }
  // The booleans above, as bits of one field: every idle connection holds them.
  #flags = 0;
  #error: Error | null = null;
  // The one blocked reader and what it reads (kind, max: NONE for none). It is served on every wake-up (data,
  // 'end', 'error', 'close'). Invariant: #reader is null or pending iff no read is blocked on
  // this connection — an interrupted `read` leaves its settled waiter here (no unregister
  // closure per connection), and `#blocked()` clears it on the next look. Fields, not
  // closures: this is the hot path of every read that has to wait.
  #reader: Waiter<any> | null = null;
  #readerKind = DATA;
  #readerMax = 0;
  // The blocked reader's idle limit (NONE: none), and the connection's one idle timer
  // (re-armed lazily, so a read that does not block costs no timer operation). Whole numbers
  // (see #idleAt), so neither field is a boxed double on every idle connection.
  #readerIdleAt = NONE;
  // Links in #idle's list; in it iff #idle.head === this or #idlePrev !== null.
  #idlePrev: Connection | null = null;
  #idleNext: Connection | null = null;
  #wakeWriters: Set<() => void> | null = null;
  // What only closing (or asking for `closed`) needs, made on first use.
  #rare: Rare | null = null;
  // Bytes gracefulClose discarded.
  get #discarded(): number {
    return this.#rare === null ? 0 : this.#rare.discarded;
  }
  set #discarded(v: number) {
    this.#r().discarded = v;
  }
  // gracefulClose's wait, woken like a reader.
  get #quiet(): (() => void) | null {
    return this.#rare === null ? null : this.#rare.quiet;
  }
  set #quiet(v: (() => void) | null) {
    if (v !== null || this.#rare !== null) this.#r().quiet = v;
  }
  get #closing(): Promise<GracefulCloseResult> | null {
    return this.#rare === null ? null : this.#rare.closing;
  }
  set #closing(v: Promise<GracefulCloseResult> | null) {
    if (v !== null || this.#rare !== null) this.#r().closing = v;
  }
  // `closed`, made on first use: most connections are never asked. Invariant: once
  // #closeEmitted, #closed is null or resolved.
  get #closed(): Promise<void> | null {
    return this.#rare === null ? null : this.#rare.closed;
  }
  set #closed(v: Promise<void> | null) {
    if (v !== null || this.#rare !== null) this.#r().closed = v;
  }
  get #resolveClosed(): (() => void) | null {
    return this.#rare === null ? null : this.#rare.resolveClosed;
  }
  set #resolveClosed(v: (() => void) | null) {
    if (v !== null || this.#rare !== null) this.#r().resolveClosed = v;
  }

  #flag(bit: number, on: boolean): void {
    this.#flags = on ? this.#flags | bit : this.#flags & ~bit;
  }

  #r(): Rare {
    return (this.#rare ??= {
      discarded: 0,
      quiet: null,
      closing: null,
      closed: null,
      resolveClosed: null,
    });
  }

  /** @internal a server creates connections; so can you, from a connected socket. */
  constructor(socket: net.Socket, settings?: ConnectionSettings) {
    this.socket = socket;
    this.id = settings?.id ?? nextId++;
    const idle = settings?.idleTimeoutMs ?? Number.POSITIVE_INFINITY;
    if (typeof idle !== 'number' || Number.isNaN(idle) || idle <= 0) {
      throw new ArgumentError(`idleTimeoutMs must be a positive number, got ${String(idle)}`);
    }
    if (idle === Number.POSITIVE_INFINITY) this.#idle = null;
    else {
      let l = idleLists.get(idle);
      if (l === undefined) {
        l = { ms: idle, head: null, tail: null, timer: null };
        idleLists.set(idle, l);
      }
      this.#idle = l;
    }
    this.#drain = settings?.drain ?? neverDraining;
    // One shared listener per event, finding us through the socket: a closure per event and
    // connection would cost every idle connection a few hundred bytes.
    (socket as Owned)[kConnection] = this;
    socket.on('end', listeners.end);
    socket.on('error', listeners.error);
    socket.on('drain', listeners.drain);
    // A socket that already emitted 'close' never emits it again: without this, `closed` and
    // `gracefulClose` would wait forever.
    if (socket.closed) {
      this.#isClosed = true;
      this.#closeEmitted = true;
      return;
    }
    socket.on('close', listeners.close);
    if (socket.destroyed) this.#isClosed = true;
  }

  /** The peer's address, as Node reports it (undefined once closed, or for unix sockets). */
  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }

  /** The peer's port (TCP). */
  get remotePort(): number | undefined {
    return this.socket.remotePort;
  }

  /** Bytes received from the peer so far. */
  get bytesRead(): number {
    return this.socket.bytesRead;
  }

  /** Bytes handed to the kernel so far. */
  get bytesWritten(): number {
    return this.socket.bytesWritten;
  }

  /** True once the server started draining: finish the current exchange and return. */
  get draining(): boolean {
    return this.#drain.isSet;
  }

  /** Aborted when the server starts draining, for foreign APIs and event listeners. */
  get drainSignal(): AbortSignal {
    return this.#drain.signal;
  }

  /** Resolves when the socket is fully closed (never rejects; not a checkpoint). */
  get closed(): Promise<void> {
    if (this.#closed === null) {
      this.#closed = this.#closeEmitted
        ? RESOLVED
        : new Promise<void>((resolve) => {
            this.#resolveClosed = resolve;
          });
    }
    return this.#closed;
  }

  /**
   * Waits until the server starts draining; returns at once if it has.
   * **Cancellation**: a blocking checkpoint.
   * @example
   * await conn.waitDraining(); await conn.write('server going away\n');
   */
  waitDraining(): Promise<void> {
    return this.#drain.wait();
  }

  /** The blocked reader, or null (dropping one an interruption settled). */
  #blocked(): Waiter<any> | null {
    const w = this.#reader;
    if (w !== null && !w.pending) this.#reader = null;
    return this.#reader;
  }

  #wake(): void {
    const w = this.#blocked();
    if (w !== null && (this.#readerKind & 1) === DATA && this.#queued > 0 && !this.#closedHere) {
      // A data read with bytes to hand over (every request of a request/response loop):
      // #pollData's first branch, without its result object.
      this.#reader = null;
      const b = this.#take(this.#max());
      if (!w.commit(b)) this.#unread(b);
    } else if (w !== null) {
      const k = this.#readerKind;
      const r = this.#poll(k & 1, this.#max(), k === DATA_EVENT ? 'readEvent' : 'read');
      if (r === undefined) return; // nothing for it after all: it keeps waiting
      this.#reader = null;
      if (r instanceof Error) w.fail(r);
      else if (!w.commit(r.value) && r.raw !== null) this.#unread(r.raw);
    }
    const q = this.#quiet;
    if (q !== null) {
      this.#quiet = null;
      q();
    }
  }

  #wakeWrite(): void {
    const ws = this.#wakeWriters;
    if (ws) {
      this.#wakeWriters = null;
      for (const f of ws) f();
    }
  }

  /** Lets bytes flow in (a reader wants some): the first call starts reading the socket. */
  #want(): void {
    if (this.#flowing) return;
    this.#flowing = true;
    if (!this.#listening) {
      this.#listening = true;
      this.socket.on('data', listeners.data);
    }
    this.socket.resume();
  }

  #onData(chunk: Buffer): void {
    if (this.#discarding) {
      this.#discarded += chunk.length;
    } else if (chunk.length > 0) {
      (this.#chunks ??= []).push(chunk);
      this.#queued += chunk.length;
    }
    this.#wake();
    if (this.#queued >= this.#pauseAt() && this.#flowing) {
      // Nobody took the bytes: stop here and let the kernel and TCP hold the rest.
      this.#flowing = false;
      this.socket.pause();
    }
  }

  /**
   * Unread bytes at which reading stops. A waiting `readLine` may need up to its `maxBytes` + 1
   * bytes to find the line end or to know the line is too long: pausing below that would leave
   * it waiting for bytes that never come (and the poll that resumes the socket already ran).
   */
  #pauseAt(): number {
    return this.#blocked() !== null && (this.#readerKind & 1) === LINE && this.#max() >= PAUSE_AT
      ? this.#max() + 1
      : PAUSE_AT;
  }

  /** The blocked reader's `maxBytes`. */
  #max(): number {
    const m = this.#readerMax;
    return m === NONE ? Number.POSITIVE_INFINITY : m;
  }

  /** Takes up to `max` queued bytes; only called while some are queued. */
  #take(max: number): Buffer {
    const cs = this.#chunks!;
    // Hand over everything waiting in one buffer: one bigger write beats several small ones.
    const c = cs.length > 1 && max > cs[0].length ? this.#merged()! : cs[0];
    if (c.length <= max) {
      const chunks = this.#chunks!;
      if (chunks.length === 1) chunks.pop();
      else chunks.shift();
      this.#queued -= c.length;
      this.#scanned = Math.max(0, this.#scanned - c.length);
      return c;
    }
    this.#chunks![0] = c.subarray(max);
    this.#queued -= max;
    this.#scanned = Math.max(0, this.#scanned - max);
    return c.subarray(0, max);
  }

  /** The queued bytes as one buffer (merging chunks), or null if none. */
  #merged(): Buffer | null {
    const cs = this.#chunks;
    if (cs === null || cs.length === 0) return null;
    if (cs.length > 1) this.#chunks = [Buffer.concat(cs, this.#queued)];
    return this.#chunks![0];
  }

  /** Puts bytes a reader was handed but could not take back in front (commit refused). */
  #unread(raw: Buffer): void {
    (this.#chunks ??= []).unshift(raw);
    this.#queued += raw.length;
    this.#scanned = 0;
  }

  /**
   * Why no more bytes will come, as an error to raise, or null if they may — or if the end
   * is the peer's clean EOF, which callers check next.
   */
  #endError(what: string): Error | null {
    if (this.#closedHere) return new ConnectionClosedError(what);
    if (this.#error) return new ConnectionError(`${what}: ${this.#error.message}`, this.#error);
    if (!this.#eof && (this.#isClosed || this.socket.destroyed)) {
      return new ConnectionError(`${what}: the connection was closed`);
    }
    return null;
  }

  /**
   * When a blocking call made now gives up: whole milliseconds, rounded up (it never gives up
   * early), so the stored limit is a small integer rather than a boxed double.
   */
  #idleAt(): number {
    const l = this.#idle;
    return l === null ? Number.POSITIVE_INFINITY : Math.ceil(now() + l.ms);
  }

  #poll(kind: number, max: number, what: string): Polled<any> {
    return kind === DATA ? this.#pollData(max, what) : this.#pollLine(max);
  }

  /** Completes a data read now if it can: bytes, null at EOF, an error, or undefined (wait). */
  #pollData(max: number, what: string): Polled<Buffer | null> {
    if (this.#closedHere) return new ConnectionClosedError(what);
    if (this.#queued > 0) {
      const b = this.#take(max);
      return { value: b, raw: b };
    }
    const err = this.#endError(what);
    if (err) return err;
    if (this.#eof) return END;
    this.#want();
    return undefined;
  }

  /** Completes a line read now if it can (see `readLine`). */
  #pollLine(max: number): Polled<string | null> {
    if (this.#closedHere) return new ConnectionClosedError('readLine');
    if (this.#queued > 0) {
      const i = this.#findLineEnd();
      if (i >= 0) {
        if (i > max) return new LineTooLongError(max);
        const raw = this.#take(i + 1);
        const end = i > 0 && raw[i - 1] === 13 ? i - 1 : i;
        return { value: raw.toString('utf8', 0, end), raw };
      }
      if (this.#queued > max) return new LineTooLongError(max);
    }
    const err = this.#endError('readLine');
    if (err) return err;
    if (this.#eof) {
      if (this.#queued === 0) return END;
      const rest = this.#take(Number.POSITIVE_INFINITY);
      return { value: rest.toString('utf8'), raw: rest };
    }
    this.#want();
    return undefined;
  }

  /**
   * The offset of the first '\n' in the unread bytes, or -1. Only bytes not scanned before are
   * looked at and nothing is merged, so a long line arriving in many chunks costs linear time.
   */
  #findLineEnd(): number {
    const from = this.#scanned;
    let offset = 0;
    for (const c of this.#chunks ?? []) {
      if (offset + c.length > from) {
        const i = c.indexOf(10, from > offset ? from - offset : 0);
        if (i >= 0) return offset + i;
      }
      offset += c.length;
    }
    this.#scanned = offset;
    return -1;
  }

  /** `l`'s deadline: fails the blocked reads past their limit, drops settled ones, re-arms. */
  static #onIdleList(l: IdleList): void {
    l.timer = null;
    const t = now();
    for (let c = l.head; c !== null; c = l.head) {
      const w = c.#blocked();
      if (w !== null && c.#readerIdleAt > t) break; // the first not due: the rest are later
      c.#unlinkIdle();
      if (w !== null) {
        c.#reader = null;
        w.fail(new IdleTimeoutError(l.ms));
      }
    }
    if (l.head !== null) l.timer = addDeadline(l.head.#readerIdleAt, onIdle, l);
  }

  /** Moves this connection to the tail of its idle list (its read just blocked). */
  #linkIdle(l: IdleList): void {
    // Not #unlinkIdle: the timer of a list this connection alone is in stays for its new limit.
    this.#detachIdle(l);
    const at = this.#readerIdleAt;
    // Walk back past later limits: none in the common case; only a clock set back (a test
    // clock installed) makes a later call's limit earlier.
    let p = l.tail;
    while (p !== null && p.#readerIdleAt > at) p = p.#idlePrev;
    const n = p === null ? l.head : p.#idleNext;
    this.#idlePrev = p;
    this.#idleNext = n;
    if (p === null) l.head = this;
    else p.#idleNext = this;
    if (n === null) l.tail = this;
    else n.#idlePrev = this;
    const d = l.timer;
    if (d === null || d.at > l.head!.#readerIdleAt) {
      if (d !== null) removeDeadline(d);
      // One shared callback, given the list: no closure or deadline per connection.
      l.timer = addDeadline(l.head!.#readerIdleAt, onIdle, l);
    }
  }

  /** Takes this connection out of its idle list, if it is in it; an empty list has no timer. */
  #unlinkIdle(): void {
    const l = this.#idle;
    if (l === null) return;
    this.#detachIdle(l);
    if (l.head === null && l.timer !== null) {
      removeDeadline(l.timer);
      l.timer = null;
    }
  }

  #detachIdle(l: IdleList): void {
    if (l.head !== this && this.#idlePrev === null) return;
    const p = this.#idlePrev;
    const n = this.#idleNext;
    if (p === null) l.head = n;
    else p.#idleNext = n;
    if (n === null) l.tail = p;
    else n.#idlePrev = p;
    this.#idlePrev = this.#idleNext = null;
  }

  /**
   * Registers `w` as the one blocked reader: it is handed the first completed `poll()` after a
   * wake-up, fails on an error or at the idle limit `idleAt`. If the commit is refused (the
   * waiter was aborted meanwhile), the bytes go back in front — no byte lost (guarantee 2).
   * Returns an unregister that clears `w` only (the `SelectEvent` contract: harmless late).
   */
  #register(w: Waiter<any>, kind: number, max: number, idleAt: number): () => void {
    if (!this.#enqueue(w, kind, max, idleAt)) return noop;
    return () => {
      if (this.#reader === w) this.#reader = null;
    };
  }

  /**
   * Makes `w` the blocked reader (see #reader), or fails it if another one waits. `kind` is one
   * of DATA, LINE, DATA_EVENT, LINE_EVENT.
   */
  #enqueue(w: Waiter<any>, kind: number, max: number, idleAt: number): boolean {
    if (this.#blocked() !== null) {
      w.fail(new ConcurrentReadError());
      return false;
    }
    this.#reader = w;
    this.#setReader(kind, max, idleAt);
    if (idleAt !== Number.POSITIVE_INFINITY) this.#linkIdle(this.#idle!);
    return true;
  }

  /**
   * Blocks in `read`/`readLine` until served. Called only while no reader waits (#readOp
   * checks), so the reader fields can carry the arguments to `registerNext`.
   */
  #blockRead<T>(kind: number, max: number, idleAt: number): Promise<T> {
    this.#setReader(kind, max, idleAt);
    blocking = this;
    const p = block<T>(registerNext);
    blocking = null; // `block` may not have called it (a pending cancellation)
    return p;
  }

  #setReader(kind: number, max: number, idleAt: number): void {
    this.#readerKind = kind;
    this.#readerMax = max === Number.POSITIVE_INFINITY ? NONE : max;
    this.#readerIdleAt = idleAt === Number.POSITIVE_INFINITY ? NONE : idleAt;
  }

  static {
    // The socket's listeners, the same functions for every connection (`this` is the socket).
    listeners = {
      end(this: net.Socket) {
        const c = (this as Owned)[kConnection];
        c.#eof = true;
        c.#wake();
      },
      error(this: net.Socket, e: Error) {
        const c = (this as Owned)[kConnection];
        c.#error ??= e;
        c.#wake();
      },
      drain(this: net.Socket) {
        (this as Owned)[kConnection].#wakeWrite();
      },
      close(this: net.Socket) {
        const c = (this as Owned)[kConnection];
        c.#isClosed = true;
        c.#closeEmitted = true;
        c.#unlinkIdle();
        c.#wake();
        c.#wakeWrite();
        c.#resolveClosed?.();
        c.#resolveClosed = null;
      },
      data(this: net.Socket, chunk: Buffer) {
        (this as Owned)[kConnection].#onData(chunk);
      },
    };
    // `block`'s register for #blockRead. No unregister: an interrupted waiter is settled, and
    // a settled #reader counts as none (`#blocked`).
    registerNext = (w) => {
      const c = blocking!;
      blocking = null;
      const at = c.#readerIdleAt;
      c.#enqueue(w, c.#readerKind, c.#max(), at === NONE ? Number.POSITIVE_INFINITY : at);
    };
    onIdle = (l) => Connection.#onIdleList(l);
  }

  #readOp<T>(kind: number, max: number, what: string): Promise<T> {
    // Before any poll: polling would hand the waiting reader's bytes (a partial line) to us.
    if (this.#blocked() !== null) return Promise.reject(new ConcurrentReadError());
    const idleAt = this.#idleAt();
    if (this.#queued === 0 && !this.#eof && this.#error === null && !this.#closedHere) {
      // Nothing to hand over yet (the common case of a request/response loop): go straight to
      // the wait, whose own checkpoint raises a pending cancellation before anything happens.
      if (!this.#isClosed && !this.socket.destroyed) {
        this.#want();
        return this.#blockRead<T>(kind, max, idleAt);
      }
    }
    const cancelled = pendingCancellation();
    if (cancelled !== null) return rejectCancelled(cancelled);
    const r = this.#poll(kind, max, what);
    if (r instanceof Error) return Promise.reject(r);
    if (r !== undefined) return Promise.resolve(r.value);
    return this.#blockRead<T>(kind, max, idleAt);
  }

  /**
   * Reads the next bytes: whatever has arrived, at most `maxBytes`, waiting if nothing has.
   * Returns `null` at the peer's EOF. Throws `ConnectionError` if the connection broke and
   * `IdleTimeoutError` past the server's idle limit.
   * **Cancellation**: a checkpoint; blocks when nothing has arrived. A cancelled read consumed
   * nothing (guarantee 2).
   * @example
   * for (let b = await conn.read(); b !== null; b = await conn.read()) await conn.write(b);
   */
  read(maxBytes = Number.POSITIVE_INFINITY): Promise<Buffer | null> {
    const bad = badMax(maxBytes, 'read(maxBytes)');
    if (bad) return Promise.reject(bad);
    return this.#readOp(DATA, maxBytes, 'read');
  }

  /**
   * Reads one line (up to `\n`; a `\r` before it is dropped) as UTF-8 text, without the line
   * end. At EOF returns the unterminated rest, if any, then `null`. The whole line must arrive
   * within the idle limit: trickling bytes do not extend it.
   * **Cancellation**: a checkpoint; blocks until a whole line is there. A cancelled readLine
   * consumed nothing: the partial line stays for the next read.
   * @example
   * const cmd = await conn.readLine({ maxBytes: 1024 });
   */
  readLine(options?: ReadLineOptions): Promise<string | null> {
    const max = options?.maxBytes ?? DEFAULT_LINE_MAX;
    const bad = badMax(max, 'readLine');
    if (bad) return Promise.reject(bad);
    return this.#readOp(LINE, max, 'readLine');
  }

  /**
   * The event "bytes arrived" for `select`: its value is what `read(maxBytes)` would return
   * (`null` at EOF); it fails like `read`. The idle limit counts from this call.
   * **Cancellation**: not a checkpoint (it only describes the event); the `select` is. Losing
   * the select consumes nothing.
   * @example
   * const r = await select(conn.readEvent(), chan.readEvent(), after(30_000));
   */
  readEvent(maxBytes = Number.POSITIVE_INFINITY): SelectEvent<Buffer | null> {
    const bad = badMax(maxBytes, 'readEvent(maxBytes)');
    if (bad) throw bad;
    return this.#event(DATA, maxBytes, 'readEvent');
  }

  /**
   * The event "a whole line arrived" for `select`: its value is what `readLine` would return.
   * **Cancellation**: not a checkpoint; the `select` is. Losing the select consumes nothing.
   * @example
   * const r = await select(conn.lineEvent(), room.readEvent());
   * if (r.index === 0 && r.value === null) return; // the peer left
   */
  lineEvent(options?: ReadLineOptions): SelectEvent<string | null> {
    const max = options?.maxBytes ?? DEFAULT_LINE_MAX;
    const bad = badMax(max, 'lineEvent');
    if (bad) throw bad;
    return this.#event(LINE, max, 'lineEvent');
  }

  /**
   * The event "the server started draining" for `select`.
   * **Cancellation**: not a checkpoint; the `select` is.
   * @example
   * const r = await select(conn.lineEvent(), conn.drainingEvent());
   */
  drainingEvent(): SelectEvent<void> {
    const drain = this.#drain;
    return {
      poll: () => (drain.isSet ? VOID : undefined),
      register: (w) =>
        drain.subscribe(() => {
          w.commit();
        }),
    };
  }

  #event<T>(kind: number, max: number, what: string): SelectEvent<T> {
    const idleAt = this.#idleAt();
    return {
      poll: () => {
        // Another task's read waits: its bytes are not ours to take (select rejects with this).
        if (this.#blocked() !== null) throw new ConcurrentReadError();
        const r = this.#poll(kind, max, what);
        return r === undefined || r instanceof Error ? undefined : r;
      },
      register: (w) => {
        if (this.#blocked() !== null) {
          w.fail(new ConcurrentReadError());
          return noop;
        }
        // A state poll() could not report as a value (an error) fails the wait at once.
        const r = this.#poll(kind, max, what);
        if (r instanceof Error) {
          w.fail(r);
          return noop;
        }
        if (r !== undefined) {
          if (!w.commit(r.value) && r.raw !== null) this.#unread(r.raw);
          return noop;
        }
        return this.#register(w, kind === LINE ? LINE_EVENT : DATA_EVENT, max, idleAt);
      },
    };
  }

  /**
   * Reads with a time limit and says what happened instead of throwing: `{ kind: 'data', data }`,
   * `{ kind: 'eof' }`, `{ kind: 'timeout' }` after `ms` without data, or `{ kind: 'shutdown' }`
   * when the server drains while nothing is waiting (unless `returnOnShutdown: false`, or the
   * call is in the cleanup after a cancellation — a farewell read waits for data, EOF or `ms`,
   * as the drain is what it is cleaning up after). Data
   * already there wins over everything. Still throws for a broken connection, and
   * `IdleTimeoutError` if the server's idle limit is shorter than `ms` and runs out first.
   * Reference: `select(conn.readEvent(max), conn.drainingEvent(), after(ms))`.
   * **Cancellation**: a checkpoint; blocks up to `ms`. A cancelled call consumed nothing.
   * @example
   * const r = await conn.readWithin(5000);
   * if (r.kind === 'timeout') await conn.write('still there?\n');
   */
  async readWithin(ms: number, options?: ReadWithinOptions): Promise<ReadResult> {
    if (typeof ms !== 'number' || Number.isNaN(ms)) {
      throw new ArgumentError(`readWithin(ms): ms must be a number, got ${String(ms)}`);
    }
    const max = options?.maxBytes ?? Number.POSITIVE_INFINITY;
    const bad = badMax(max, 'readWithin');
    if (bad) throw bad;
    const data = this.readEvent(max);
    const r =
      options?.returnOnShutdown === false || inCleanup()
        ? await select(data, after(ms))
        : await select(data, after(ms), this.drainingEvent());
    if (r.index === 0) {
      const b = r.value as Buffer | null;
      return b === null ? EOF : { kind: 'data', data: b };
    }
    // Data that raced in with the timer or the drain still wins: the caller loses nothing.
    return r.index === 1 ? TIMEOUT : SHUTDOWN_RESULT;
  }

  /**
   * Writes `data` (a string is UTF-8). If the socket's buffer is over its high-water mark it
   * first waits until the peer has taken enough (backpressure), then hands the bytes over.
   * Throws `ConnectionError` if the connection broke, `ConnectionClosedError` after `end` or a
   * close, and `IdleTimeoutError` if the peer reads nothing for the idle limit.
   * **Cancellation**: a checkpoint; blocks only while the socket is full. A cancelled write
   * wrote nothing (guarantee 3).
   * @example
   * await conn.write('Hello.\n');
   */
  write(data: string | Uint8Array): Promise<void> {
    const s = this.socket;
    if (s.writableNeedDrain) return this.#writeAfterDrain(data);
    const cancelled = pendingCancellation();
    if (cancelled !== null) return rejectCancelled(cancelled);
    const err = this.#writeError('write');
    if (err) return Promise.reject(err);
    s.write(data);
    return RESOLVED;
  }

  async #writeAfterDrain(data: string | Uint8Array): Promise<void> {
    const s = this.socket;
    const idleAt = this.#idleAt();
    while (s.writableNeedDrain) {
      const err = this.#writeError('write');
      if (err) throw err;
      await this.#waitWrite(idleAt);
    }
    const err = this.#writeError('write');
    if (err) throw err;
    s.write(data);
  }

  #writeError(what: string): Error | null {
    if (this.#closedHere || this.socket.writableEnded) return new ConnectionClosedError(what);
    const err = this.#error;
    if (err) return new ConnectionError(`${what}: ${err.message}`, err);
    if (this.#isClosed || this.socket.destroyed) {
      return new ConnectionError(`${what}: the connection was closed`);
    }
    return null;
  }

  #waitWrite(idleAt: number): Promise<void> {
    let idle: Deadline | null = null;
    let wake: (() => void) | null = null;
    const cleanup = () => {
      if (idle) removeDeadline(idle);
      if (wake) this.#wakeWriters?.delete(wake);
    };
    return block<void>((w) => {
      wake = () => {
        cleanup();
        w.commit();
      };
      (this.#wakeWriters ??= new Set()).add(wake);
      if (idleAt !== Number.POSITIVE_INFINITY) {
        idle = addDeadline(idleAt, () => {
          cleanup();
          w.fail(new IdleTimeoutError(this.#idle!.ms));
        });
      }
      return cleanup;
    });
  }

  /**
   * Ends our side (a FIN once everything written has gone out); reading goes on until the
   * peer's EOF. Further writes throw `ConnectionClosedError`. Idempotent.
   * **Cancellation**: not a checkpoint; never blocks — safe in `finally`.
   * @example
   * await conn.write('bye\n'); conn.end();
   */
  end(): void {
    const s = this.socket;
    if (!s.writableEnded && !s.destroyed) s.end();
  }

  /**
   * Closes at once, without waiting for the peer: unsent data is dropped, and unread data
   * makes the kernel answer with a reset. Prefer `gracefulClose`; this is for broken peers.
   * Pending reads and writes of other tasks fail with `ConnectionClosedError`.
   * **Cancellation**: not a checkpoint; never blocks.
   */
  destroy(): void {
    this.#closedHere = true;
    this.socket.destroy();
    this.#wake();
    this.#wakeWrite();
  }

  /**
   * Closes the connection the way a healthy peer never sees as a reset: ends our side (FIN,
   * after our data), reads and discards until the peer's EOF, `maxBytes` or `timeoutMs`, then
   * closes. Resolves once the socket is closed; never rejects. Idempotent (later calls get the
   * first call's result). Pending reads of other tasks fail with `ConnectionClosedError`.
   * **Cancellation**: not a checkpoint, and nothing in it raises: it is bounded by `timeoutMs`
   * instead, so it is safe in `finally` and after a cancellation.
   * @example
   * try { await talk(conn); } finally { await conn.gracefulClose({ timeoutMs: 1000 }); }
   */
  gracefulClose(options?: GracefulCloseOptions): Promise<GracefulCloseResult> {
    if (this.#closing) return this.#closing;
    const timeoutMs = options?.timeoutMs ?? 2000;
    const maxBytes = options?.maxBytes ?? 65536;
    if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0) {
      throw new ArgumentError('gracefulClose: timeoutMs must be a number >= 0');
    }
    if (typeof maxBytes !== 'number' || Number.isNaN(maxBytes) || maxBytes < 0) {
      throw new ArgumentError('gracefulClose: maxBytes must be a number >= 0');
    }
    this.#closing = this.#gracefulClose(timeoutMs, maxBytes);
    return this.#closing;
  }

  async #gracefulClose(timeoutMs: number, maxBytes: number): Promise<GracefulCloseResult> {
    const s = this.socket;
    const already = this.#closedHere || this.#isClosed || s.destroyed;
    this.#closedHere = true;
    // Another task's pending read or write learns the connection is closing.
    this.#wake();
    this.#wakeWrite();
    if (already) {
      s.destroy();
      await this.closed;
      return { outcome: 'closed', discardedBytes: 0 };
    }
    if (!s.writableEnded) s.end();
    // From here every byte that arrives is counted and dropped (#onData).
    this.#discarding = true;
    this.#discarded = this.#queued;
    this.#chunks = null;
    this.#queued = 0;
    this.#scanned = 0;
    this.#want();
    const deadline = now() + timeoutMs;
    let outcome: GracefulCloseResult['outcome'] = 'timeout';
    for (;;) {
      if (this.#error) {
        outcome = 'error';
        break;
      }
      if (this.#discarded > maxBytes) {
        outcome = 'limit';
        break;
      }
      // EOF from the peer is only half of it: our own data must also have left (writableFinished)
      // before closing, or a slow reader would lose the end of what we wrote.
      if (this.#eof && s.writableFinished) {
        outcome = 'eof';
        break;
      }
      if (this.#isClosed || s.destroyed) {
        outcome = this.#eof ? 'eof' : 'error';
        break;
      }
      if (!(await this.#waitQuietly(deadline))) break;
    }
    const discarded = this.#discarded;
    s.destroy();
    await this.closed;
    return { outcome, discardedBytes: discarded };
  }

  /** Waits, without being a checkpoint, for a reader wake-up, 'finish' or `deadline`. */
  #waitQuietly(deadline: number): Promise<boolean> {
    if (deadline <= now()) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const done = (ok: boolean) => {
        if (this.#quiet === wake) this.#quiet = null;
        this.socket.off('finish', onFinish);
        removeDeadline(d);
        resolve(ok);
      };
      const onFinish = () => done(true);
      const d = addDeadline(deadline, () => done(false));
      const wake = () => done(true);
      this.#quiet = wake;
      this.socket.once('finish', onFinish);
    });
  }

  /** Closes gracefully with the default limits (`await using conn`). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.gracefulClose();
  }
}

const EOF: ReadResult = Object.freeze({ kind: 'eof' });
const TIMEOUT: ReadResult = Object.freeze({ kind: 'timeout' });
const SHUTDOWN_RESULT: ReadResult = Object.freeze({ kind: 'shutdown' });
