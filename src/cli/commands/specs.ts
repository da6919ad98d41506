/**
 * The command table: every command's name, help text and options, and how to load its
 * implementation. This module imports nothing at run time, so `vmvault help`, `--help` and
 * argument checking cost no module loading; a command's module (and what it pulls in: zstd,
 * SQLite, NBD, filesystem readers, QEMU helpers…) is imported only when that command runs.
 */
import type { CommandSpec, OptionsSpec } from '../command.js';

/** Options `vmvault backup` accepts for `qmp:` sources. */
export const VM_BACKUP_OPTIONS: OptionsSpec = {
  'guest-agent': { type: 'string' },
  'no-guest-agent': { type: 'boolean' },
  'freeze-timeout': { type: 'string' },
  'nbd-socket': { type: 'string' },
  'scratch-dir': { type: 'string' },
  disk: { type: 'string', multiple: true },
};

/** Retention rules of `vmvault prune`, each a `--keep-<rule> N` option. */
export const PRUNE_RULES = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;

export const initSpec: CommandSpec = {
  name: 'init',
  summary: 'create a repository (plain, or encrypted with --encrypt)',
  usage: 'init [--encrypt] [--chunk-size 64K] [--compression zstd|lz4|none] [--compression-level 1]',
  options: {
    encrypt: { type: 'boolean' },
    compression: { type: 'string' },
    'chunk-size': { type: 'string' },
    'compression-level': { type: 'string' },
  },
  load: async () => (await import('./init.js')).run,
};

export const backupSpec: CommandSpec = {
  name: 'backup',
  summary:
    'back up a disk image (raw, qcow2, vmdk…), a block device, an NBD export or a running VM (qmp:SOCKET)',
  usage:
    'backup <path> [--name NAME] [--tag TAG]... [--no-file-index]\n  backup qmp:<socket> [--name NAME] [--guest-agent PATH | --no-guest-agent] [--freeze-timeout S] [--disk NODE]... [--nbd-socket PATH] [--scratch-dir DIR]',
  options: {
    name: { type: 'string' },
    tag: { type: 'string', multiple: true },
    'no-file-index': { type: 'boolean' },
    ...VM_BACKUP_OPTIONS,
  },
  load: async () => (await import('./backup.js')).run,
};

export const serveSpec: CommandSpec = {
  name: 'serve',
  summary: 'serve the REST API (backups, restores, live mounts, schedules) over an open repository',
  usage:
    'serve [--socket PATH | --port N [--host 127.0.0.1]] [--token-file FILE] [--schedule FILE]\n\n' +
    'Listens on 127.0.0.1:8420 by default and prints the URL on its first line of stdout; stays\n' +
    'in the foreground until SIGINT or SIGTERM, then lets running jobs finish. The repository,\n' +
    'its index and its worker threads stay open between jobs, so a job starts at once. Other\n' +
    'addresses than loopback need --token-file (or VMVAULT_TOKEN): clients then send\n' +
    '"Authorization: Bearer TOKEN". CLI commands reach it with --server URL (backup, restore,\n' +
    'verify, prune, gc, list, stats). --schedule FILE (JSON) makes it run backups (each with\n' +
    'an optional prune), verify and gc by itself at fixed intervals. The API and the schedule\n' +
    'format: docs/server.md.',
  options: {
    socket: { type: 'string' },
    port: { type: 'string' },
    host: { type: 'string' },
    schedule: { type: 'string' },
  },
  load: async () => (await import('./serve.js')).run,
};

export const listSpec: CommandSpec = {
  name: 'list',
  summary: 'list restore points, grouped by name',
  usage: 'list [--name NAME]',
  options: { name: { type: 'string' } },
  load: async () => (await import('./list.js')).run,
};

export const restoreSpec: CommandSpec = {
  name: 'restore',
  summary: 'write a restore point back to a sparse raw file, a block device or a thin qcow2 image',
  usage: 'restore <id> <target> [--format raw|qcow2] [--disk NAME] [--force]',
  options: { disk: { type: 'string' }, force: { type: 'boolean' }, format: { type: 'string' } },
  load: async () => (await import('./restore.js')).run,
};

