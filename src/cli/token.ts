/** The REST API token (`--token-file FILE` or `VMVAULT_TOKEN`), for `vmvault serve` and its clients. */
import { readFileSync } from 'node:fs';
import { VmvaultError } from '../core/errors.js';

/** The API token from --token-file or VMVAULT_TOKEN, or null. */
export function apiToken(file: string | undefined): string | null {
  if (file !== undefined) {
    let t: string;
    try {
      t = readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new VmvaultError('E_USAGE', `cannot read token file ${file}: ${(err as Error).message}`);
    }
    if (t === '') throw new VmvaultError('E_USAGE', `token file ${file} is empty`);
    return t;
  }
  return process.env.VMVAULT_TOKEN || null;
}
