/**
 * The benchmark disk: a sparse raw image holding an ext4 filesystem made with `mkfs.ext4 -d`,
 * and seeded random writes into the blocks of it that hold file data.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { cp, lstat, mkdtemp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Prng } from './prng.js';
import { run } from './proc.js';

const BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

/**
 * Creates `path` as a sparse image of `size` bytes holding an ext4 filesystem filled from
 * `sourceDir`. If mkfs refuses the tree (special files), it is retried from a staged copy
 * holding only regular files, directories and symlinks.
 */
export async function buildImage(path: string, size: number, sourceDir: string): Promise<void> {
  const make = async (dir: string) => {
    await rm(path, { force: true });
    const fh = await open(path, 'w');
    await fh.truncate(size);
    await fh.close();
    return run('mkfs.ext4', ['-q', '-F', '-d', dir, path], { allowFail: true });
  };
  const first = await make(sourceDir);
  if (first.code === 0) return;
  const stage = await mkdtemp(`${path}.stage-`);
  try {
    await cp(sourceDir, join(stage, 'root'), {
      recursive: true,
      verbatimSymlinks: true,
      filter: async (src) => {
        const st = await lstat(src);
        return st.isFile() || st.isDirectory() || st.isSymbolicLink();
      },
    });
    const second = await make(join(stage, 'root'));
    if (second.code !== 0) {
      throw new Error(
        `mkfs.ext4 failed (image ${size} bytes too small?):\n${first.stderr}\n${second.stderr}`,
      );
    }
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

/** 4 KiB block numbers (half-open ranges) holding ext4 metadata, parsed from `dumpe2fs`. */
async function metadataRanges(path: string): Promise<[number, number][]> {
  const r = await run('dumpe2fs', [path]);
  const bs = Number(/Block size:\s+(\d+)/.exec(r.stdout)?.[1] ?? BLOCK);
  const re =
    /(?:superblock|Group descriptors|Reserved GDT blocks|Block bitmap|Inode bitmap|Inode table) at (\d+)(?:-(\d+))?/g;
  const out: [number, number][] = [];
  for (const m of r.stdout.matchAll(re)) {
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    out.push([Math.floor((a * bs) / BLOCK), Math.ceil(((b + 1) * bs) / BLOCK)]);
  }
  return out;
}

/**
 * Marks the 4 KiB blocks of `path` that may be overwritten: non-zero (so inside the
 * data-holding region, never a hole) and not ext4 superblock/descriptor/bitmap/inode-table
 * metadata, so the filesystem stays consistent.
 */
export async function writableBlocks(path: string): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const map = new Uint8Array(Math.floor(size / BLOCK));
    const buf = Buffer.alloc(4 << 20);
    for (let pos = 0; pos < size; pos += buf.length) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      for (let o = 0; o + BLOCK <= bytesRead; o += BLOCK) {
        if (!buf.subarray(o, o + BLOCK).equals(ZERO_BLOCK)) map[(pos + o) / BLOCK] = 1;
      }
    }
    for (const [a, b] of await metadataRanges(path)) map.fill(0, a, Math.min(b, map.length));
    return map;
  } finally {
    await fh.close();
  }
}

/** One write plan: byte offsets of `count` non-overlapping writes of `length` bytes. */
export interface WritePlan {
  offsets: number[];
  length: number;
}

/**
 * Picks `count` non-overlapping writes of `length` bytes at offsets aligned to `align`, each
 * entirely inside writable blocks of `map` and not touching blocks in `used` (updated). With
 * `avoidAlign`, offsets that are multiples of `avoidAlign` are skipped (the unaligned variant).
 * @throws Error when the image has too few writable blocks.
 */
export function planWrites(
  map: Uint8Array,
  used: Uint8Array,
  prng: Prng,
  count: number,
  length: number,
  align: number,
  avoidAlign = 0,
): WritePlan {
  const span = length / BLOCK;
  const step = align / BLOCK;
  const starts: number[] = [];
  for (let b = 0; b + span <= map.length; b += step) {
    if (avoidAlign && (b * BLOCK) % avoidAlign === 0) continue;
    if (map[b] && map[b + span - 1]) starts.push(b);
  }
  prng.shuffle(starts);
  const offsets: number[] = [];
  for (const b of starts) {
    if (offsets.length === count) break;
    let ok = true;
    for (let i = b; i < b + span; i++) {
      if (!map[i] || used[i]) {
        ok = false;
        break;
      }
    }
    if (!ok) continue;
    used.fill(1, b, b + span);
    offsets.push(b * BLOCK);
  }
  if (offsets.length < count)
    throw new Error(`only ${offsets.length} of ${count} writes fit in the image data`);
  return { offsets: offsets.sort((a, b) => a - b), length };
}

/** Writes random (incompressible) bytes from `prng` at each offset of `plan` with positioned writes. */
export async function applyWrites(path: string, plan: WritePlan, prng: Prng): Promise<number> {
  const fh = await open(path, 'r+');
  try {
    for (const off of plan.offsets) await fh.write(prng.bytes(plan.length), 0, plan.length, off);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return plan.offsets.length * plan.length;
}

/** Copies a sparse image (`cp --sparse=always`), so every repetition starts from the same disk. */
export async function copySparse(from: string, to: string): Promise<void> {
  await rm(to, { force: true });
  await run('cp', ['--sparse=always', from, to]);
}

/** Reads `path` once from start to end, so that the page cache holds it. */
export function warmFile(path: string): void {
  const fd = openSync(path, 'r');
  const b = Buffer.allocUnsafe(8 << 20);
  try {
    while (readSync(fd, b, 0, b.length, null) > 0) {}
  } finally {
    closeSync(fd);
  }
}