export const mountSpec: CommandSpec = {
  name: 'mount',
  summary: 'serve a restore point over NBD at once (read-only, or writable on an overlay) until interrupted',
  usage:
    'mount <id> (--socket PATH | --port N [--host 127.0.0.1]) [--disk NAME] [--export NAME]\n' +
    '      [--writable [--overlay FILE] [--save-on-exit [--name NAME]] [--keep-overlay]] [--no-trace]\n' +
    '      [--cache SIZE]\n\n' +
    'Read-only by default. --writable sends guest writes to a copy-on-write overlay file (FILE,\n' +
    'kept and reusable; without --overlay a temporary one, discarded on exit); the restore point\n' +
    'never changes. --save-on-exit stores the overlay as a new restore point when stopped\n' +
    '(SIGINT/SIGTERM) and then discards it unless --keep-overlay. Prefetch order: the block\n' +
    'priorities of a VM backup, then what earlier mounts of the same VM read first (each mount\n' +
    'records its reads unless --no-trace), then sequential read-ahead; guest reads go first.\n' +
    'Decoded chunks are cached up to --cache SIZE (default 64M).',
  options: {
    socket: { type: 'string' },
    port: { type: 'string' },
    host: { type: 'string' },
    disk: { type: 'string' },
    export: { type: 'string' },
    writable: { type: 'boolean' },
    overlay: { type: 'string' },
    'save-on-exit': { type: 'boolean' },
    name: { type: 'string' },
    'keep-overlay': { type: 'boolean' },
    'no-trace': { type: 'boolean' },
    cache: { type: 'string' },
  },
  load: async () => (await import('./mount.js')).run,
};

export const filesSpec: CommandSpec = {
  name: 'files',
  summary: 'browse and extract single files from a restore point (ls, cat, restore)',
  usage:
    'files ls <id> [path] [--from-fs] | files cat <id> <path> | files restore <id> <path>... (--to DIR | --tar)\n\n' +
    '`files ls` answers from the file index in the catalog when the point has one (made at\n' +
    'backup time), else, or with --from-fs, by reading the filesystem in the backup.',
  options: { to: { type: 'string' }, tar: { type: 'boolean' }, 'from-fs': { type: 'boolean' } },
  load: async () => (await import('./files.js')).run,
};

export const findSpec: CommandSpec = {
  name: 'find',
  summary: 'find files by name or path glob across every restore point',
  usage: "find <glob> [--name NAME]   (e.g. 'hosts', '*.conf', '/part1/etc/*')",
  options: { name: { type: 'string' } },
  load: async () => (await import('./find.js')).run,
};

export const verifySpec: CommandSpec = {
  name: 'verify',
  summary: 're-read and check every chunk (of the given restore points, or of all)',
  usage: 'verify [<id>...]',
  options: {},
  load: async () => (await import('./verify.js')).run,
};

export const pruneSpec: CommandSpec = {
  name: 'prune',
  summary: 'apply a retention policy: remove restore points it does not keep (run gc to free space)',
  usage:
    'prune --keep-last N --keep-hourly N --keep-daily N --keep-weekly N --keep-monthly N --keep-yearly N [--name NAME] [--dry-run]',
  options: {
    ...Object.fromEntries(PRUNE_RULES.map((r) => [`keep-${r}`, { type: 'string' as const }])),
    name: { type: 'string' },
    'dry-run': { type: 'boolean' },
  },
  load: async () => (await import('./prune.js')).run,
};

export const forgetSpec: CommandSpec = {
  name: 'forget',
  summary: 'remove restore points by id (run gc to free space)',
  usage: 'forget <id>...',
  options: {},
  load: async () => (await import('./forget.js')).run,
};

