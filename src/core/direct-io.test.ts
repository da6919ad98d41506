/** Direct I/O helpers: aligned memory, staged writes, and the fall-backs to buffered I/O. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LocalBackend } from '../backends/local.js';
import { DIRECT_ALIGN, alignedBuffer, openDirect, writeAlignedAsync, writeStaged } from './direct-io.js';
import { nativeAddon } from './native.js';

describe('direct I/O', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmvault-direct-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('makes buffers at aligned addresses', () => {
    for (const size of [1, 4096, 65536 + 5]) {
      const b = alignedBuffer(size)!;
      assert.equal(b.length, size);
      assert.equal(nativeAddon()!.alignOffset!(b, DIRECT_ALIGN), 0);
    }
    assert.equal(
      nativeAddon()!.alignOffset!(alignedBuffer(8192)!.subarray(1), DIRECT_ALIGN),
      DIRECT_ALIGN - 1,
    );
    assert.throws(() => nativeAddon()!.alignOffset!(Buffer.alloc(1), 3), /power of two/);
  });

  it('writes parts of any size through staging buffers, byte for byte', async () => {
    const parts = [1, 4095, (5 << 20) + 7, 3 << 20, 13, 0, 8 << 20].map((n) => randomBytes(n));
    const path = join(dir, 'staged');
    const fd = openSync(path, 'w');
    const direct = openDirect(path);
    assert.notEqual(direct, null, 'the test directory allows O_DIRECT');
    try {
      assert.equal(await writeStaged(fd, direct!, parts), true);
    } finally {
      closeSync(direct!);
      closeSync(fd);
    }
    assert.ok(readFileSync(path).equals(Buffer.concat(parts)));
  });

  it('falls back to the ordinary descriptor when a direct write is refused', async () => {
    const path = join(dir, 'refused');
    const fd = openSync(path, 'w');
    const direct = openDirect(path)!;
    const data = randomBytes(3 * DIRECT_ALIGN + 100);
    const unaligned = Buffer.concat([Buffer.alloc(1), data]).subarray(1); // the kernel says EINVAL
    try {
      assert.equal(await writeAlignedAsync(fd, direct, unaligned, unaligned.length, 0), false);
    } finally {
      closeSync(direct);
      closeSync(fd);
    }
    assert.ok(readFileSync(path).equals(data));
  });

  it('is off with VMVAULT_DIRECT_IO=0; pack-sized objects land whole either way', async () => {
    const path = join(dir, 'off');
    closeSync(openSync(path, 'w'));
    const parts = [randomBytes(3 << 20), randomBytes(12345)];
    const b = new LocalBackend(join(dir, 'repo'));
    process.env.VMVAULT_DIRECT_IO = '0';
    try {
      assert.equal(openDirect(path), null);
      await b.write('packs/buffered', parts);
    } finally {
      delete process.env.VMVAULT_DIRECT_IO;
    }
    await b.write('packs/direct', parts);
    assert.ok((await b.read('packs/buffered')).equals(Buffer.concat(parts)));
    assert.ok((await b.read('packs/direct')).equals(Buffer.concat(parts)));
    await b.close();
  });
});
