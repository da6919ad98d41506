/** Small HTTP helpers of the REST API: bodies, replies and the error → status mapping. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type ErrorCode, VmvaultError, isVmvaultError } from '../core/index.js';

/** Largest request body accepted (the API takes small JSON documents only). */
export const MAX_BODY_BYTES = 1 << 20;

/** HTTP status of a failed request, by error code. */
const STATUS: Partial<Record<ErrorCode, number>> = {
  E_USAGE: 400,
  E_UNAUTHORIZED: 401,
  E_NOT_FOUND: 404,
  E_AMBIGUOUS: 409,
  E_LOCKED: 409,
  E_CLOSED: 503,
  E_INTERNAL: 500,
};

/** The status for `err`: 4xx for what the caller can fix, 422 for a job that failed, else 500. */
export function statusOf(err: unknown): number {
  if (!isVmvaultError(err)) return 500;
  return STATUS[err.code] ?? 422;
}

/** The JSON error document, the same shape `--json` prints on failure. */
export function errorBody(err: unknown): { error: Record<string, unknown> } {
  if (isVmvaultError(err)) {
    return { error: { code: err.code, message: err.message, hint: err.hint ?? null, ...err.details } };
  }
  return {
    error: { code: 'E_INTERNAL', message: `unexpected error: ${(err as Error)?.message ?? err}`, hint: null },
  };
}

/** Reads a JSON request body (an object); E_USAGE when it is too large or not a JSON object. */
export async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw new VmvaultError('E_USAGE', `request body is larger than ${MAX_BODY_BYTES} bytes`);
    }
    parts.push(chunk);
  }
  if (size === 0) return {};
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(parts).toString('utf8'));
  } catch (err) {
    throw new VmvaultError('E_USAGE', `request body is not JSON: ${(err as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new VmvaultError('E_USAGE', 'request body must be a JSON object');
  }
  return value as Record<string, unknown>;
}

/** Sends `value` as JSON with `status`. */
export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = Buffer.from(`${JSON.stringify(value, null, 2)}\n`);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length });
  res.end(body);
}

/** Sends `text` as plain text with `status`. */
export function sendText(res: ServerResponse, status: number, text: string): void {
  const body = Buffer.from(text.endsWith('\n') || text === '' ? text : `${text}\n`);
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': body.length });
  res.end(body);
}

/** True when the client asked for plain text rather than JSON. */
export function wantsText(req: IncomingMessage): boolean {
  const accept = req.headers.accept ?? '';
  return /\btext\/plain\b/.test(accept) && !/\bapplication\/json\b/.test(accept);
}
