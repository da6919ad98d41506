/**
 * The storage backend interface: a flat namespace of immutable named objects ("packs/ab/…",
 * "index/…", "snapshots/…"). Kept tiny so that a local directory, S3-compatible object storage
 * and wrappers (retry, rate limit) can all implement it.
 */

/** Size and modification time of a stored object. */
export interface ObjectInfo {
  name: string;
  size: number;
  mtimeMs: number;
}

/** A file descriptor lent by {@link Backend.openRead}. */
export interface ReadDescriptor {
  /** Open for reading; valid for positioned reads (from any thread) until `release()`. */
  fd: number;
  /** Gives the descriptor back; call it exactly once. */
  release(): void;
}

/** A place that stores a repository's objects. */
export interface Backend {
  /** Human-readable location, for messages. */
  readonly location: string;
  /** Reads a whole object. Throws E_NOT_FOUND when it does not exist. */
  read(name: string): Promise<Buffer>;
  /** Reads `length` bytes at `offset`; fewer only if the object is shorter (then E_CORRUPT). */
  readRange(name: string, offset: number, length: number): Promise<Buffer>;
  /** Reads `target.length` bytes at `offset` into `target` (E_CORRUPT when the object is shorter). */
  readRangeInto(name: string, offset: number, target: Buffer): Promise<void>;
  /**
   * Optional: a local file descriptor of the object, so worker threads can read it themselves
   * with positioned reads. Backends without local files leave it out. E_NOT_FOUND as {@link read}.
   */
  openRead?(name: string): Promise<ReadDescriptor>;
  /**
   * Writes an object atomically and durably: readers see all of it or nothing. With
   * `{ durable: false }` the object is still atomic but may not survive a power loss (for
   * objects that mean nothing after a crash, such as lock files).
   */
  write(name: string, data: Uint8Array | readonly Uint8Array[], opts?: { durable?: boolean }): Promise<void>;
  /** Lists the objects under a prefix directory ("packs", "snapshots"), recursively. */
  list(prefix: string): Promise<ObjectInfo[]>;
  /** Names of the objects under a prefix directory, without sizes (cheaper than {@link list}). */
  listNames(prefix: string): Promise<string[]>;
  /** Size and mtime of an object, or null when it does not exist. */
  stat(name: string): Promise<ObjectInfo | null>;
  /** Removes an object; removing a missing object is not an error. */
  remove(name: string): Promise<void>;
  /** Releases cached handles. */
  close(): Promise<void>;
}
