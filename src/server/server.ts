/**
 * `vmvault serve`: the REST API over HTTP, on a unix socket or a TCP port, in front of a
 * repository kept open across jobs ({@link ResidentRepository}). The routes are in routes.ts and
 * the API is written down in docs/server.md.
 *
 * Safety: without a token the server listens on loopback or a unix socket only (the socket file
 * is made 0600); a token (`Authorization: Bearer …`) is needed for any other address. Request
 * bodies are capped at 1 MiB, idle connections are closed, and on close the server stops
 * accepting, lets running jobs finish, then closes the repository.
 */
import { timingSafeEqual } from 'node:crypto';
import { chmodSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { removeStaleSocket, VmvaultError } from '../core/index.js';
import { errorBody, readJson, sendJson, sendText, statusOf, wantsText } from './http-util.js';
import { JobTable } from './jobs.js';
import { MountTable } from './mounts.js';
import { type Schedule, Scheduler } from './schedule.js';
import { ServerContext } from './server-context.js';
import { ResidentRepository, type ResidentOptions } from './resident.js';
import { allowedMethods, preloadCommands, route, type RouteContext } from './routes.js';

/** Where the server listens. */
export type ServerListen = { socketPath: string } | { host: string; port: number };

/** Options of {@link VmvaultServer.start}. */
export interface ServerOptions extends ResidentOptions {
  listen: ServerListen;
  /** Bearer token every request must carry, or null for none (loopback and unix sockets only). */
  token: string | null;
  /** Catalog database path (default: the one the CLI uses). */
  catalog?: string;
  /** Version reported by the health route. */
  version: string;
  /** One line per request and per problem (default: nothing). */
  log?: (line: string) => void;
  /** Jobs to start by itself (`serve --schedule FILE`, see schedule.ts). */
  schedules?: readonly Schedule[];
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/** The vmvault REST API server. */
export class VmvaultServer {
  private readonly inflight = new Set<Promise<void>>();

  private constructor(
    private readonly http: Server,
    private readonly resident: ResidentRepository,
    private readonly mounts: MountTable,
    private readonly scheduler: Scheduler,
    /** Where clients reach it: `http://HOST:PORT` or `unix:/path`. */
    readonly url: string,
  ) {}

  /**
   * Opens the repository (so a wrong passphrase or path fails here, not at the first job),
   * starts listening and resolves once it accepts requests.
   */
  static async start(opts: ServerOptions): Promise<VmvaultServer> {
    const { listen } = opts;
    if ('host' in listen && !isLoopback(listen.host) && opts.token === null) {
      throw new VmvaultError('E_USAGE', `listening on ${listen.host} needs a token`, {
        hint: 'pass --token-file FILE (clients send it as "Authorization: Bearer TOKEN"), or listen on 127.0.0.1 or a unix socket',
      });
    }
    const resident = new ResidentRepository(opts);
    await resident.repository();
    const catalog = opts.catalog !== undefined ? { catalog: opts.catalog } : {};
    const paths = new ServerContext(resident, catalog);
    const mounts = new MountTable(resident, (repo) => paths.traceStore(repo));
    const rc: RouteContext = {
      resident,
      jobs: new JobTable(),
      mounts,
      version: opts.version,
      ...(opts.catalog !== undefined ? { catalog: opts.catalog } : {}),
    };
    const log = opts.log ?? (() => {});
    const scheduler = new Scheduler(rc, opts.schedules ?? [], log);
    rc.schedules = () => scheduler.list();
    const token = opts.token === null ? null : Buffer.from(`Bearer ${opts.token}`);
    let server: VmvaultServer | undefined;
    const http = createServer((req, res) => {
      const p = handle(req, res, rc, token, log);
      server?.inflight.add(p);
      void p.finally(() => server?.inflight.delete(p));
    });
    // A client that opens a connection and says nothing is dropped.
    http.headersTimeout = 10_000;
    // Receiving a request (headers and body) may take 30 s; the job it starts is not counted.
    http.requestTimeout = 30_000;
    http.keepAliveTimeout = 5_000;
    try {
      if ('socketPath' in listen) await removeStaleSocket(listen.socketPath);
      await new Promise<void>((resolve, reject) => {
        http.once('error', reject);
        const done = () => {
          http.off('error', reject);
          resolve();
        };
        if ('socketPath' in listen) http.listen(listen.socketPath, done);
        else http.listen(listen.port, listen.host, done);
      });
    } catch (err) {
      await resident.close();
      const where = 'socketPath' in listen ? listen.socketPath : `${listen.host}:${listen.port}`;
      throw new VmvaultError('E_IO', `cannot listen on ${where}: ${(err as Error).message}`, { cause: err });
    }
    let url: string;
    if ('socketPath' in listen) {
      chmodSync(listen.socketPath, 0o600);
      url = `unix:${listen.socketPath}`;
    } else {
      const a = http.address();
      const port = typeof a === 'object' && a ? a.port : listen.port;
      url = `http://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${port}`;
    }
    server = new VmvaultServer(http, resident, mounts, scheduler, url);
    scheduler.start();
    // While the server waits for its first request.
    preloadCommands().catch(() => undefined);
    return server;
  }

  /**
   * Stops the schedules and accepting requests, waits for the jobs under way, stops the live
   * mounts, closes the repository.
   */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.http.closeIdleConnections();
    await this.scheduler.stop();
    await Promise.allSettled([...this.inflight]);
    await this.mounts.close();
    await this.resident.close();
    this.http.closeAllConnections();
    await closed;
  }
}

/** Answers one request. Never throws: every failure becomes an error document. */
async function handle(
  req: IncomingMessage,
  res: ServerResponse,
  rc: RouteContext,
  token: Buffer | null,
  log: (line: string) => void,
): Promise<void> {
  const t0 = Date.now();
  const method = req.method ?? 'GET';
  let path = '/';
  let status = 500;
  try {
    const u = new URL(req.url ?? '/', 'http://vmvault');
    path = u.pathname;
    if (token !== null) {
      const got = Buffer.from(req.headers.authorization ?? '');
      if (got.length !== token.length || !timingSafeEqual(got, token)) {
        throw new VmvaultError('E_UNAUTHORIZED', 'missing or wrong API token', {
          hint: 'send "Authorization: Bearer TOKEN" with the token the server was started with',
        });
      }
    }
    const handler = route(method, path);
    if (!handler) {
      const allow = allowedMethods(path);
      status = allow.length === 0 ? 404 : 405;
      if (allow.length > 0) res.setHeader('allow', allow.join(', '));
      sendJson(res, status, {
        error:
          allow.length === 0
            ? { code: 'E_NOT_FOUND', message: `no such API resource: ${path}`, hint: 'see docs/server.md' }
            : {
                code: 'E_USAGE',
                message: `${path} does not take ${method}`,
                hint: `use ${allow.join(' or ')}`,
              },
      });
      return;
    }
    const reply = await handler({ method, path, query: u.searchParams, body: () => readJson(req) }, rc);
    status = reply.status;
    if (wantsText(req) && reply.text !== undefined) sendText(res, status, reply.text);
    else sendJson(res, status, reply.value);
  } catch (err) {
    status = statusOf(err);
    if (status >= 500) log(`error in ${method} ${path}: ${(err as Error)?.stack ?? err}`);
    // Errors are JSON whatever was asked for, so clients always get the code.
    if (!res.headersSent) sendJson(res, status, errorBody(err));
    else res.destroy();
  } finally {
    log(`${method} ${path} ${status} ${Date.now() - t0} ms`);
  }
}
