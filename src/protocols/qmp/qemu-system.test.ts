/**
 * qemu-system-x86_64 helpers without booting an OS: start/stop, describeVm, a guest-agent
 * chardev nobody answers (quick "no agent" error), process cleanup, and the KVM probe.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isVmvaultError } from '../../core/errors.js';
import { GuestAgentClient } from './guest-agent.js';
import { probeKvmDetailed } from './kvm-probe.js';
import { describeVm, humanMonitorCommand, queryStatus } from './machine.js';
import { liveProcesses } from './process.js';
import { qemuOptValue, type QemuHandle, startQemuSystem } from './qemu-process.js';

describe('qemu-system-x86_64 (no guest OS)', () => {
  let dir: string;
  let vm: QemuHandle | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmv-sys-'));
    vm = await startQemuSystem({
      dir,
      paused: true,
      name: 'probe-vm',
      memoryMiB: 128,
      blockdevs: [{ driver: 'null-co', 'node-name': 'disk0', size: 64 * 1024 * 1024 }],
      chardevs: [`socket,id=qga0,path=${qemuOptValue(join(dir, 'qga.sock'))},server=on,wait=off`],
      devices: [
        'virtio-blk-pci,drive=disk0,id=vda',
        'virtio-serial-pci,id=vser0',
        'virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0',
      ],
    });
  });

  after(async () => {
    await vm?.stop({ graceMs: 2000 });
    await rm(dir, { recursive: true, force: true });
  });

  it('describes the VM from what QEMU reports', async () => {
    const d = await describeVm(vm!.qmp);
    assert.equal(d.name, 'probe-vm');
    assert.match(d.machineType ?? '', /^pc-i440fx-/);
    assert.equal(d.arch, 'x86_64');
    assert.equal(d.kvm?.enabled, false);
    assert.equal(d.status.status, 'prelaunch');
    assert.equal(d.cpus, 1);
    assert.equal(d.memoryBytes, 128 * 1024 * 1024);
    const disk = d.disks.find((x) => x.nodeName === 'disk0');
    assert.equal(disk?.format, 'null-co');
    assert.equal(disk?.virtualSize, 64 * 1024 * 1024);
    assert.match(disk?.qdev ?? '', /vda/);
    assert.deepEqual(d.devices.map((x) => `${x.id}:${x.type}`).sort(), [
      'vda:virtio-blk-pci',
      'vser0:virtio-serial-pci',
    ]);
    assert.match(await humanMonitorCommand(vm!.qmp, 'info status'), /prelaunch/);
    assert.equal((await queryStatus(vm!.qmp)).running, false);
  });

  it('reports a missing guest agent quickly', async () => {
    const t0 = Date.now();
    await assert.rejects(GuestAgentClient.connect(join(dir, 'qga.sock'), { syncTimeoutMs: 800 }), (err) => {
      assert.ok(isVmvaultError(err, 'E_TIMEOUT'));
      assert.equal(err.details.reason, 'no-agent');
      return true;
    });
    assert.ok(Date.now() - t0 < 2000);
  });

  it('kills QEMU on stop and leaves no process behind', async () => {
    const pid = vm!.process.pid;
    const st = await vm!.stop();
    assert.equal(st.code, 0); // QMP quit
    assert.ok(!liveProcesses().some((p) => p.pid === pid));
    assert.throws(() => process.kill(pid, 0));
    vm = undefined;
  });

  it('fails fast, killing the process, when QEMU rejects its arguments', async () => {
    await assert.rejects(
      startQemuSystem({ dir, devices: ['no-such-device-model'], readyTimeoutMs: 5000 }),
      /exited during start-up/,
    );
    assert.equal(liveProcesses().length, 0);
  });

  it('probes KVM with a bounded boot', async () => {
    const r = await probeKvmDetailed({ timeoutMs: 4000 });
    assert.equal(typeof r.usable, 'boolean');
    assert.ok(r.elapsedMs < 8000, `probe took ${r.elapsedMs} ms`);
    assert.ok(r.reason.length > 0);
    assert.equal(liveProcesses().length, 0);
  });
});
