/**
 * The FIFO of blocked waiters every primitive of this part keeps: an intrusive doubly linked
 * list, so a waiter interrupted anywhere in the line leaves it in O(1) and the line never holds
 * a dead entry (a select that keeps losing to a timer cannot grow it).
 *
 * Invariant: `p.linked` is true exactly while `p` is reachable from `head`, and `size` counts
 * those entries.
 */
import type { Waiter } from '../core/internal.ts';

/** One blocked operation: its waiter, what it brings (a put's item, a permit count), a tag. */
export class Pending<V = unknown> {
  readonly waiter: Waiter<any>;
  readonly value: V;
  /** Primitive-specific: how the value is to be handed over (see each primitive). */
  readonly tag: number;
  prev: Pending<any> | null = null;
  next: Pending<any> | null = null;
  linked = true;

  constructor(waiter: Waiter<any>, value: V, tag: number) {
    this.waiter = waiter;
    this.value = value;
    this.tag = tag;
  }
}

/** A FIFO of `Pending` entries with O(1) removal from anywhere (see the module header). */
export class WaitList<V = unknown> {
  head: Pending<V> | null = null;
  tail: Pending<V> | null = null;
  size = 0;

  /** Enqueues a waiter at the back of the line. */
  push(waiter: Waiter<any>, value: V, tag: number): Pending<V> {
    const p = new Pending<V>(waiter, value, tag);
    const t = this.tail;
    if (t) {
      t.next = p;
      p.prev = t;
    } else {
      this.head = p;
    }
    this.tail = p;
    this.size++;
    return p;
  }

  /** Dequeues the front of the line, or null. */
  shift(): Pending<V> | null {
    const p = this.head;
    if (p) this.remove(p);
    return p;
  }

  /** Takes `p` out of the line; a no-op if it already left (idempotent, as unregister must be). */
  remove(p: Pending<V>): void {
    if (!p.linked) return;
    p.linked = false;
    if (p.prev) p.prev.next = p.next;
    else this.head = p.next as Pending<V> | null;
    if (p.next) p.next.prev = p.prev;
    else this.tail = p.prev as Pending<V> | null;
    p.prev = null;
    p.next = null;
    this.size--;
  }
}
