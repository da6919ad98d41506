/**
 * Decides whether KVM really works. On some hosts (nested virtualisation) `/dev/kvm` exists and
 * QEMU starts with `-accel kvm`, SeaBIOS even runs, but a Linux guest hangs before printing
 * anything. The probe boots a Linux kernel (no root filesystem) for a bounded time and checks it
 * reaches the root-mount panic, which a working KVM does in about a second.
 */
import { constants } from 'node:fs';
import { access, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnManaged } from './process.js';

/** Result of {@link probeKvmDetailed}. */
export interface KvmProbeResult {
  usable: boolean;
  /** Why, in one line. */
  reason: string;
  /** Milliseconds the probe took. */
  elapsedMs: number;
}

/** Options of {@link probeKvm}. */
export interface KvmProbeOptions {
  /** Kernel to boot (default `/boot/vmlinuz-$(uname -r)`, else the first `/boot/vmlinuz-*`). */
  kernel?: string;
  /** How long a working KVM may take (default 5 s). */
  timeoutMs?: number;
  /** QEMU binary (default `qemu-system-x86_64`). */
  binary?: string;
}

const cache = new Map<string, Promise<KvmProbeResult>>();

/**
 * True when KVM accelerates a Linux guest here. Honours `VMVAULT_ACCEL=tcg|kvm` (forces the
 * answer). The result is cached per kernel for the life of the process.
 */
export async function probeKvm(options: KvmProbeOptions = {}): Promise<boolean> {
  return (await probeKvmDetailed(options)).usable;
}

/** `kvm` when {@link probeKvm} says so, else `tcg`. */
export async function chooseAccel(options: KvmProbeOptions = {}): Promise<'kvm' | 'tcg'> {
  return (await probeKvm(options)) ? 'kvm' : 'tcg';
}

/** Like {@link probeKvm} with the reason and timing. */
export function probeKvmDetailed(options: KvmProbeOptions = {}): Promise<KvmProbeResult> {
  const key = `${options.kernel ?? ''}|${options.binary ?? ''}|${options.timeoutMs ?? ''}`;
  let p = cache.get(key);
  if (!p) {
    p = runProbe(options);
    cache.set(key, p);
  }
  return p;
}

async function findKernel(): Promise<string | undefined> {
  const own = `/boot/vmlinuz-${release()}`;
  try {
    await access(own, constants.R_OK);
    return own;
  } catch {
    // fall through
  }
  try {
    const names = (await readdir('/boot')).filter((n) => n.startsWith('vmlinuz-')).sort();
    return names.length ? join('/boot', names[names.length - 1] as string) : undefined;
  } catch {
    return undefined;
  }
}

async function runProbe(options: KvmProbeOptions): Promise<KvmProbeResult> {
  const t0 = Date.now();
  const done = (usable: boolean, reason: string): KvmProbeResult => ({
    usable,
    reason,
    elapsedMs: Date.now() - t0,
  });
  const forced = process.env.VMVAULT_ACCEL;
  if (forced === 'tcg' || forced === 'kvm')
    return done(forced === 'kvm', `forced by VMVAULT_ACCEL=${forced}`);
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return done(false, '/dev/kvm is missing or not accessible');
  }
  const kernel = options.kernel ?? (await findKernel());
  if (!kernel) return done(false, 'no kernel to probe with (/boot/vmlinuz-*)');
  const timeoutMs = options.timeoutMs ?? 5000;
  const dir = await mkdtemp(join(tmpdir(), 'vmvault-kvm-'));
  const log = join(dir, 'serial.log');
  try {
    const proc = await spawnManaged(
      options.binary ?? 'qemu-system-x86_64',
      [
        '-accel',
        'kvm',
        '-nodefaults',
        '-display',
        'none',
        '-no-user-config',
        '-no-reboot',
        '-m',
        '128',
        '-kernel',
        kernel,
        '-append',
        'console=ttyS0 panic=-1 loglevel=4',
        '-serial',
        `file:${log}`,
      ],
      { name: 'kvm-probe' },
    );
    try {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const text = await readFile(log, 'utf8').catch(() => '');
        if (/Kernel panic|Unable to mount root|Run \/init/.test(text))
          return done(true, 'a Linux guest booted under KVM');
        const st = proc.exitStatus();
        if (st) {
          return st.code === 0 && text.length > 0
            ? done(true, 'a Linux guest booted under KVM')
            : done(
                false,
                `QEMU with -accel kvm exited (${st.code ?? st.signal}): ${proc.output().trim().slice(-300)}`,
              );
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      return done(false, `a Linux guest under KVM did not boot within ${timeoutMs} ms (hangs): use TCG`);
    } finally {
      await proc.stop({ graceMs: 500 });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
