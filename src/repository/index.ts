/** Public surface of `repository`: the on-disk format, its readers and writers. */
export { Repository, type InitOptions, type WriteStats } from './repository.js';
export { CodecPool, type DecodeIntoItem, prestartCodecWorkers } from './codec-pool.js';
export { BlobType, DEFAULT_CHUNK_SIZE, ZERO_DIGEST, PAGE_FANOUT } from './format.js';
export { digestOf, hex, fromHex } from './crypto.js';
export { TreeBuilder, TreeReader, levelsFor } from './tree.js';
export type { RestorePoint, DiskRecord, DiskStats } from './manifest.js';
export { newPointId } from './manifest.js';
export { applyRetention, isEmptyPolicy, type RetentionPolicy, type RetentionDecision } from './retention.js';
export type { Lock, LockKind } from './lock.js';
export { readPackTrailer, packObjectName, packIdFromName, type PackEntry } from './pack.js';
export { writeSegment, decodeSegment, type PackRecord } from './location-index.js';
export { verifyRepository, type VerifyReport, type DamagedPoint, type BlobProblem } from './verify.js';
export { collectGarbage, type GcOptions, type GcReport } from './gc.js';
