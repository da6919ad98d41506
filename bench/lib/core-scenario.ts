/**
 * One repetition of the core benchmark: full backup (vmvault plain and encrypted, zstd and lz4;
 * restic),
 * incrementals after aligned and unaligned random writes, an unchanged backup, full restores.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { applyWrites, copySparse, type WritePlan } from './image.js';
import { note } from './log.js';
import { run, sameFiles, warmCache } from './proc.js';
import { Prng } from './prng.js';
import { warmDir, withGrowth } from './repo.js';
import { Restic, Vmvault } from './tools.js';

/** Figures of one repetition, by name (ms, bytes). */
export type Figures = Record<string, number>;

/** Inputs of {@link runCoreScenario}. */
export interface ScenarioInput {
  dir: string;
  master: string;
  aligned: WritePlan;
  unaligned: WritePlan;
  seed: number;
}

const PASSWORD = 'vmvault-bench-passphrase';

/**
 * Runs the whole scenario in `input.dir` on a fresh sparse copy of the master image.
 * @throws Error if a restored image differs from the backed-up one.
 */
export async function runCoreScenario(input: ScenarioInput): Promise<Figures> {
  const { dir } = input;
  await mkdir(dir, { recursive: true });
  const img = join(dir, 'disk.img');
  await copySparse(input.master, img);
  const env = { ...process.env, XDG_CACHE_HOME: join(dir, 'xdg-cache'), VMVAULT_PASSWORD: PASSWORD };
  const plain = new Vmvault(join(dir, 'vmvault-plain'), env);
  const enc = new Vmvault(join(dir, 'vmvault-enc'), env);
  const lz4 = new Vmvault(join(dir, 'vmvault-enc-lz4'), env);
  const restic = new Restic(join(dir, 'restic'), join(dir, 'restic-cache'), PASSWORD);
  const f: Figures = {};
  // Each timed step starts with no dirty pages left by the ones before it (a backup or restore
  // that fsyncs would otherwise also wait for their writeback; one that does not, would not).
  const settle = async () => {
    await run('sync', []);
  };
  const vmBackup = async (repo: Vmvault, key: string) => {
    await warmCache(img);
    await settle();
    const r = await withGrowth(repo.repo, () => repo.backup(img, 'disk'));
    f[`${key}.ms`] = r.ms;
    f[`${key}.rss`] = r.maxRss;
    f[`${key}.stored`] = r.bytesStored;
    f[`${key}.growth`] = r.growth;
    note(
      `${key}: ${(r.ms / 1000).toFixed(2)} s, stored ${r.bytesStored}, growth ${r.growth}, rss ${r.maxRss}`,
    );
    return r;
  };
  const resticBackup = async (key: string) => {
    await warmCache(img);
    await settle();
    const r = await withGrowth(restic.repo, () => restic.backup(dir, 'disk.img'));
    f[`${key}.ms`] = r.ms;
    f[`${key}.rss`] = r.maxRss;
    f[`${key}.stored`] = r.bytesStored;
    f[`${key}.growth`] = r.growth;
    note(
      `${key}: ${(r.ms / 1000).toFixed(2)} s, data_added ${r.bytesStored}, growth ${r.growth}, rss ${r.maxRss}`,
    );
  };

  await plain.init({ encrypt: false });
  await enc.init({ encrypt: true });
  await lz4.init({ encrypt: true, compression: 'lz4' });
  await restic.init();
  await vmBackup(plain, 'vm.plain.full');
  await vmBackup(enc, 'vm.full');
  const lz4Point = await vmBackup(lz4, 'vm.lz4.full');
  await resticBackup('restic.full');

  f.changedAligned = await applyWrites(img, input.aligned, new Prng(input.seed + 1));
  await vmBackup(enc, 'vm.incA');
  await resticBackup('restic.incA');

  f.changedUnaligned = await applyWrites(img, input.unaligned, new Prng(input.seed + 2));
  await vmBackup(enc, 'vm.incU');
  await resticBackup('restic.incU');

  const last = await vmBackup(enc, 'vm.same');
  await resticBackup('restic.same');

  await warmDir(enc.repo);
  await settle();
  const vr = await enc.restore(last.id, join(dir, 'vmvault-restored.img'));
  f['vm.restore.ms'] = vr.ms;
  f['vm.restore.rss'] = vr.maxRss;
  note(`vm.restore: ${(vr.ms / 1000).toFixed(2)} s`);
  if (!(await sameFiles(img, vr.file)))
    throw new Error(`RESTORE MISMATCH: vmvault restored ${vr.file} differs from ${img}`);
  await rm(vr.file, { force: true });

  await warmDir(lz4.repo);
  await settle();
  const lr = await lz4.restore(lz4Point.id, join(dir, 'vmvault-lz4-restored.img'));
  f['vm.lz4.restore.ms'] = lr.ms;
  note(`vm.lz4.restore: ${(lr.ms / 1000).toFixed(2)} s`);
  if (!(await sameFiles(input.master, lr.file)))
    throw new Error(`RESTORE MISMATCH: vmvault (lz4) restored ${lr.file} differs from the master image`);
  await rm(lr.file, { force: true });
  await rm(lz4.repo, { recursive: true, force: true });

  await warmDir(restic.repo);
  await settle();
  const rr = await restic.restore(join(dir, 'restic-restored'), 'disk.img');
  f['restic.restore.ms'] = rr.ms;
  f['restic.restore.rss'] = rr.maxRss;
  // restic 0.14 does not fsync restored files, vmvault does: time a `sync FILE` after restic too.
  f['restic.restoreSync.ms'] = rr.ms + (await run('sync', [rr.file])).ms;
  note(
    `restic.restore: ${(rr.ms / 1000).toFixed(2)} s, with sync ${(f['restic.restoreSync.ms'] / 1000).toFixed(2)} s`,
  );
  if (!(await sameFiles(img, rr.file)))
    throw new Error(`RESTORE MISMATCH: restic restored ${rr.file} differs from ${img}`);
  await rm(join(dir, 'restic-restored'), { recursive: true, force: true });
  return f;
}
