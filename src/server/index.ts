/**
 * Public surface of `server`: `vmvault serve`'s REST API (docs/server.md), the repository it
 * keeps open across jobs, and the client the CLI uses with `--server`.
 */
export { VmvaultServer, type ServerOptions, type ServerListen } from './server.js';
export { ResidentRepository, type ResidentOptions } from './resident.js';
export { apiRequest, parseServerUrl, type ApiRequestOptions, type ServerAddress } from './client.js';
export { backupArgs } from './routes.js';
export { JobTable, type JobView, type JobState } from './jobs.js';
export {
  loadSchedules,
  parseSchedules,
  parseInterval,
  Scheduler,
  type Schedule,
  type ScheduleView,
} from './schedule.js';
export { MountTable, type MountView, type MountRequest } from './mounts.js';
