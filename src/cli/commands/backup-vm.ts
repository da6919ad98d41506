/** `vmvault backup qmp:<socket>`: back up every disk of a running QEMU VM (issue #4). */
import { basename } from 'node:path';
import { backupVm, trace } from '../../backup/index.js';
import { VmvaultError, formatBytes, formatDuration } from '../../core/index.js';
import { QmpClient } from '../../protocols/qmp/index.js';
import type { Context } from '../context.js';

function seconds(v: unknown, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0)
    throw new VmvaultError('E_USAGE', `${what} takes seconds, not ${String(v)}`);
  return n * 1000;
}

/**
 * Runs a VM backup for `spec` ("qmp:/path/to/qmp.sock"); returns the exit code. Options:
 * `--name`, `--tag`, `--guest-agent PATH` / `--no-guest-agent`, `--freeze-timeout S`,
 * `--nbd-socket PATH` (QEMU already runs an NBD server there), `--scratch-dir DIR`, `--disk NODE`.
 */
export async function backupVmCommand(
  ctx: Context,
  spec: string,
  values: Record<string, string | boolean | string[] | undefined>,
): Promise<number> {
  const socket = spec.slice('qmp:'.length);
  if (!socket) {
    throw new VmvaultError('E_USAGE', 'qmp: needs the path of the QMP socket', {
      hint: 'vmvault backup qmp:/run/vm1/qmp.sock --name vm1',
    });
  }
  const freezeTimeoutMs = seconds(values['freeze-timeout'], '--freeze-timeout');
  // The monitor is connected while the repository opens (withRepo below).
  const connecting = QmpClient.connect(
    { path: socket },
    { connectTimeoutMs: 10_000, commandTimeoutMs: 60_000 },
  ).catch((err: unknown) => {
    throw new VmvaultError(
      'E_SOURCE',
      `cannot connect to the QMP monitor at ${socket}: ${(err as Error).message}`,
      {
        hint: 'is the VM running, and is no other client (libvirt, another vmvault) using that monitor?',
        cause: err,
      },
    );
  });
  connecting.catch(() => undefined); // awaited below
  const say = (m: string): void => {
    if (!ctx.opts.quiet) process.stderr.write(`vmvault: ${m}\n`);
  };
  let qmp: QmpClient | undefined;
  try {
    const given = values.name as string | undefined;
    // The lock names the backup: without --name that needs the VM's name, hence QMP first.
    const backupName =
      given ??
      (await (async () => {
        qmp = await connecting;
        const n = await qmp.execute<{ name?: string }>('query-name').catch(() => ({}) as { name?: string });
        return n.name ?? basename(socket).replace(/\.(sock|socket)$/, '');
      })());
    ctx.prestartPool();
    await ctx.withRepo('shared', `backup ${backupName}`, async (repo) => {
      const pool = await ctx.codecPool(repo);
      const bar = ctx.progress(`backup ${backupName}`);
      try {
        trace('repository open');
        [, qmp] = await Promise.all([repo.recoverOrphanPacks(), connecting]);
        trace('monitor connected');
        const r = await backupVm(repo, pool, qmp, {
          name: backupName,
          qmpSocket: socket,
          tags: (values.tag as string[] | undefined) ?? [],
          ...(values['no-guest-agent']
            ? { guestAgent: false as const }
            : values['guest-agent']
              ? { guestAgent: values['guest-agent'] as string }
              : {}),
          ...(freezeTimeoutMs ? { freezeTimeoutMs } : {}),
          ...(values['nbd-socket'] ? { nbdSocket: values['nbd-socket'] as string } : {}),
          ...(values['scratch-dir'] ? { scratchDir: values['scratch-dir'] as string } : {}),
          ...(values.disk ? { disks: values.disk as string[] } : {}),
          onProgress: (p) => bar.update(p.done, p.total),
          onNotice: (m) => {
            bar.done();
            say(m);
          },
        });
        bar.done();
        (await ctx.openCatalog(repo)).close();
        trace('catalog');
        const p = r.point;
        const c = r.record.consistency;
        ctx.out(
          {
            id: p.id,
            name: p.name,
            time: p.time,
            bytesRead: r.bytesRead,
            bytesStored: r.bytesStored,
            dirtyBytes: r.dirtyBytes,
            durationMs: p.durationMs,
            consistency: c.level,
            consistencyDetail: c.detail,
            disks: p.disks.map((d) => ({
              name: d.name,
              size: d.size,
              node: r.record.tracking[d.name]?.node,
              bitmap: r.record.tracking[d.name]?.bitmap,
              method: d.method,
              reason: d.reason,
              bytesRead: d.stats.bytesRead,
              bytesStored: d.stats.bytesStored,
              chunks: { new: d.stats.chunksNew, reused: d.stats.chunksReused, zero: d.stats.chunksZero },
            })),
            notices: r.notices,
          },
          () =>
            [
              `restore point ${p.id} of ${p.name}: ${p.disks.length} disk(s), read ${formatBytes(r.bytesRead)}, ` +
                `stored ${formatBytes(r.bytesStored)} in ${formatDuration(p.durationMs / 1000)}`,
              c.level === 'application'
                ? `  consistency: application-consistent (${c.detail})`
                : `  consistency: CRASH-CONSISTENT ONLY (${c.detail})`,
              ...p.disks.map(
                (d) =>
                  `  ${d.name}: ${d.method}, read ${formatBytes(d.stats.bytesRead)}, ${d.stats.chunksNew} new chunks — ${d.reason}`,
              ),
            ].join('\n'),
        );
      } finally {
        bar.done();
        await ctx.releasePool(pool);
      }
    });
  } finally {
    await (qmp ?? (await connecting.catch(() => undefined)))?.close();
    trace('done');
  }
  return 0;
}
