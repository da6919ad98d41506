/** A client of the REST API (what `vmvault … --server URL` uses). */
import { request } from 'node:http';
import { VmvaultError, type ErrorCode } from '../core/index.js';

/** Where a server is: `http://HOST:PORT`, `unix:/path/to.sock` or a bare `/path/to.sock`. */
export type ServerAddress = { socketPath: string } | { host: string; port: number };

/** Parses a server URL; E_USAGE when it is none of the accepted forms. */
export function parseServerUrl(url: string): ServerAddress {
  if (url.startsWith('unix:')) return { socketPath: url.slice('unix:'.length) };
  if (url.startsWith('/')) return { socketPath: url };
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    u = new URL('invalid:');
  }
  if (u.protocol !== 'http:' || !u.hostname) {
    throw new VmvaultError('E_USAGE', `not a vmvault server address: ${url}`, {
      hint: 'give http://HOST:PORT or unix:/path/to/socket',
    });
  }
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 80) };
}

/** Options of {@link apiRequest}. */
export interface ApiRequestOptions {
  method: 'GET' | 'POST';
  path: string;
  body?: unknown;
  token?: string | null;
  /** Ask for the text form of the answer instead of JSON. */
  text?: boolean;
}

/**
 * Sends one request; resolves to the parsed JSON (or the text) of a 2xx answer. An error answer
 * becomes the server's VmvaultError (same code, message and hint); a server that cannot be
 * reached is E_SERVER.
 */
export function apiRequest(server: string, opts: ApiRequestOptions): Promise<unknown> {
  const addr = parseServerUrl(server);
  const body = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
  const headers: Record<string, string> = { accept: opts.text ? 'text/plain' : 'application/json' };
  if (body) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(body.length);
  }
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  return new Promise((resolve, reject) => {
    const req = request({ ...addr, method: opts.method, path: opts.path, headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const raw = Buffer.concat(parts).toString('utf8');
        const status = res.statusCode ?? 0;
        const isJson = (res.headers['content-type'] ?? '').startsWith('application/json');
        let doc: unknown = raw;
        if (isJson) {
          try {
            doc = JSON.parse(raw);
          } catch {
            return reject(
              new VmvaultError('E_SERVER', `the server at ${server} sent bad JSON (status ${status})`),
            );
          }
        }
        if (status >= 200 && status < 300) return resolve(doc);
        reject(answerError(server, status, doc));
      });
    });
    req.on('error', (err) => {
      reject(
        new VmvaultError('E_SERVER', `cannot reach the vmvault server at ${server}: ${err.message}`, {
          hint: "is 'vmvault serve' running there?",
          cause: err,
        }),
      );
    });
    req.end(body);
  });
}

/** The error an error answer stands for. */
function answerError(server: string, status: number, doc: unknown): VmvaultError {
  const e = (doc as { error?: Record<string, unknown> } | null)?.error;
  if (e && typeof e.code === 'string' && typeof e.message === 'string') {
    const { code, message, hint, ...details } = e;
    return new VmvaultError(code as ErrorCode, message, {
      ...(typeof hint === 'string' ? { hint } : {}),
      details,
    });
  }
  const text = typeof doc === 'string' ? doc.trim().replace(/^vmvault: /, '') : `status ${status}`;
  return new VmvaultError('E_SERVER', `the server at ${server} answered ${status}: ${text}`);
}
