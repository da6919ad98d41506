import { posix } from 'node:path';
import { VmvaultError, formatBytes } from '../../core/index.js';
import { extractPaths, PointFiles, TarWriter } from '../../files/index.js';
import type { Command } from '../command.js';
import type { Context } from '../context.js';
import { table } from '../table.js';

/** One row of `files ls`. */
interface ListedEntry {
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

async function ls(ctx: Context, files: PointFiles, path: string): Promise<ListedEntry[]> {
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
    const item: ListedEntry = {
      name: e.name,
      type: e.type,
      size: e.size,
      mode: e.mode & 0o7777,
      uid: e.uid,
      gid: e.gid,
      mtime: e.mtime.toISOString(),
    };
    if (e.type === 'symlink')
      item.target = await fs.readlink(st.type === 'dir' ? posix.join(r.inner, e.name) : r.inner);
    out.push(item);
  }
  void ctx;
  return out;
}

export const filesCommand: Command = {
  name: 'files',
  summary: 'browse and extract single files from a restore point (ls, cat, restore)',
  usage: 'files ls <id> [path] | files cat <id> <path> | files restore <id> <path>... (--to DIR | --tar)',
  options: { to: { type: 'string' }, tar: { type: 'boolean' } },
  async run(ctx, args, v) {
    const [sub, ref, ...rest] = args;
    if (!sub || !ref || !['ls', 'cat', 'restore'].includes(sub)) {
      throw new VmvaultError(
        'E_USAGE',
        'files needs a sub-command (ls, cat, restore) and a restore point id',
        {
          hint: `usage: vmvault ${filesCommand.usage}`,
        },
      );
    }
    return ctx.withRepo(
      'shared',
      `files ${sub} ${ref}`,
      async (repo) => {
        const point = await repo.resolvePoint(ref);
        const files = new PointFiles(repo, point);
        if (sub === 'ls') {
          if (rest.length > 1) throw new VmvaultError('E_USAGE', 'files ls takes at most one path');
          const entries = await ls(ctx, files, rest[0] ?? '/');
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
          return 0;
        }
        if (sub === 'cat') {
          if (rest.length !== 1) throw new VmvaultError('E_USAGE', 'files cat takes one path');
          const r = await files.resolve(rest[0]!);
          if (!r.volume)
            throw new VmvaultError('E_USAGE', `${rest[0]} is a directory of volumes, not a file`);
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
  },
};
