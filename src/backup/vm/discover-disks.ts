/**
 * Finds the disks of a VM: for qemu-system, every guest block device with a medium
 * (`query-block`); for qemu-storage-daemon, which has no guest devices, every top-level block
 * node, i.e. a node no other node uses as a child (`x-debug-query-block-graph`), which covers
 * exported nodes and nodes added for a guest of another process.
 */
import { VmvaultError } from '../../core/index.js';
import type { BlockInfo, BlockNodeInfo, QmpClient } from '../../protocols/qmp/index.js';
import { queryBlock, queryNamedBlockNodes } from '../../protocols/qmp/index.js';
import { isVmvaultBitmap } from './bitmap-names.js';
import type { VmDiskInfo } from './types.js';

/** Prefix of the nodes, jobs and exports vmvault adds (never disks themselves). */
export const OWN_NODE_PREFIX = 'vmvault-';

interface BlockGraph {
  nodes: { id: number; name: string; type: string }[];
  edges: { parent: number; child: number; name: string }[];
}

/** Guest device id from a qdev path (`/machine/peripheral/vda/virtio-backend` → `vda`). */
export function deviceName(qdev: string): string {
  const m = /^\/machine\/peripheral\/([^/]+)/.exec(qdev);
  if (m?.[1]) return m[1];
  return qdev.startsWith('/') ? '' : qdev;
}

function toDisk(name: string, node: BlockNodeInfo): VmDiskInfo {
  return {
    name,
    node: node['node-name'],
    format: node.drv,
    filename: node.image?.filename ?? node.file,
    size: node.image?.['virtual-size'] ?? 0,
    bitmaps: node['dirty-bitmaps'] ?? [],
  };
}

/**
 * Lists the VM's disks. `only` restricts them to the given node or disk names. Read-only media
 * (CD-ROMs) are left out. Throws `E_SOURCE` when nothing is left.
 */
export async function discoverDisks(qmp: QmpClient, only?: readonly string[]): Promise<VmDiskInfo[]> {
  const nodes = await queryNamedBlockNodes(qmp);
  const byName = new Map(nodes.map((n) => [n['node-name'], n]));
  const blocks: BlockInfo[] = await queryBlock(qmp).catch(() => []);
  let disks: VmDiskInfo[] = [];
  if (blocks.length > 0) {
    for (const b of blocks) {
      const inserted = b.inserted;
      if (!inserted || inserted.ro) continue;
      const node = byName.get(inserted['node-name']) ?? inserted;
      disks.push(toDisk(deviceName(b.qdev ?? '') || b.device || inserted['node-name'], node));
    }
  } else {
    const graph = await qmp.execute<BlockGraph>('x-debug-query-block-graph').catch(() => undefined);
    const drivers = new Map<number, string>();
    for (const n of graph?.nodes ?? []) if (n.type === 'block-driver') drivers.set(n.id, n.name);
    const children = new Set<number>();
    for (const e of graph?.edges ?? []) if (drivers.has(e.parent)) children.add(e.child);
    for (const [id, name] of drivers) {
      if (children.has(id) || name.startsWith(OWN_NODE_PREFIX) || name.startsWith('#')) continue;
      const node = byName.get(name);
      if (node && !node.ro) disks.push(toDisk(name, node));
    }
    disks.sort((a, b) => a.name.localeCompare(b.name));
  }
  if (only && only.length > 0) {
    const want = new Set(only);
    const unknown = only.filter((w) => !disks.some((d) => d.name === w || d.node === w));
    if (unknown.length > 0) {
      throw new VmvaultError('E_NOT_FOUND', `the VM has no disk or node named ${unknown.join(', ')}`, {
        hint: `its disks are ${disks.map((d) => `${d.name} (node ${d.node})`).join(', ') || 'none'}`,
      });
    }
    disks = disks.filter((d) => want.has(d.name) || want.has(d.node));
  }
  if (disks.length === 0) {
    throw new VmvaultError('E_SOURCE', 'the VM has no writable disk to back up', {
      hint: 'check query-block / query-named-block-nodes on its QMP socket',
    });
  }
  const seen = new Set<string>();
  for (const d of disks) {
    if (seen.has(d.name)) d.name = d.node;
    seen.add(d.name);
  }
  return disks;
}

/** Names of vmvault bitmaps on `disk` (of any chain). */
export function vmvaultBitmaps(disk: VmDiskInfo): string[] {
  return disk.bitmaps.filter((b) => isVmvaultBitmap(b.name)).map((b) => b.name);
}
