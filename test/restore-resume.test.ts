/**
 * Resumable restores (what `recover` copies with): checkpoints only ever name a prefix that is
 * written and durable, and a resumed restore from a checkpoint completes the partial file so it
 * equals the image, leaving the prefix alone.
 */
import assert from 'node:assert/strict';
import { existsSync, openSync, readFileSync, renameSync, writeSync, closeSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { CodecPool, Repository } from '../src/repository/index.js';
import { restoreDisk } from '../src/restore/index.js';
import { makeExt4Image, makeTree, Workspace } from './helpers.js';

describe('resumable restore', () => {
  const ws = new Workspace();
  let id = '';
  before(() => {
    makeTree(ws.path('tree'), { randomMiB: 12 });
    makeExt4Image(ws.path('disk.img'), 48 << 20, ws.path('tree'));
    ws.ok(['init']);
    id = ws.ok(['backup', ws.path('disk.img'), '--json']).id;
  });
  after(() => ws.cleanup());

  it('checkpoints a written prefix and resumes from it to an exact image', async () => {
    const img = readFileSync(ws.path('disk.img'));
    const repo = await Repository.open(ws.repo, { passphrase: null });
    const pool = new CodecPool(repo);
    try {
      const disk = (await repo.resolvePoint(id)).disks[0]!;
      const cs = disk.chunkSize;
      const checkpoints: number[] = [];
      const first = ws.path('first.raw');
      await restoreDisk(repo, pool, disk, first, {
        maxReadBytes: 256 << 10,
        // Paced so several checkpoints fall inside the copy however fast this machine decodes.
        bytesPerSecond: 24 << 20,
        checkpoint: {
          everyBytes: 1 << 20,
          save: async (chunk) => {
            // Every chunk below a checkpoint is already in the partial file.
            const part = readFileSync(`${first}.vmvault-partial`);
            const end = Math.min(img.length, chunk * cs);
            assert.ok(
              part.subarray(0, end).equals(img.subarray(0, end)),
              `prefix below chunk ${chunk} written`,
            );
            checkpoints.push(chunk);
          },
        },
      });
      assert.ok(checkpoints.length >= 3, `several checkpoints (${checkpoints.join(',')})`);
      assert.ok(readFileSync(first).equals(img));

      // Pretend a restore died after a middle checkpoint: data chunks beyond it are garbage (a
      // partial file only ever holds this point's data chunks; its zero chunks stay holes).
      const cp = checkpoints[Math.floor(checkpoints.length / 2)]!;
      const target = ws.path('second.raw');
      renameSync(first, `${target}.vmvault-partial`);
      const fd = openSync(`${target}.vmvault-partial`, 'r+');
      const junk = Buffer.alloc(cs, 0x5a);
      for (let c = cp; c * cs < img.length; c += 3) {
        const n = Math.min(cs, img.length - c * cs);
        if (img.subarray(c * cs, c * cs + n).some((b) => b !== 0)) writeSync(fd, junk, 0, n, c * cs);
      }
      closeSync(fd);
      let written = 0;
      const r = await restoreDisk(repo, pool, disk, target, {
        resume: true,
        fromChunk: cp,
        onProgress: (p) => {
          written = p.bytesWritten;
        },
      });
      assert.ok(!existsSync(`${target}.vmvault-partial`));
      assert.ok(readFileSync(target).equals(img), 'the resumed restore equals the image');
      assert.ok(written < img.length, 'the resumed restore skipped the checkpointed prefix');
      assert.equal(r.size, img.length);
    } finally {
      await pool.close();
      await repo.close();
    }
  });

  it('keeps the partial file on failure when asked, and removes it otherwise', async () => {
    const repo = await Repository.open(ws.repo, { passphrase: null });
    const pool = new CodecPool(repo);
    try {
      const disk = (await repo.resolvePoint(id)).disks[0]!;
      for (const keep of [true, false]) {
        const target = ws.path(`fail-${keep}.raw`);
        await assert.rejects(
          restoreDisk(repo, pool, disk, target, {
            keepPartial: keep,
            checkpoint: {
              everyBytes: 1 << 20,
              save: async () => {
                throw new Error('journal disk full');
              },
            },
          }),
          /journal disk full/,
        );
        assert.equal(existsSync(`${target}.vmvault-partial`), keep);
        assert.ok(!existsSync(target));
      }
    } finally {
      await pool.close();
      await repo.close();
    }
  });
});
