import { posix } from 'node:path';
import type { Catalog, IndexedEntry } from '../../catalog/index.js';
import { VmvaultError } from '../../core/errors.js';
import { formatBytes } from '../../core/units.js';
import type { PointFiles } from '../../files/index.js';
import { splitPath } from '../../files/view-path.js';
import type { CommandRun } from '../command.js';
import { table } from '../table.js';
import { filesSpec } from './specs.js';

/** One row of `files ls` (the same whether answered from the file index or the filesystem). */
export interface ListedEntry {
  name: string;
  type: string;
  size: number;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: string;
  target?: string;
  fsType?: string;
  label?: string;
}

function modeString(type: string, mode: number): string {
  const t = type === 'dir' ? 'd' : type === 'symlink' ? 'l' : type === 'file' ? '-' : '?';
  let s = t;
  for (let shift = 6; shift >= 0; shift -= 3) {
    const bits = (mode >> shift) & 7;
    s += (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + (bits & 1 ? 'x' : '-');
  }
  return s;
}

/** Sorts a listing by name (byte order), so both sources list in the same order. */
function byName(entries: ListedEntry[]): ListedEntry[] {
  return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** A listing row from an entry's metadata (index row or filesystem stat). */
function listed(
  e: Pick<IndexedEntry, 'name' | 'type' | 'size' | 'mode' | 'uid' | 'gid'>,
  mtimeMs: number,
  target: string | null,
): ListedEntry {
  return {
    name: e.name,
    type: e.type,
    size: e.size,
    mode: e.mode & 0o7777,
    uid: e.uid,
    gid: e.gid,
    mtime: new Date(mtimeMs).toISOString(),
    ...(target !== null ? { target } : {}),
  };
}

/**
 * `files ls` answered from the file index of point `ref` in `cat`, or null when the index
 * cannot answer exactly as the filesystem would: the point has no index, the path is above
 * the filesystems (a list of volumes), goes through a symlink or is not in the index (the
 * filesystem then gives the answer or the error), or a symlink's target was not indexed.
 */
export function lsFromIndex(cat: Catalog, ref: string, path: string): ListedEntry[] | null {
  const pointId = cat.resolvePointRef(ref);
  if (!cat.hasFileIndex(pointId)) return null;
  const parts = splitPath(path);
  // A volume's view path is "disk", "part1" or, on a point with several disks, "vdb/part2".
  for (const depth of [1, 2]) {
    if (parts.length < depth) break;
    const volume = parts.slice(0, depth).join('/');
    if (!cat.hasIndexedVolume(pointId, volume)) continue;
    const inner = `/${parts.slice(depth).join('/')}`;
    let found: IndexedEntry[];
    if (inner === '/') found = cat.indexedDir(pointId, volume, '/');
    else {
      const e = cat.indexedEntry(pointId, volume, inner);
      if (!e) return null;
      found = e.type === 'dir' ? cat.indexedDir(pointId, volume, inner) : [e];
    }
    if (found.some((e) => e.type === 'symlink' && e.target === null)) return null;
    return byName(found.map((e) => listed(e, e.mtimeMs, e.target)));
  }
  return null;
}

/** `files ls` answered by reading the filesystem in the backup. */
export async function lsFromFilesystem(files: PointFiles, path: string): Promise<ListedEntry[]> {
  const r = await files.resolve(path);
  if (!r.volume) {
    // Above the filesystems: list volumes (or a disk's volumes).
    const depth = r.prefix.length;
    const seen = new Map<string, ListedEntry>();
    for (const v of await files.volumes()) {
      const parts = v.path.split('/');
      if (!r.prefix.every((p, i) => parts[i] === p)) continue;
      const name = parts[depth]!;
      if (seen.has(name)) continue;
      const leaf = parts.length === depth + 1;
      seen.set(name, {
        name,
        type: 'dir',
        size: leaf ? v.volume.size : 0,
        ...(leaf ? { fsType: v.volume.type, ...(v.volume.label ? { label: v.volume.label } : {}) } : {}),
      });
    }
    return [...seen.values()];
  }
  const fs = await files.filesystem(r.volume);
  const st = await fs.stat(r.inner);
  const entries = st.type === 'dir' ? await fs.readdir(r.inner) : [{ ...st, name: posix.basename(r.inner) }];
  const out: ListedEntry[] = [];
  for (const e of entries) {
    const target =
      e.type === 'symlink'
        ? await fs.readlink(st.type === 'dir' ? posix.join(r.inner, e.name) : r.inner)
        : null;
    out.push(listed(e, e.mtime.getTime(), target));
  }
  return byName(out);
}

/** Prints a `files ls` listing. */
function printListing(ctx: Parameters<CommandRun>[0], entries: ListedEntry[]): void {
  ctx.out(entries, () =>
    entries.length === 0
      ? '(empty)'
      : table(
          ['mode', 'owner', 'size', 'mtime', 'name'],
          entries.map((e) => [
            e.mode === undefined ? 'd---------' : modeString(e.type, e.mode),
            e.uid === undefined ? '' : `${e.uid}:${e.gid}`,
            e.fsType
              ? `${formatBytes(e.size)} ${e.fsType}${e.label ? ` "${e.label}"` : ''}`
              : formatBytes(e.size),
            e.mtime ? e.mtime.replace('T', ' ').replace(/\.\d+Z$/, '') : '',
            e.target ? `${e.name} -> ${e.target}` : e.type === 'dir' ? `${e.name}/` : e.name,
          ]),
        ),
  );
}

/** Runs `vmvault files` (its options and help: `filesSpec` in specs.ts). */
export const run: CommandRun = async (ctx, args, v) => {
  const [sub, ref, ...rest] = args;
  if (!sub || !ref || !['ls', 'cat', 'restore'].includes(sub)) {
    throw new VmvaultError('E_USAGE', 'files needs a sub-command (ls, cat, restore) and a restore point id', {
      hint: `usage: vmvault ${filesSpec.usage}`,
    });
  }
  if (sub === 'ls') {
    if (rest.length > 1) throw new VmvaultError('E_USAGE', 'files ls takes at most one path');
    // The file index in the catalog answers without the repository or the filesystem readers.
    const indexed =
      v['from-fs'] === true
        ? null
        : await ctx.withCatalogOnly(false, (cat) => lsFromIndex(cat, ref, rest[0] ?? '/'));
    if (indexed) {
      printListing(ctx, indexed);
      return 0;
    }
  }
  const { extractPaths, PointFiles, TarWriter } = await import('../../files/index.js');
  return ctx.withRepo(
    'shared',
    `files ${sub} ${ref}`,
    async (repo) => {
      const point = await repo.resolvePoint(ref);
      const files = new PointFiles(repo, point);
      if (sub === 'ls') {
        printListing(ctx, await lsFromFilesystem(files, rest[0] ?? '/'));
        return 0;
      }
      if (sub === 'cat') {
        if (rest.length !== 1) throw new VmvaultError('E_USAGE', 'files cat takes one path');
        const r = await files.resolve(rest[0]!);
        if (!r.volume) throw new VmvaultError('E_USAGE', `${rest[0]} is a directory of volumes, not a file`);
        const fs = await files.filesystem(r.volume);
        const st = await fs.stat(r.inner);
        if (st.type !== 'file')
          throw new VmvaultError('E_USAGE', `${rest[0]} is a ${st.type}, not a regular file`);
        for await (const piece of fs.readFile(r.inner)) {
          if (!process.stdout.write(piece)) await new Promise((res) => process.stdout.once('drain', res));
        }
        return 0;
      }
      // restore
      if (rest.length === 0) throw new VmvaultError('E_USAGE', 'files restore takes one or more paths');
      const to = v.to as string | undefined;
      if ((to === undefined) === (v.tar !== true)) {
        throw new VmvaultError('E_USAGE', 'files restore needs exactly one of --to DIR or --tar');
      }
      if (v.tar) {
        if (process.stdout.isTTY)
          throw new VmvaultError('E_USAGE', 'refusing to write a tar to a terminal', {
            hint: 'redirect stdout to a file or a pipe',
          });
        const report = await extractPaths(files, rest, { kind: 'tar', tar: new TarWriter(process.stdout) });
        if (!ctx.opts.quiet)
          process.stderr.write(`wrote ${report.files} file(s), ${formatBytes(report.bytes)} as tar\n`);
        return 0;
      }
      const report = await extractPaths(files, rest, { kind: 'dir', dir: to! });
      ctx.out(
        { to, ...report },
        () =>
          `restored ${report.files} file(s) (${formatBytes(report.bytes)}), ${report.dirs} dir(s), ${report.symlinks} symlink(s), ${report.hardlinks} hard link(s) to ${to}`,
      );
      return 0;
    },
    true,
  );
};
