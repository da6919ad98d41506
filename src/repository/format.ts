/**
 * Every magic number, header size and fixed parameter of the repository format, in one place.
 * docs/format.md describes the same layout in prose; keep the two in step.
 */

/**
 * Version of the repository layout written into the `config` of new repositories. Version 2
 * adds self-checked blobs ({@link Codec.checked}); version 3 writes LZ4 chunks as
 * {@link Codec.checkedLz4x} (the content checked by XXH64 instead of the frame's XXH32);
 * everything else is as in version 1.
 */
export const REPO_FORMAT_VERSION = 3;
/** Layout versions this code reads (and appends to, each in its own encoding). */
export const READABLE_FORMAT_VERSIONS: readonly number[] = [1, 2, 3];
/** The `format` field of `config`. */
export const REPO_FORMAT_NAME = 'vmvault-repository';

/** Pack file: 8-byte magic at offset 0. */
export const PACK_MAGIC = Buffer.from('VVPACK\x00\x01', 'latin1');
/** Pack file: 8-byte magic at the very end, after the u32 trailer length. */
export const PACK_END_MAGIC = Buffer.from('VVPKEND\x01', 'latin1');
/** Footer = u32 LE trailer length + end magic. */
export const PACK_FOOTER_SIZE = 12;
/** One trailer entry: u8 type, 32-byte digest, u32 offset, u32 stored length, u32 raw length. */
export const PACK_ENTRY_SIZE = 1 + 32 + 4 + 4 + 4;

/** Location-index segment: 8-byte magic, then the (sealed) body. */
export const INDEX_MAGIC = Buffer.from('VVINDEX\x01', 'latin1');
/** Restore-point manifest: 8-byte magic, then the (sealed) JSON body. */
export const MANIFEST_MAGIC = Buffer.from('VVSNAP\x00\x01', 'latin1');
/** Index page (restore-point tree node) magic, first 4 bytes of the page. */
export const PAGE_MAGIC = Buffer.from('VVPG', 'latin1');
export const PAGE_VERSION = 1;
/** Page header: magic(4) version(1) level(1) reserved(2) count(4). */
export const PAGE_HEADER_SIZE = 12;
/** Entries per index page (restore-point tree fan-out). */
export const PAGE_FANOUT = 512;

/** Digest length (SHA-256 or HMAC-SHA-256). */
export const DIGEST_SIZE = 32;
/** The all-zero digest stands for a chunk (or page) that reads as zeros and is not stored. */
export const ZERO_DIGEST = Buffer.alloc(DIGEST_SIZE);

/** Blob types recorded in pack trailers and location indexes. */
export const BlobType = { data: 0, page: 1 } as const;
export type BlobType = (typeof BlobType)[keyof typeof BlobType];

/**
 * Codec byte that starts every (decrypted) blob payload. `checked` (format version 2): the
 * chunk's digest, then one zstd frame that carries its content size and content checksum, so
 * the blob checks itself without recomputing the digest (see docs/format.md). `checkedLz4` is the
 * same with one LZ4 frame (content size and XXH32 content checksum) instead. `checkedLz4x`
 * (version 3): the digest, one LZ4 frame with the content size and no content checksum, then the
 * content's XXH64 (u64 LE), which checks at about 2.5 times the speed of the frame's XXH32.
 */
export const Codec = { raw: 0, zstd: 1, checked: 2, checkedLz4: 3, checkedLz4x: 4 } as const;
/** Bytes of the XXH64 that ends a {@link Codec.checkedLz4x} blob. */
export const XXH64_SIZE = 8;

/** LZ4 frame magic number (little-endian u32 at the start of a frame). */
export const LZ4_MAGIC = 0x184d2204;
/** FLG bits of an LZ4 frame descriptor: version 01, content size, content checksum. */
export const LZ4_FLG_VERSION_MASK = 0xc0;
export const LZ4_FLG_VERSION = 0x40;
export const LZ4_FLG_CONTENT_SIZE = 0x08;
export const LZ4_FLG_CONTENT_CHECKSUM = 0x04;

/** zstd frame magic number (little-endian u32 at the start of a frame). */
export const ZSTD_MAGIC = 0xfd2fb528;
/** Largest zstd block (the block-size limit of a frame). */
export const ZSTD_MAX_BLOCK = 128 * 1024;

/** AES-256-GCM nonce and tag sizes. */
export const NONCE_SIZE = 12;
export const TAG_SIZE = 16;

/** Default chunk size: the 64 KiB granularity of QEMU dirty bitmaps (see docs/design.md). */
export const DEFAULT_CHUNK_SIZE = 64 * 1024;
/** Target size of a pack file. */
export const DEFAULT_PACK_SIZE = 16 * 1024 * 1024;
/** Default zstd level: 1 keeps a full backup CPU-light (level 3 saves ~5% more space for ~40% more CPU; see docs/benchmarks.md). */
export const DEFAULT_COMPRESSION_LEVEL = 1;
/** Keep a compressed chunk only when it saves at least this fraction. */
export const COMPRESSION_MIN_SAVING = 1 / 16;

/** scrypt parameters for new repositories (64 MiB, ~0.2 s here). */
export const SCRYPT_DEFAULTS = { N: 1 << 16, r: 8, p: 1 } as const;

/** Directory names inside a repository. */
export const Dirs = {
  packs: 'packs',
  index: 'index',
  snapshots: 'snapshots',
  locks: 'locks',
} as const;
