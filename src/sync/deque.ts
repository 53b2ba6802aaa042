/**
 * A FIFO ring buffer: O(1) `push` and `shift` at any size (an `Array#shift` is O(n) once V8
 * leaves its fast path), used for the buffered items of `Chan` and `Queue`.
 *
 * Invariant: the items are buf[(head + i) & (buf.length - 1)] for 0 <= i < size, buf.length is
 * a power of two, and every other slot holds `undefined` (so a shifted item can be collected).
 */
export class Deque<T> {
  #buf: (T | undefined)[] = new Array(16).fill(undefined);
  #head = 0;
  #size = 0;

  /** How many items are buffered. */
  get length(): number {
    return this.#size;
  }

  /** Appends `v` at the back. */
  push(v: T): void {
    if (this.#size === this.#buf.length) this.#grow();
    this.#buf[(this.#head + this.#size) & (this.#buf.length - 1)] = v;
    this.#size++;
  }

  /** Removes and returns the front item; the caller checks `length > 0` first. */
  shift(): T {
    const buf = this.#buf;
    const v = buf[this.#head] as T;
    buf[this.#head] = undefined;
    this.#head = (this.#head + 1) & (buf.length - 1);
    this.#size--;
    if (this.#size === 0) this.#head = 0;
    return v;
  }

  /** The items front to back, without removing them. */
  toArray(): T[] {
    const out: T[] = [];
    const mask = this.#buf.length - 1;
    for (let i = 0; i < this.#size; i++) out.push(this.#buf[(this.#head + i) & mask] as T);
    return out;
  }

  #grow(): void {
    const old = this.#buf;
    const n = old.length;
    const next: (T | undefined)[] = new Array(n * 2).fill(undefined);
    for (let i = 0; i < this.#size; i++) next[i] = old[(this.#head + i) & (n - 1)];
    this.#buf = next;
    this.#head = 0;
  }
}
