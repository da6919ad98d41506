/**
 * `vmvault recover` against real QEMU (TCG): the test guest's disk is backed up and deleted, the
 * guest boots from the live mount while its disk is copied to a new target (bandwidth-limited so
 * the copy outlasts the boot), writes files during the recovery, and keeps running on the target
 * afterwards. Then the same with vmvault killed (-9) mid-copy and the recovery resumed. The
 * target is checked with e2fsck (which replays the guest's journal) and debugfs: every file the
 * guest reported written before the recovery ended must be there, whole.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import { QmpClient } from '../src/protocols/qmp/index.js';
import { buildTestGuest, createGuestDisk, type TestGuest } from './fixtures/guest/index.js';
import { Workspace } from './helpers.js';

/** A unix socket the guest's serial console connects to; collects its lines. */
class Console {
  text = '';
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private waiters = new Set<() => void>();

  constructor(readonly path: string) {
    this.server = createServer((s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => undefined);
      s.on('data', (d: Buffer) => {
        this.text += d.toString('utf8').replaceAll('\r', '');
        for (const w of [...this.waiters]) w();
      });
    });
  }

  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.path, r));
  }

  /** Highest N of the `VMVAULT-WROTE N` lines so far (0 when none). */
  lastWrote(): number {
    const all = [...this.text.matchAll(/VMVAULT-WROTE (\d+)/g)];
    return all.length ? Number(all[all.length - 1]![1]) : 0;
  }

  waitFor(test: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!test()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out waiting for ${what}; console tail: ${this.text.slice(-800)}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** Stops listening and drops the guest's connection (a failed test must not hang on it). */
  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

function qemuCommand(g: TestGuest, serial: string): string[] {
  return [
    'qemu-system-x86_64',
    '-accel',
    'tcg',
    '-m',
    '256',
    '-nodefaults',
    '-display',
    'none',
    '-no-reboot',
    '-kernel',
    g.kernel,
    '-initrd',
    g.initrd,
    '-append',
    'console=ttyS0 panic=-1 quiet loglevel=3 vmvault.writer=0',
    '-chardev',
    `socket,id=ser,path=${serial}`,
    '-serial',
    'chardev:ser',
  ];
}

function exited(p: ChildProcess): Promise<number> {
  return new Promise((r) => p.once('exit', (code) => r(code ?? -1)));
}

/** Files /data/f1..fN on an ext4 image (after journal replay on a copy): their sizes. */
function dataFiles(ws: Workspace, image: string): Map<number, string> {
  const copy = ws.path('check.raw');
  copyFileSync(image, copy);
  try {
    execFileSync('e2fsck', ['-fy', copy], { stdio: 'ignore' });
  } catch (err) {
    // 1 = errors corrected (the journal replay counts); ≥ 4 = uncorrected.
    if (((err as { status?: number }).status ?? 8) >= 4) throw err;
  }
  const out = new Map<number, string>();
  const ls = execFileSync('debugfs', ['-R', 'ls -p /data', copy], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  for (const line of ls.split('\n')) {
    const m = /^\/\d+\/\d+\/\d+\/\d+\/f(\d+)\/(\d+)\/$/.exec(line.trim());
    if (m) out.set(Number(m[1]), m[2]!);
  }
  rmSync(copy);
  return out;
}

async function quitVm(qmpSocket: string): Promise<void> {
  const q = await QmpClient.connect({ path: qmpSocket });
  const status = await q.execute<{ status: string }>('query-status');
  await q.execute('quit').catch(() => undefined);
  await q.close();
  assert.equal(status.status, 'running', 'the VM runs after the recovery');
}

describe('recover (real QEMU, TCG)', { timeout: 300_000 }, () => {
  let guest: TestGuest;
  let ws: Workspace;
  let pointId: string;

  before(async () => {
    guest = await buildTestGuest();
    ws = new Workspace();
    ws.ok(['init']);
    const disk = await createGuestDisk(guest, ws.path('disk.raw'), 'raw');
    const r = ws.ok(['backup', disk, '--name', 'vm1', '--json']);
    pointId = r.id;
    assert.ok(pointId, 'backup printed the point id');
    rmSync(disk); // the original disk is gone: booting can only read the backup
  });

  // What a test started, stopped even when it fails half-way (else the test process hangs).
  const started: { procs: ChildProcess[]; consoles: Console[] } = { procs: [], consoles: [] };
  const stopAll = async (): Promise<void> => {
    for (const p of started.procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
    try {
      execFileSync('pkill', ['-9', '-f', 'vmvault-test-recover']);
    } catch {
      // nothing left running
    }
    await Promise.all(started.consoles.splice(0).map((c) => c.close()));
  };
  const openConsole = async (name: string): Promise<Console> => {
    const con = new Console(ws.path(name));
    started.consoles.push(con);
    await con.listen();
    return con;
  };
  const spawnCli = (args: string[]): ChildProcess => {
    const p = ws.spawn(args);
    started.procs.push(p);
    return p;
  };

  afterEach(stopAll);
  after(async () => {
    await stopAll();
    ws?.cleanup();
  });

  it('boots the guest from the backup, copies the disk, keeps the guest writes and switches live', async () => {
    const con = await openConsole('ser1.sock');
    const target = ws.path('target1.raw');
    const p = spawnCli([
      'recover',
      pointId,
      '--to',
      target,
      '--bandwidth',
      '128K',
      '--json',
      '--',
      ...qemuCommand(guest, con.path),
      '-name',
      'vmvault-test-recover',
    ]);
    let out = '';
    p.stdout!.on('data', (d: Buffer) => {
      out += d;
    });
    let err = '';
    p.stderr!.on('data', (d: Buffer) => {
      err += d;
    });
    // The guest boots from the live mount while the copy runs, and writes files.
    await con.waitFor(() => con.lastWrote() >= 3, 120_000, 'the guest to write 3 files');
    assert.ok(!existsSync(target), 'the target is not in place before the copy is complete');
    const code = await exited(p);
    assert.equal(code, 0, `recover failed: ${err}`);
    const wroteBefore = con.lastWrote();
    const r = JSON.parse(out);
    assert.equal(r.resumed, false);
    assert.ok(r.qemuPid > 0);
    assert.ok(!existsSync(`${target}.vmvault-recover`), 'the journal and overlay are removed');
    // Still running on the target: more writes land there.
    await con.waitFor(() => con.lastWrote() >= wroteBefore + 2, 60_000, 'writes after the switch');
    const wroteAfter = con.lastWrote();
    await quitVm(r.qmpSocket);
    await con.close();
    const files = dataFiles(ws, target);
    for (let i = 1; i <= wroteAfter; i++) assert.equal(files.get(i), '16384', `file f${i} is on the target`);
    // The rest of the guest's filesystem came from the backup.
    const init = execFileSync('debugfs', ['-R', 'stat /sbin/init', target], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    assert.match(init, /Type: regular/);
  });

  it('survives kill -9 during the copy and resumes without losing a guest write', async () => {
    const con = await openConsole('ser2.sock');
    const target = ws.path('target2.raw');
    // Slow enough that the copy is still running when the guest has written twice, even on a
    // loaded machine.
    const args = ['recover', pointId, '--to', target, '--bandwidth', '96K', '--json'];
    const first = spawnCli([...args, '--', ...qemuCommand(guest, con.path), '-name', 'vmvault-test-recover']);
    await con.waitFor(() => con.lastWrote() >= 2, 120_000, 'the guest to write 2 files');
    assert.ok(existsSync(`${target}.vmvault-recover/state.json`), 'a journal exists mid-recovery');
    first.kill('SIGKILL');
    await exited(first);
    const killedAt = con.lastWrote();
    // The VM (daemonized) outlives vmvault; resume with the same command, without the QEMU part.
    const second = spawnCli(args);
    let out = '';
    second.stdout!.on('data', (d: Buffer) => {
      out += d;
    });
    let err = '';
    second.stderr!.on('data', (d: Buffer) => {
      err += d;
    });
    const code = await exited(second);
    assert.equal(code, 0, `resumed recover failed: ${err}`);
    const r = JSON.parse(out);
    assert.equal(r.resumed, true);
    assert.equal(r.vmRestarted, false, 'the VM kept running while vmvault was down');
    await con.waitFor(() => con.lastWrote() >= Math.max(killedAt, 1) + 2, 90_000, 'writes after the resume');
    const wrote = con.lastWrote();
    await quitVm(r.qmpSocket);
    await con.close();
    const files = dataFiles(ws, target);
    for (let i = 1; i <= wrote; i++) assert.equal(files.get(i), '16384', `file f${i} is on the target`);
  });
});
