/** `vmvault backup qmp:<socket>`: back up every disk of a running QEMU VM (issue #4). */
import { VmvaultError } from '../../core/index.js';
import type { Context } from '../context.js';

/** Runs a VM backup for `spec` ("qmp:/path/to/qmp.sock"); returns the exit code. */
export async function backupVmCommand(
  _ctx: Context,
  spec: string,
  _values: Record<string, string | boolean | string[] | undefined>,
): Promise<number> {
  throw new VmvaultError('E_UNSUPPORTED', `backing up running VMs (${spec}) is not implemented yet`);
}
