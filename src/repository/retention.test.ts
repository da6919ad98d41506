/** Table-driven tests: prune keeps exactly what each policy says. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applyRetention, type RetentionPolicy } from './retention.js';

/** Points of one name at the given UTC times; ids are the times' positions ("p0", "p1"...). */
function points(times: string[], name = 'vm') {
  return times.map((time, i) => ({ id: `p${i}`, name, time }));
}

// 2026-11-02 is a Monday. Times are newest last.
const HOURS = [
  '2026-11-02T08:10:00Z',
  '2026-11-02T08:50:00Z',
  '2026-11-02T09:05:00Z',
  '2026-11-02T09:40:00Z',
  '2026-11-02T11:00:00Z',
];
const DAYS = [
  '2026-10-30T23:00:00Z', // Fri
  '2026-10-31T01:00:00Z', // Sat
  '2026-10-31T22:00:00Z', // Sat
  '2026-11-01T12:00:00Z', // Sun (ISO week 44)
  '2026-11-02T00:30:00Z', // Mon (ISO week 45)
  '2026-11-02T18:00:00Z', // Mon
];
const MONTHS = [
  '2025-12-31T10:00:00Z',
  '2026-01-15T10:00:00Z',
  '2026-01-20T10:00:00Z',
  '2026-03-01T10:00:00Z',
  '2026-03-31T23:59:00Z',
];

const cases: { name: string; times: string[]; policy: RetentionPolicy; keep: string[] }[] = [
  { name: 'keep-last 2', times: HOURS, policy: { last: 2 }, keep: ['p3', 'p4'] },
  {
    name: 'keep-last more than there are',
    times: HOURS,
    policy: { last: 10 },
    keep: ['p0', 'p1', 'p2', 'p3', 'p4'],
  },
  { name: 'keep-last 0 keeps nothing', times: HOURS, policy: { last: 0 }, keep: [] },
  {
    name: 'keep-hourly 2: newest of the two newest hours',
    times: HOURS,
    policy: { hourly: 2 },
    keep: ['p3', 'p4'],
  },
  { name: 'keep-hourly 3', times: HOURS, policy: { hourly: 3 }, keep: ['p1', 'p3', 'p4'] },
  { name: 'keep-daily 2', times: DAYS, policy: { daily: 2 }, keep: ['p3', 'p5'] },
  { name: 'keep-daily 4', times: DAYS, policy: { daily: 4 }, keep: ['p0', 'p2', 'p3', 'p5'] },
  { name: 'keep-weekly 1: ISO weeks start on Monday', times: DAYS, policy: { weekly: 1 }, keep: ['p5'] },
  { name: 'keep-weekly 2', times: DAYS, policy: { weekly: 2 }, keep: ['p3', 'p5'] },
  { name: 'keep-monthly 2', times: MONTHS, policy: { monthly: 2 }, keep: ['p2', 'p4'] },
  { name: 'keep-monthly 3', times: MONTHS, policy: { monthly: 3 }, keep: ['p0', 'p2', 'p4'] },
  { name: 'keep-yearly 2', times: MONTHS, policy: { yearly: 2 }, keep: ['p0', 'p4'] },
  { name: 'rules add up', times: DAYS, policy: { last: 1, daily: 2, weekly: 2 }, keep: ['p3', 'p5'] },
  { name: 'last + monthly', times: MONTHS, policy: { last: 2, monthly: 3 }, keep: ['p0', 'p2', 'p3', 'p4'] },
  { name: 'empty policy keeps nothing', times: DAYS, policy: {}, keep: [] },
];

describe('retention policies', () => {
  for (const c of cases) {
    it(c.name, () => {
      // Shuffle the input: order must not matter.
      const pts = points(c.times).reverse();
      const kept = applyRetention(pts, c.policy)
        .filter((d) => d.keep)
        .map((d) => d.point.id)
        .sort();
      assert.deepEqual(kept, [...c.keep].sort());
    });
  }

  it('judges each name on its own', () => {
    const pts = [...points(HOURS, 'a'), ...points(HOURS.slice(0, 2), 'b')];
    const d = applyRetention(pts, { last: 1 });
    const kept = d.filter((x) => x.keep).map((x) => `${x.point.name}/${x.point.id}`);
    assert.deepEqual(kept.sort(), ['a/p4', 'b/p1']);
  });

  it('says why a point is kept', () => {
    const d = applyRetention(points(DAYS), { last: 1, daily: 2 });
    const newest = d.find((x) => x.point.id === 'p5')!;
    assert.deepEqual(newest.reasons, ['last', 'daily']);
    assert.deepEqual(d.find((x) => x.point.id === 'p0')!.reasons, []);
  });
});
