/**
 * Decoded index pages by digest, least recently used first out, bounded in bytes. Pages are
 * content-addressed and never change, so a page this process stored or loaded can be served
 * again without a pack read: a resident server's next incremental reads its parent's leaf pages
 * from here.
 */
export class PageCache {
  private readonly pages = new Map<string, Buffer>();
  private bytes = 0;

  constructor(private readonly limit: number) {}

  /** The page with this digest, if cached (it becomes the most recently used). */
  get(digest: Buffer): Buffer | undefined {
    const k = digest.toString('latin1');
    const p = this.pages.get(k);
    if (p) {
      this.pages.delete(k);
      this.pages.set(k, p);
    }
    return p;
  }

  /** Caches `page` (kept as given: callers must not change it afterwards). */
  put(digest: Buffer, page: Buffer): void {
    if (page.length > this.limit) return;
    const k = digest.toString('latin1');
    const old = this.pages.get(k);
    if (old) {
      this.pages.delete(k);
      this.bytes -= old.length;
    }
    this.pages.set(k, page);
    this.bytes += page.length;
    while (this.bytes > this.limit) {
      const [oldest, p] = this.pages.entries().next().value as [string, Buffer];
      this.pages.delete(oldest);
      this.bytes -= p.length;
    }
  }

  clear(): void {
    this.pages.clear();
    this.bytes = 0;
  }
}
