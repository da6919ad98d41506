/** Public surface of `backup`: the pipeline that turns disks into restore points. */
export { backupDisk, type BackupDiskOptions, type BackupProgress } from './backup-disk.js';
export { latestPoint, commitPoint, runBackup, type RunBackupOptions, type BackupResult } from './backup.js';
export * from './vm/index.js';