export const gcSpec: CommandSpec = {
  name: 'gc',
  summary: 'free the space that no restore point uses (takes the exclusive lock)',
  usage: 'gc [--dry-run] [--repack-threshold 0.2]',
  options: { 'dry-run': { type: 'boolean' }, 'repack-threshold': { type: 'string' } },
  load: async () => (await import('./gc.js')).run,
};

export const statsSpec: CommandSpec = {
  name: 'stats',
  summary: 'logical size against stored size, dedup and compression ratios',
  usage: 'stats',
  options: {},
  load: async () => (await import('./stats.js')).run,
};

export const cloneSpec: CommandSpec = {
  name: 'clone',
  summary: 'make a writable qcow2 disk from a restore point without copying, and serve its backing data',
  usage:
    'clone <id> <new-disk.qcow2> [--socket PATH] [--disk NAME] [--cache SIZE]\n\n' +
    'Creates a thin qcow2 whose backing file is a live mount of the point that this command serves\n' +
    'until SIGINT/SIGTERM: QEMU can use the clone at once; keep this running while it is in use.\n' +
    'Writes go to the clone, the restore point never changes. Run it again on the same clone to\n' +
    'serve it again. Decoded chunks are cached up to --cache SIZE (default 64M).',
  options: { socket: { type: 'string' }, disk: { type: 'string' }, cache: { type: 'string' } },
  load: async () => (await import('./clone.js')).run,
};

export const recoverSpec: CommandSpec = {
  name: 'recover',
  summary: 'start a VM from a restore point at once and move its disk to a target while it runs',
  usage:
    'recover <id> --to TARGET [--format raw|qcow2] [--disk NAME] [--force] [--bandwidth RATE]\n' +
    '        [--state-dir DIR] [--accel tcg|kvm] [--reconnect-delay SECONDS] [-- QEMU COMMAND...]\n\n' +
    'The VM starts on a live mount of the point (its writes go to a local overlay), every chunk is\n' +
    'copied to TARGET (raw file, qcow2 image or block device) in the background, then QEMU moves\n' +
    'the running disk onto TARGET with the guest writes on top, and the VM keeps running there.\n' +
    'The VM is the QEMU command after -- (vmvault adds the disk as node vmvault-disk and a\n' +
    'virtio-blk device unless the command has drive=vmvault-disk), or one built from the VM\n' +
    'configuration a VM backup saved. Run the same command again to resume an interrupted recovery.',
  options: {
    to: { type: 'string' },
    format: { type: 'string' },
    disk: { type: 'string' },
    force: { type: 'boolean' },
    bandwidth: { type: 'string' },
    'state-dir': { type: 'string' },
    accel: { type: 'string' },
    'reconnect-delay': { type: 'string' },
  },
  passthrough: true,
  load: async () => (await import('./recover.js')).run,
};

export const revertSpec: CommandSpec = {
  name: 'revert',
  summary: 'roll a disk back to a restore point in place, writing only the chunks that differ',
  usage:
    'revert <id> --to DISK [--disk NAME] [--format raw|qcow2] [--allow-larger]\n\n' +
    'DISK is a raw file, a block device or a qcow2 image; it must not be in use (stop the VM\n' +
    'first). Every chunk is read and compared with the point; only different chunks are written.\n' +
    'Give --format for a disk a guest controls (its first bytes could imitate a qcow2 header).',
  options: {
    to: { type: 'string' },
    disk: { type: 'string' },
    format: { type: 'string' },
    'allow-larger': { type: 'boolean' },
  },
  load: async () => (await import('./revert.js')).run,
};

/** Every command, in the order `vmvault help` lists them. */
export const COMMANDS: readonly CommandSpec[] = [
  initSpec,
  backupSpec,
  listSpec,
  restoreSpec,
  mountSpec,
  filesSpec,
  findSpec,
  verifySpec,
  pruneSpec,
  forgetSpec,
  gcSpec,
  statsSpec,
  cloneSpec,
  recoverSpec,
  revertSpec,
  serveSpec,
];
