/**
 * The `vmvault` command: parses global options, dispatches to a sub-command and turns errors
 * into a one-line message on stderr and a non-zero exit code.
 */
import { parseArgs } from 'node:util';
import { VmvaultError, isVmvaultError } from '../core/errors.js';
import { prefetchKey } from '../repository/key-prefetch.js';
import type { CommandSpec } from './command.js';
import { COMMANDS } from './commands/specs.js';
import { Context, type GlobalOptions } from './context.js';
import { VERSION } from './version.js';

const GLOBAL_OPTIONS = {
  repo: { type: 'string' },
  'password-file': { type: 'string' },
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  'no-progress': { type: 'boolean' },
  'lock-wait': { type: 'string' },
  catalog: { type: 'string' },
  server: { type: 'string' },
  'token-file': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Exit codes. */
export const EXIT = { ok: 0, failure: 1, usage: 2, damaged: 3, locked: 4 } as const;

function help(): string {
  const lines = [
    'vmvault: backup and instant recovery for virtual machine disks',
    '',
    'usage: vmvault <command> [options]',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(9)} ${c.summary}`),
    '',
    'global options:',
    '  --repo DIR            repository (or VMVAULT_REPO)',
    '  --password-file FILE  passphrase of an encrypted repository (or VMVAULT_PASSWORD)',
    '  --json                print JSON on stdout and nothing else',
    '  -q, --quiet           print nothing but errors',
    '  --no-progress         no progress line on the terminal',
    '  --lock-wait SECONDS   how long to wait for a busy repository (default 3600)',
    '  --catalog FILE        catalog database (default ~/.cache/vmvault/<repo-id>/catalog.db)',
    "  --server URL          run backup, restore, verify, prune, gc, list, stats on a 'vmvault serve'",
    '  --token-file FILE     API token of that server (or VMVAULT_TOKEN)',
    '',
    "'vmvault <command> --help' shows a command's usage.",
  ];
  return lines.join('\n');
}

function commandHelp(c: CommandSpec): string {
  return `usage: vmvault ${c.usage}\n\n${c.summary}`;
}

/** Runs the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  // A reader that stops early (`vmvault files cat … | head`) is not a failure: stop quietly, with
  // the status a process killed by SIGPIPE has, as other command-line tools do.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT_BROKEN_PIPE);
    throw err;
  });
  const name = argv[0];
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const c = COMMANDS.find((x) => x.name === argv[1]);
    process.stdout.write(`${c ? commandHelp(c) : help()}\n`);
    return EXIT.ok;
  }
  if (name === '--version' || name === 'version') {
    process.stdout.write(`vmvault ${VERSION}\n`);
    return EXIT.ok;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  // Everything after a bare `--` is handed to the command untouched (e.g. a QEMU command line).
  const dashes = argv.indexOf('--');
  const own = dashes >= 0 ? argv.slice(0, dashes) : argv;
  const passthrough = dashes >= 0 ? argv.slice(dashes + 1) : [];
  let json = own.includes('--json');
  try {
    if (!cmd) throw new VmvaultError('E_USAGE', `unknown command '${name}'`, { hint: "see 'vmvault help'" });
    let parsed: ReturnType<typeof parseArgs>;
    try {
      parsed = parseArgs({
        args: own.slice(1),
        options: { ...GLOBAL_OPTIONS, ...cmd.options },
        allowPositionals: true,
        strict: true,
      });
    } catch (err) {
      throw new VmvaultError('E_USAGE', `${(err as Error).message.split('\n')[0]}`, {
        hint: `usage: vmvault ${cmd.usage}`,
      });
    }
    const values = parsed.values as Record<string, string | boolean | string[] | undefined>;
    if (dashes >= 0 && !cmd.passthrough) {
      throw new VmvaultError('E_USAGE', `${cmd.name} takes no arguments after --`, {
        hint: `usage: vmvault ${cmd.usage}`,
      });
    }
    if (values.help) {
      process.stdout.write(`${commandHelp(cmd)}\n`);
      return EXIT.ok;
    }
    json = values.json === true;
    const g: GlobalOptions = {
      ...(values.repo !== undefined ? { repo: values.repo as string } : {}),
      ...(values['password-file'] !== undefined
        ? { 'password-file': values['password-file'] as string }
        : {}),
      json,
      quiet: values.quiet === true,
      progress: values['no-progress'] !== true,
      ...(values['lock-wait'] !== undefined ? { 'lock-wait': values['lock-wait'] as string } : {}),
      ...(values.catalog !== undefined ? { catalog: values.catalog as string } : {}),
    };
    // --server (or VMVAULT_SERVER, unless --repo names a repository here) sends the command
    // to a running `vmvault serve`.
    const server =
      (values.server as string | undefined) ??
      (values.repo === undefined ? process.env.VMVAULT_SERVER : undefined);
    if (server && cmd.name !== 'serve') {
      const [{ REMOTE_COMMANDS, runRemote }, { apiToken }] = await Promise.all([
        import('./remote.js'),
        import('./token.js'),
      ]);
      if (values.server !== undefined || REMOTE_COMMANDS.has(cmd.name)) {
        const token = apiToken(values['token-file'] as string | undefined);
        return await runRemote(server, token, cmd.name, parsed.positionals, values);
      }
    }
    const ctx = new Context(g);
    if (cmd.name !== 'init') startKeyDerivation(ctx);
    // Only now is the command's module loaded (with whatever it imports).
    const run = await cmd.load();
    return await run(ctx, parsed.positionals, values, passthrough);
  } catch (err) {
    return reportError(err, json);
  }
}

/**
 * Starts deriving an encrypted repository's key while the command's modules load (see
 * `prefetchKey`); errors (no repository given, unreadable password file) are left for the
 * command to report when it opens the repository.
 */
function startKeyDerivation(ctx: Context): void {
  try {
    const passphrase = ctx.passphrase();
    if (passphrase !== null) prefetchKey(ctx.repoPath(), passphrase);
  } catch {
    // reported by the command itself
  }
}

/** Exit status after the reader of stdout went away (128 + SIGPIPE). */
const EXIT_BROKEN_PIPE = 141;

function reportError(err: unknown, json: boolean): number {
  if (isVmvaultError(err)) {
    process.stderr.write(`vmvault: ${err.oneLine()}\n`);
    if (json)
      process.stdout.write(
        `${JSON.stringify({ error: { code: err.code, message: err.message, hint: err.hint ?? null, ...err.details } })}\n`,
      );
    if (err.code === 'E_USAGE') return EXIT.usage;
    if (err.code === 'E_LOCKED') return EXIT.locked;
    return EXIT.failure;
  }
  const e = err as NodeJS.ErrnoException;
  const msg = e?.code ? `${e.message} (${e.code})` : String(e?.stack ?? err);
  process.stderr.write(
    `vmvault: unexpected error: ${msg.split('\n')[0]}; please report this with the command you ran\n`,
  );
  if (process.env.VMVAULT_DEBUG) process.stderr.write(`${e?.stack ?? ''}\n`);
  return EXIT.failure;
}
