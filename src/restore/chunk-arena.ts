/**
 * Fixed-size slots of shared memory that decoded chunks live in. Worker threads decode straight
 * into a slot and the main thread serves it without a copy; because the memory is allocated once
 * and reused, reading gigabytes does not churn the garbage collector the way one fresh buffer
 * per chunk does.
 *
 * A slot is reference-counted: whoever holds its content (the cache, a fetch writing it, a reply
 * still being sent) holds a reference, and the slot is reused only at zero. Memory grows a
 * segment at a time up to a fixed number of slots and is never given back.
 */
import { VmvaultError } from '../core/index.js';

/** Where a slot lies, for a worker to write to. */
export interface SlotLocation {
  shared: SharedArrayBuffer;
  offset: number;
}

/** Reference-counted slots of `slotBytes` bytes in shared memory. */
export class ChunkArena {
  private readonly segments: SharedArrayBuffer[] = [];
  private readonly refs: number[] = [];
  private readonly free: number[] = [];
  private readonly slotsPerSegment: number;

  /**
   * @param slotBytes bytes per slot (a chunk size).
   * @param maxSlots most slots ever allocated.
   */
  constructor(
    readonly slotBytes: number,
    readonly maxSlots: number,
  ) {
    // Segments of about 8 MiB: few allocations, little memory allocated ahead of use.
    this.slotsPerSegment = Math.max(1, Math.min(maxSlots, Math.floor((8 << 20) / slotBytes)));
  }

  /** Slots allocated so far. */
  get capacity(): number {
    return this.refs.length;
  }

  /** Slots with no reference. */
  get freeSlots(): number {
    return this.free.length;
  }

  /**
   * A free slot holding one reference, allocating a segment when none is free and the limit
   * allows; -1 when every slot is in use.
   */
  take(): number {
    if (this.free.length === 0 && this.refs.length < this.maxSlots) this.grow();
    const slot = this.free.pop();
    if (slot === undefined) return -1;
    this.refs[slot] = 1;
    return slot;
  }

  private grow(): void {
    const n = Math.min(this.slotsPerSegment, this.maxSlots - this.refs.length);
    this.segments.push(new SharedArrayBuffer(n * this.slotBytes));
    const first = this.refs.length;
    for (let k = 0; k < n; k++) this.refs.push(0);
    // Pop order hands out low slots first.
    for (let k = n - 1; k >= 0; k--) this.free.push(first + k);
  }

  /** Adds a reference to a slot in use. */
  retain(slot: number): void {
    if (!(this.refs[slot]! > 0)) throw new VmvaultError('E_INTERNAL', `chunk slot ${slot} is not in use`);
    this.refs[slot]!++;
  }

  /** Drops a reference; the slot becomes free at zero. */
  release(slot: number): void {
    const r = this.refs[slot]!;
    if (!(r > 0)) throw new VmvaultError('E_INTERNAL', `chunk slot ${slot} released twice`);
    this.refs[slot] = r - 1;
    if (r === 1) this.free.push(slot);
  }

  /** References a slot has (tests). */
  refCount(slot: number): number {
    return this.refs[slot] ?? 0;
  }

  /** The shared memory and byte offset of a slot. */
  locate(slot: number): SlotLocation {
    const seg = Math.floor(slot / this.slotsPerSegment);
    return { shared: this.segments[seg]!, offset: (slot - seg * this.slotsPerSegment) * this.slotBytes };
  }

  /** The first `length` bytes of a slot, as a Buffer sharing its memory. */
  view(slot: number, length: number): Buffer {
    const { shared, offset } = this.locate(slot);
    return Buffer.from(shared, offset, length);
  }
}
