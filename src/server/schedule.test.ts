import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RouteContext } from './routes.js';
import { parseInterval, parseSchedules, Scheduler } from './schedule.js';

describe('schedule files', () => {
  it('reads intervals in seconds, minutes, hours and days, and refuses the rest', () => {
    assert.equal(parseInterval('90s', 'x'), 90_000);
    assert.equal(parseInterval('15m', 'x'), 900_000);
    assert.equal(parseInterval('1.5h', 'x'), 5_400_000);
    assert.equal(parseInterval('1d', 'x'), 86_400_000);
    assert.equal(parseInterval('60d', 'x'), 60 * 86_400_000); // longer than one Node timer holds
    for (const bad of ['0s', '0.5s', '10', 'm', '5 m', '-1h', '1w', 5, null]) {
      assert.throws(
        () => parseInterval(bad, 'where'),
        (e: Error & { code?: string }) => {
          assert.equal(e.code, 'E_USAGE');
          assert.match(e.message, /^where: /);
          return true;
        },
      );
    }
  });

  it('checks every schedule and its command body as the API would', () => {
    const s = parseSchedules(
      {
        schedules: [
          {
            id: 'web',
            every: '1h',
            backup: { source: 'qmp:/run/web.qmp', name: 'web' },
            prune: { keepDaily: 7 },
          },
          { id: 'check', every: '1d', first: '10m', verify: {} },
          { id: 'gc', every: '7d', gc: { repackThreshold: 0.3 } },
        ],
      },
      'f',
    );
    assert.deepEqual(
      s.map((x) => [x.id, x.command, x.everyMs, x.firstMs, x.prune]),
      [
        ['web', 'backup', 3_600_000, 3_600_000, { keepDaily: 7 }],
        ['check', 'verify', 86_400_000, 600_000, null],
        ['gc', 'gc', 7 * 86_400_000, 7 * 86_400_000, null],
      ],
    );
  });

  it('names the schedule and the problem in one line', () => {
    const cases: [unknown, RegExp][] = [
      [[], /expected \{"schedules": \[\.\.\.\]\}/],
      [{ schedules: [], extra: 1 }, /unknown field "extra"/],
      [{ schedules: [{ every: '1h', verify: {} }] }, /schedule 1: "id" must be/],
      [
        {
          schedules: [
            { id: 'a', every: '1h', verify: {} },
            { id: 'a', every: '1h', gc: {} },
          ],
        },
        /two schedules are called a/,
      ],
      [
        { schedules: [{ id: 'a', every: '1h' }] },
        /schedule a: give exactly one of "backup", "verify" or "gc"/,
      ],
      [{ schedules: [{ id: 'a', every: '1h', verify: {}, gc: {} }] }, /exactly one of/],
      [
        { schedules: [{ id: 'a', every: '1h', verify: {}, prune: { keepLast: 1 } }] },
        /"prune" goes with "backup"/,
      ],
      [
        { schedules: [{ id: 'a', every: '1h', backup: { source: '/d.img' }, prune: {} }] },
        /at least one keep rule/,
      ],
      [
        { schedules: [{ id: 'a', every: '1h', backup: { source: 'd.img' } }] },
        /schedule a: the source must be an absolute path/,
      ],
      [
        { schedules: [{ id: 'a', every: '1h', backup: { source: '/d.img', nmae: 'x' } }] },
        /unknown field "nmae"/,
      ],
      [{ schedules: [{ id: 'a', every: 'hourly', verify: {} }] }, /schedule a: "every": an interval is/],
      [
        { schedules: [{ id: 'a', every: '1h', first: '0s', verify: {} }] },
        /"first": an interval is at least 1s/,
      ],
      [{ schedules: [{ id: 'a', every: '1h', verify: {}, cron: '* * * * *' }] }, /unknown field "cron"/],
    ];
    for (const [doc, message] of cases) {
      assert.throws(
        () => parseSchedules(doc, 'f.json'),
        (e: Error & { code?: string }) => {
          assert.equal(e.code, 'E_USAGE');
          assert.match(e.message, /^f\.json/);
          assert.match(e.message, message);
          assert.equal(e.message.includes('\n'), false);
          return true;
        },
        JSON.stringify(doc),
      );
    }
  });

  it('waits out an interval longer than one Node timer holds instead of running at once', async () => {
    let started = 0;
    const rc = new Proxy({} as RouteContext, {
      get() {
        started++;
        throw new Error('a job was started');
      },
    });
    const s = new Scheduler(
      rc,
      parseSchedules({ schedules: [{ id: 'long', every: '30d', verify: {} }] }, 'f'),
    );
    s.start();
    await new Promise((r) => setTimeout(r, 300));
    await s.stop();
    assert.equal(started, 0);
    assert.equal(s.list()[0]!.runs, 0);
  });
});
