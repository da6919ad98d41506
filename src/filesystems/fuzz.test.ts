/**
 * Mutation fuzzing: damaged images must make every operation either succeed or throw a
 * VmvaultError, quickly. Longer runs: VMVAULT_FUZZ_ITERATIONS=20000 VMVAULT_FUZZ_SEED=7 node
 * --test dist/src/filesystems/fuzz.test.js
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isVmvaultError } from '../core/errors.js';
import { openFilesystem } from './open.js';
import { probeDisk } from './probe.js';
import { MemoryReader, run, tempDir } from './testing/helpers.js';
import type { Filesystem } from './types.js';

const ITERATIONS = Number(process.env.VMVAULT_FUZZ_ITERATIONS ?? 360);
const SEED = Number(process.env.VMVAULT_FUZZ_SEED ?? 20240601);
const PER_CASE_MS = 5000;

/** mulberry32: a small seeded PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const tmp = tempDir('fuzz');
const bases: Array<{ name: string; data: Buffer; hot: number }> = [];

function tree(): string {
  const dir = join(tmp.dir, 'src');
  mkdirSync(join(dir, 'a/b/c'), { recursive: true });
  writeFileSync(join(dir, 'small.txt'), 'hello\n');
  writeFileSync(join(dir, 'a/b/c/mid.bin'), Buffer.alloc(20000, 7));
  writeFileSync(join(dir, 'a/forty'), 'z'.repeat(40));
  for (let i = 0; i < 40; i++) writeFileSync(join(dir, 'a', `entry-${i}`), `${i}`);
  symlinkSync('small.txt', join(dir, 'link'));
  symlinkSync('y'.repeat(100), join(dir, 'slowlink'));
  run('truncate', ['-s', '300K', join(dir, 'sparse')]);
  for (let i = 0; i < 6; i++) {
    run('dd', [
      'if=/dev/urandom',
      `of=${join(dir, 'sparse')}`,
      'bs=1024',
      'count=1',
      `seek=${i * 40 + 3}`,
      'conv=notrunc',
      'status=none',
    ]);
  }
  return dir;
}

/** Drives every operation over the whole filesystem; bounded in entries and bytes. */
async function exercise(fs: Filesystem): Promise<void> {
  let entries = 0;
  for await (const e of fs.walk()) {
    if (++entries > 3000) break;
    await fs.stat(e.path);
    if (e.type === 'file') {
      let bytes = 0;
      for await (const chunk of fs.readFile(e.path, { chunkSize: 65536 })) {
        bytes += chunk.length;
        if (bytes > 1 << 20) break;
      }
      await fs.extents(e.path);
      await fs.read(e.path, 100, 1000);
    }
    if (e.type === 'symlink') await fs.readlink(e.path);
    if (e.type === 'dir') await fs.readdir(e.path);
    await fs.xattrs(e.path);
  }
}

async function attempt(data: Buffer): Promise<void> {
  const reader = new MemoryReader(data);
  const steps = async () => {
    const vols = await probeDisk(reader);
    for (const v of vols) {
      if (v.type === 'unknown') continue;
      const fs = await openFilesystem(reader);
      await exercise(fs);
    }
  };
  try {
    await steps();
  } catch (err) {
    if (!isVmvaultError(err)) throw err;
  }
}

describe('fuzzing damaged images', () => {
  before(() => {
    const src = tree();
    const make = (name: string, hot: number, cmd: (img: string) => void, size = '2M') => {
      const img = join(tmp.dir, `${name}.img`);
      run('truncate', ['-s', size, img]);
      cmd(img);
      bases.push({ name, data: readFileSync(img), hot });
    };
    make('ext4', 96 * 1024, (i) =>
      run('mkfs.ext4', ['-q', '-F', '-b', '1024', '-O', '^metadata_csum', '-d', src, i]),
    );
    make('ext4-csum', 96 * 1024, (i) =>
      run('mkfs.ext4', ['-q', '-F', '-b', '1024', '-O', 'metadata_csum,inline_data', '-d', src, i]),
    );
    make('ext2', 96 * 1024, (i) => run('mkfs.ext4', ['-q', '-F', '-t', 'ext2', '-b', '1024', '-d', src, i]));
    const fat = (bits: string) => (i: string) => {
      run('mkfs.vfat', ['-F', bits, i]);
      run('mcopy', ['-i', i, '-s', join(src, 'small.txt'), join(src, 'a'), '::/']);
    };
    make('fat12', 16 * 1024, fat('12'));
    make('fat16', 64 * 1024, fat('16'), '20M');
  });
  after(() => tmp.cleanup());

  it(`survives ${ITERATIONS} mutations (seed ${SEED})`, async () => {
    for (const b of bases) await attempt(b.data); // the pristine images work
    const rand = prng(SEED);
    const started = Date.now();
    for (let i = 0; i < ITERATIONS; i++) {
      const base = bases[i % bases.length]!;
      let data = Buffer.from(base.data);
      const kind = rand();
      if (kind < 0.1) {
        data = data.subarray(0, Math.floor(rand() * data.length));
      } else {
        const flips = 1 + Math.floor(rand() * 8);
        for (let f = 0; f < flips; f++) {
          const at = rand() < 0.85 ? 1024 + Math.floor(rand() * base.hot) : Math.floor(rand() * data.length);
          data[at] = Math.floor(rand() * 256);
        }
      }
      const t0 = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`mutation ${i} of ${base.name} took over ${PER_CASE_MS} ms`)),
          PER_CASE_MS,
        );
      });
      try {
        await Promise.race([attempt(data), timeout]);
      } catch (err) {
        assert.fail(
          `mutation ${i} (seed ${SEED}, ${base.name}) threw a non-VmvaultError: ${(err as Error).stack}`,
        );
      } finally {
        clearTimeout(timer);
      }
      assert.ok(Date.now() - t0 < PER_CASE_MS);
    }
    assert.ok(Date.now() - started < 120_000 || ITERATIONS > 1000);
  });
});
