/** `vmvault serve`: the REST API in front of a repository kept open (docs/server.md). */
import { resolve } from 'node:path';
import { VmvaultError } from '../../core/index.js';
import { loadSchedules, VmvaultServer } from '../../server/index.js';
import type { CommandRun } from '../command.js';
import { untilStopSignal } from '../signals.js';
import { apiToken } from '../token.js';
import { VERSION } from '../version.js';

/** Runs `vmvault serve` (its options and help: `serveSpec` in specs.ts). */
export const run: CommandRun = async (ctx, args, v) => {
  if (args.length > 0) throw new VmvaultError('E_USAGE', 'serve takes no arguments');
  const socketPath = v.socket as string | undefined;
  const portText = v.port as string | undefined;
  if (socketPath !== undefined && portText !== undefined) {
    throw new VmvaultError('E_USAGE', 'give --socket PATH or --port N, not both');
  }
  const port = portText === undefined ? 8420 : Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new VmvaultError('E_USAGE', `--port takes a TCP port number, not ${portText}`);
  }
  const say = (m: string): void => {
    if (!ctx.opts.quiet) process.stderr.write(`vmvault: ${m}\n`);
  };
  const scheduleFile = v.schedule as string | undefined;
  const schedules = scheduleFile === undefined ? [] : loadSchedules(resolve(scheduleFile));
  const stop = untilStopSignal();
  const server = await VmvaultServer.start({
    path: resolve(ctx.repoPath()),
    passphrase: ctx.passphrase(),
    lockWaitMs: ctx.lockWaitMs(),
    onLockWait: (holder, command) => say(`${command} waits for the repository lock held by ${holder}`),
    listen:
      socketPath !== undefined
        ? { socketPath }
        : { host: (v.host as string | undefined) ?? '127.0.0.1', port },
    token: apiToken(v['token-file'] as string | undefined),
    ...(ctx.opts.catalog !== undefined ? { catalog: ctx.opts.catalog } : {}),
    version: VERSION,
    log: say,
    schedules,
  });
  // First line of stdout: where to reach the API (or {"url"} with --json), so scripts can wait.
  process.stdout.write(ctx.json ? `${JSON.stringify({ url: server.url })}\n` : `${server.url}\n`);
  say(`serving the repository ${ctx.repoPath()} at ${server.url}; Ctrl-C to stop`);
  for (const s of schedules) {
    say(
      `schedule ${s.id}: ${s.command}${s.prune ? ' and prune' : ''} every ${s.every}, first in ${Math.round(s.firstMs / 1000)} s`,
    );
  }
  await stop;
  say('stopping: waiting for running jobs');
  // A second signal stops at once; a backup cut short leaves a valid repository.
  const force = () => process.exit(130);
  process.once('SIGINT', force);
  process.once('SIGTERM', force);
  await server.close();
  process.off('SIGINT', force);
  process.off('SIGTERM', force);
  return 0;
};
