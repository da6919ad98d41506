/** Unix socket files of servers vmvault runs (NBD exports, the REST API). */
import { existsSync, unlinkSync } from 'node:fs';
import { createConnection } from 'node:net';
import { VmvaultError } from './errors.js';

/**
 * Removes a unix socket file left by a dead server, so a new server can listen there; refuses
 * (E_IO) when a live server answers on it.
 */
export async function removeStaleSocket(path: string): Promise<void> {
  if (!existsSync(path)) return;
  const alive = await new Promise<boolean>((resolve) => {
    const probe = createConnection({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new VmvaultError('E_IO', `another server is listening on ${path}`);
  try {
    unlinkSync(path);
  } catch {
    // listen() reports the real problem.
  }
}
