/** The decoded leaf pages of one restore point's tree that a {@link PointReader} looks up. */
import { PAGE_FANOUT, type TreeReader } from '../repository/index.js';

/** Leaf pages kept decoded: 64 leaves map 32768 chunks (2 GiB of 64 KiB chunks). */
const MAX_LEAVES = 64;

/** Chunk digests by chunk index, through a small cache of decoded leaf pages. */
export class LeafCache {
  private readonly leaves = new Map<number, readonly (Buffer | null)[]>();
  private readonly loads = new Map<number, Promise<readonly (Buffer | null)[]>>();

  constructor(private readonly tree: TreeReader) {}

  /** Digest of chunk `index` (null: a zero chunk); synchronous when its leaf is cached. */
  digest(index: number): Buffer | null | Promise<Buffer | null> {
    const leafNo = Math.floor(index / PAGE_FANOUT);
    const leaf = this.leaves.get(leafNo);
    if (leaf) return leaf[index - leafNo * PAGE_FANOUT] ?? null;
    return this.load(leafNo).then((l) => l[index - leafNo * PAGE_FANOUT] ?? null);
  }

  /** Leaf page `leafNo`; concurrent loads of one leaf share one read. */
  leaf(leafNo: number): readonly (Buffer | null)[] | Promise<readonly (Buffer | null)[]> {
    return this.leaves.get(leafNo) ?? this.load(leafNo);
  }

  private load(leafNo: number): Promise<readonly (Buffer | null)[]> {
    let load = this.loads.get(leafNo);
    if (!load) {
      load = this.tree.leaf(leafNo).then(
        (leaf) => {
          this.loads.delete(leafNo);
          this.leaves.set(leafNo, leaf);
          if (this.leaves.size > MAX_LEAVES) this.leaves.delete(this.leaves.keys().next().value as number);
          return leaf;
        },
        (err: unknown) => {
          this.loads.delete(leafNo);
          throw err;
        },
      );
      this.loads.set(leafNo, load);
    }
    return load;
  }
}
