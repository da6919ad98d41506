/**
 * Boot from a backup: the test guest's disk (its root filesystem, which the initramfs mounts) is
 * backed up and deleted, then the guest boots under QEMU (TCG) from `vmvault mount --writable`
 * and reaches its init marker; what it writes is saved as a new restore point on exit. The
 * mount records a read trace; a second mount of the same VM prefetches it.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { buildTestGuest, createGuestDisk, startTestGuest, type TestGuest } from './fixtures/guest/index.js';
import { serveCommand, stopServing, Workspace } from './helpers.js';

describe('boot from a backup (real QEMU, TCG)', { timeout: 240_000 }, () => {
  let guest: TestGuest;
  const ws = new Workspace();
  let id = '';
  before(async () => {
    guest = await buildTestGuest();
    ws.ok(['init']);
    const disk = await createGuestDisk(guest, ws.path('root.raw'), 'raw');
    id = ws.ok(['backup', disk, '--name', 'guest1', '--json']).id;
    rmSync(disk); // booting can only read the backup
  });
  after(() => ws.cleanup());

  async function bootOnce(marker: string): Promise<{ summary: Record<string, unknown>; saved: string }> {
    const sock = ws.path('boot.sock');
    const m = await serveCommand(ws, [
      'mount',
      id,
      '--socket',
      sock,
      '--writable',
      '--save-on-exit',
      '--json',
    ]);
    const g = await startTestGuest({
      disk: '',
      guest,
      blockdev: { driver: 'nbd', server: { type: 'unix', path: sock }, export: id },
      readyTimeoutMs: 90_000,
    });
    try {
      const r = await g.run(`echo ${marker} > /root-marker && sync && cat /root-marker`);
      assert.equal(r.rc, 0);
      assert.match(r.output, new RegExp(marker));
    } finally {
      await g.stop();
    }
    assert.equal(await stopServing(m.p), 0);
    const summary = JSON.parse(m.out().trim().split('\n').pop()!) as Record<string, unknown>;
    return { summary, saved: String(summary.saved) };
  }

  it('boots from the live mount, its writes saved as a new point; the next mount prefetches the trace', async () => {
    const first = await bootOnce('first-boot');
    assert.ok((first.summary.traced as number) > 10, 'the boot left a read trace');
    assert.equal((first.summary.queued as { trace: number }).trace, 0, 'no trace before the first boot');
    // The new point holds the guest's write; the booted point does not.
    const cat = ws.run(['files', 'cat', first.saved, '/disk/root-marker']);
    assert.equal(cat.code, 0, cat.stderr);
    assert.equal(cat.stdout.trim(), 'first-boot');
    assert.notEqual(ws.run(['files', 'cat', id, '/disk/root-marker']).code, 0);

    const second = await bootOnce('second-boot');
    assert.ok((second.summary.queued as { trace: number }).trace > 10, 'the second mount queued the trace');
    assert.ok((second.summary.prefetched as number) > 0, 'and prefetched from it');
  });
});
