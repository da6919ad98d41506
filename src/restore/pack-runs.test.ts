/** groupRuns: which blobs share one pack read, with and without gaps between them. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeItems, groupRuns, type LocatedChunk, runBytes } from './pack-runs.js';

const K = 1024;

/** A located chunk of 10 KiB stored at `offset` of `pack`. */
function at(index: number, pack: string, offset: number, length = 10 * K): LocatedChunk {
  return { index, digest: Buffer.alloc(32, index), pack, offset, length, rawLength: 64 * K };
}

/** The runs as lists of chunk indexes. */
function shape(runs: LocatedChunk[][]): number[][] {
  return runs.map((r) => r.map((c) => c.index));
}

describe('groupRuns', () => {
  const cases: {
    name: string;
    items: LocatedChunk[];
    maxBytes: number;
    maxGap?: number;
    want: number[][];
  }[] = [
    {
      name: 'adjacent blobs of one pack form one run, in pack order',
      items: [at(2, 'a', 20 * K), at(0, 'a', 0), at(1, 'a', 10 * K)],
      maxBytes: 1 << 20,
      want: [[0, 1, 2]],
    },
    {
      name: 'without a gap allowance, an unused blob between two splits the run',
      items: [at(0, 'a', 0), at(1, 'a', 20 * K)],
      maxBytes: 1 << 20,
      want: [[0], [1]],
    },
    {
      name: 'a gap up to maxGap is read over',
      items: [at(0, 'a', 0), at(1, 'a', 20 * K), at(2, 'a', 40 * K)],
      maxBytes: 1 << 20,
      maxGap: 10 * K,
      want: [[0, 1, 2]],
    },
    {
      name: 'a gap larger than maxGap splits',
      items: [at(0, 'a', 0), at(1, 'a', 21 * K)],
      maxBytes: 1 << 20,
      maxGap: 10 * K,
      want: [[0], [1]],
    },
    {
      name: 'the span, gaps included, stays within maxBytes',
      items: [at(0, 'a', 0), at(1, 'a', 20 * K), at(2, 'a', 40 * K)],
      maxBytes: 45 * K,
      maxGap: 10 * K,
      want: [[0, 1], [2]],
    },
    {
      name: 'blobs of different packs never share a run',
      items: [at(0, 'b', 0), at(1, 'a', 10 * K), at(2, 'a', 0)],
      maxBytes: 1 << 20,
      maxGap: 1 << 20,
      want: [[2, 1], [0]],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(shape(groupRuns(c.items, c.maxBytes, c.maxGap)), c.want);
    });
  }

  it('places each blob of a run with gaps at its offset in the run read', () => {
    const [run] = groupRuns([at(0, 'a', 100 * K), at(1, 'a', 130 * K)], 1 << 20, 64 * K);
    assert.equal(runBytes(run!), 40 * K, 'the read spans the gap');
    assert.deepEqual(
      decodeItems(run!, (ch) => ch.index * 64 * K).map((d) => [d.offset, d.length, d.fileOffset]),
      [
        [0, 10 * K, 0],
        [30 * K, 10 * K, 64 * K],
      ],
    );
  });
});
