/** Types shared by the partition-table readers. */

/** One partition of a disk. */
export interface Partition {
  /** Partition number as Linux counts it: GPT entry index + 1; MBR 1-4, logical partitions from 5. */
  index: number;
  /** Byte offset on the disk. */
  start: number;
  /** Size in bytes. */
  size: number;
  /** MBR type byte as `0x83`, or GPT partition type GUID (upper case). */
  type: string;
  /** GPT partition name (UTF-16 in the entry). */
  name?: string;
  /** GPT unique partition GUID. */
  uuid?: string;
  /** MBR: active flag (0x80). */
  bootable?: boolean;
  /** MBR: true for a logical partition inside the extended partition. */
  logical?: boolean;
}

/** A parsed partition table. */
export interface PartitionTable {
  scheme: 'mbr' | 'gpt';
  sectorSize: number;
  /** GPT disk GUID or MBR disk signature (`0x1234abcd`). */
  diskId?: string;
  /** GPT: which header was used. */
  header?: 'primary' | 'backup';
  /** Data partitions in partition-number order (the MBR extended container itself is not listed). */
  partitions: Partition[];
}
