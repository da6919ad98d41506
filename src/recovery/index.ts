/**
 * Public surface of `recovery`: instant recovery of a VM from a restore point (`recoverDisk`),
 * its journal and the QEMU node names it uses.
 */
export {
  RECOVERY_EXPORT,
  recoverDisk,
  type RecoverOptions,
  type RecoverProgress,
  type RecoverResult,
  type RecoveryServe,
} from './recover.js';
export {
  buildQemuArgs,
  NODE_BACKUP,
  NODE_DISK,
  NODE_TARGET,
  SWITCH_JOB,
  type QemuArgsInput,
} from './qemu-args.js';
export {
  loadState,
  recoveryPaths,
  type RecoveryPaths,
  type RecoveryPhase,
  type RecoveryState,
} from './state.js';
export { removeRecoveryNodes, switchToTarget, type SwitchTarget } from './switch.js';
