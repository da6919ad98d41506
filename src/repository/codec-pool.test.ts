/**
 * CodecPool: urgent decodes before the workers are up run on the calling thread, same result;
 * threads started before the repository was open take its keys and codec from the pool.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BlobEncoder } from './blob-codec.js';
import { CodecPool, type DecodeIntoItem, prestartCodecWorkers } from './codec-pool.js';
import { digestOf } from './crypto.js';
import { Repository } from './repository.js';

describe('CodecPool start-up', () => {
  let dir = '';
  let repo: Repository;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmvault-pool-'));
    repo = await Repository.init(join(dir, 'repo'), { passphrase: 'pw' });
  });
  after(async () => {
    await repo.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Two encoded chunks back to back in shared memory, with their decode items. */
  function run(target: SharedArrayBuffer) {
    const enc = new BlobEncoder(repo.config.compression, repo.sealKey, repo.config.version);
    const chunks = [
      Buffer.alloc(65536, 'vmvault '),
      Buffer.from(Array.from({ length: 65536 }, (_, i) => i % 251)),
    ];
    const stored = chunks.map((c) => enc.encode(c, digestOf(c, repo.macKey)));
    const shared = new SharedArrayBuffer(stored[0]!.length + stored[1]!.length);
    new Uint8Array(shared).set(stored[0]!, 0);
    new Uint8Array(shared).set(stored[1]!, stored[0]!.length);
    const items: DecodeIntoItem[] = stored.map((s, n) => ({
      offset: n === 0 ? 0 : stored[0]!.length,
      length: s.length,
      digest: digestOf(chunks[n]!, repo.macKey),
      rawLength: 65536,
      target,
      targetOffset: n * 65536,
    }));
    return { chunks, shared, items };
  }

  it('decodes an urgent read on this thread while the workers start, and reports damage the same way', async () => {
    const pool = new CodecPool(repo);
    try {
      const target = new SharedArrayBuffer(2 * 65536);
      const { chunks, shared, items } = run(target);
      // Right after construction no worker has said it is ready: this runs inline, synchronously.
      const inline = pool.decodeInto(shared, items, 'test run', true, true);
      assert.equal(pool.inFlight, 0, 'nothing was sent to a worker');
      assert.deepEqual(await inline, [null, null]);
      assert.ok(Buffer.from(target, 0, 65536).equals(chunks[0]!));
      assert.ok(Buffer.from(target, 65536, 65536).equals(chunks[1]!));
      new Uint8Array(shared)[items[1]!.offset + 40]! ^= 0x10;
      const errors = await pool.decodeInto(shared, items, 'test run', true, true);
      assert.equal(errors[0], null);
      assert.equal(errors[1]?.code, 'E_CHUNK_CORRUPT');
      assert.match(errors[1]!.message, /chunk [0-9a-f]{64} in test run is damaged/);
      // A non-urgent request waits for a worker and gets the same answers.
      const viaWorker = await pool.decodeInto(shared, items, 'test run', true);
      assert.equal(viaWorker[0], null);
      assert.equal(viaWorker[1]?.code, 'E_CHUNK_CORRUPT');
    } finally {
      await pool.close();
    }
  });

  it('hands threads started before the repository was open its keys, and encodes and decodes with them', async () => {
    prestartCodecWorkers(2);
    const pool = new CodecPool(repo, 2);
    try {
      const target = new SharedArrayBuffer(2 * 65536);
      const { chunks, shared, items } = run(target);
      assert.deepEqual(await pool.decodeInto(shared, items, 'test run', true), [null, null]);
      assert.ok(Buffer.from(target, 65536, 65536).equals(chunks[1]!));
      // What a pre-started worker encodes is sealed with the repository's key.
      const digest = digestOf(chunks[0]!, repo.macKey);
      const stored = await pool.encode(Buffer.from(chunks[0]!), digest);
      assert.ok(!stored.includes(Buffer.from('vmvault vmvault')), 'no plaintext in the sealed blob');
      const back = new SharedArrayBuffer(65536);
      const errors = await pool.decodeInto(
        (() => {
          const s = new SharedArrayBuffer(stored.length);
          new Uint8Array(s).set(stored);
          return s;
        })(),
        [{ offset: 0, length: stored.length, digest, rawLength: 65536, target: back, targetOffset: 0 }],
        'test run',
        false,
      );
      assert.deepEqual(errors, [null]);
      assert.ok(Buffer.from(back).equals(chunks[0]!));
    } finally {
      await pool.close();
    }
  });
});
