/**
 * Every number the NBD protocol puts on the wire, named after the specification
 * (NetworkBlockDevice/nbd `doc/proto.md`, QEMU `docs/interop/nbd.rst`). All fields are big-endian.
 */

// ---------------------------------------------------------------------------------------------
// Magic numbers

/** `NBDMAGIC`: first 8 bytes the server sends (also known as INIT_PASSWD). */
export const NBD_INIT_MAGIC = 0x4e42444d41474943n;
/** `IHAVEOPT`: second server magic (newstyle) and the prefix of every option request. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** Oldstyle negotiation magic (we never speak oldstyle; used only to recognise it). */
export const NBD_CLISERV_MAGIC = 0x00420281861253n;
/** Prefix of every option reply. */
export const NBD_REP_MAGIC = 0x0003e889045565a9n;
/** Prefix of every transmission request. */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** Prefix of a simple reply. */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** Prefix of a structured reply chunk. */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// ---------------------------------------------------------------------------------------------
// Handshake flags (server, 16 bits) and client flags (32 bits)

export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// ---------------------------------------------------------------------------------------------
// Transmission flags (16 bits)

export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// ---------------------------------------------------------------------------------------------
// Options (handshake phase)

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// Option reply types
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
/** Bit 31 marks an error reply. */
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = 0x80000001;
export const NBD_REP_ERR_POLICY = 0x80000002;
export const NBD_REP_ERR_INVALID = 0x80000003;
export const NBD_REP_ERR_PLATFORM = 0x80000004;
export const NBD_REP_ERR_TLS_REQD = 0x80000005;
export const NBD_REP_ERR_UNKNOWN = 0x80000006;
export const NBD_REP_ERR_SHUTDOWN = 0x80000007;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
export const NBD_REP_ERR_TOO_BIG = 0x80000009;

// NBD_REP_INFO information types
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// ---------------------------------------------------------------------------------------------
// Commands (transmission phase)

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

// Command flags
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

// Structured reply flags and chunk types
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
/** Bit 15 marks an error chunk. */
export const NBD_REPLY_TYPE_ERROR_BIT = 1 << 15;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// base:allocation status flags
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;
// qemu:dirty-bitmap:NAME status flag
export const NBD_STATE_DIRTY = 1 << 0;

/** The one metadata context the specification defines. */
export const BASE_ALLOCATION = 'base:allocation';
/** Prefix of QEMU's dirty bitmap contexts: `qemu:dirty-bitmap:NAME`. */
export const QEMU_DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';

// ---------------------------------------------------------------------------------------------
// Error values (the only ones the specification allows on the wire)

export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** Wire error value → errno name. */
export const NBD_ERRNO_NAMES: Readonly<Record<number, string>> = {
  [NBD_EPERM]: 'EPERM',
  [NBD_EIO]: 'EIO',
  [NBD_ENOMEM]: 'ENOMEM',
  [NBD_EINVAL]: 'EINVAL',
  [NBD_ENOSPC]: 'ENOSPC',
  [NBD_EOVERFLOW]: 'EOVERFLOW',
  [NBD_ENOTSUP]: 'ENOTSUP',
  [NBD_ESHUTDOWN]: 'ESHUTDOWN',
};

// ---------------------------------------------------------------------------------------------
// Sizes and limits

/** Default TCP port (IANA). */
export const NBD_DEFAULT_PORT = 10809;
/** Size of a transmission request header. */
export const NBD_REQUEST_SIZE = 28;
/** Size of a simple reply header. */
export const NBD_SIMPLE_REPLY_SIZE = 16;
/** Size of a structured reply chunk header. */
export const NBD_STRUCTURED_REPLY_SIZE = 20;
/** Size of an option request header (magic, option, length). */
export const NBD_OPTION_HEADER_SIZE = 16;
/** Size of an option reply header (magic, option, type, length). */
export const NBD_OPTION_REPLY_HEADER_SIZE = 20;
/** Longest string the protocol allows (export names, messages, context names). */
export const NBD_MAX_STRING = 4096;
/** 32 MiB: the largest READ/WRITE every implementation accepts (and our server's maximum). */
export const NBD_MAX_PAYLOAD = 32 * 1024 * 1024;
/** Default block size constraints when the server advertises none. */
export const NBD_DEFAULT_MIN_BLOCK = 1;
export const NBD_DEFAULT_PREFERRED_BLOCK = 4096;

/** Option number → name, for messages and docs. */
export const NBD_OPT_NAMES: Readonly<Record<number, string>> = {
  1: 'EXPORT_NAME',
  2: 'ABORT',
  3: 'LIST',
  4: 'PEEK_EXPORT',
  5: 'STARTTLS',
  6: 'INFO',
  7: 'GO',
  8: 'STRUCTURED_REPLY',
  9: 'LIST_META_CONTEXT',
  10: 'SET_META_CONTEXT',
  11: 'EXTENDED_HEADERS',
};

/** Command number → name, for messages and docs. */
export const NBD_CMD_NAMES: Readonly<Record<number, string>> = {
  0: 'READ',
  1: 'WRITE',
  2: 'DISC',
  3: 'FLUSH',
  4: 'TRIM',
  5: 'CACHE',
  6: 'WRITE_ZEROES',
  7: 'BLOCK_STATUS',
};

/** Option reply error type → name. */
export const NBD_REP_ERR_NAMES: Readonly<Record<number, string>> = {
  [NBD_REP_ERR_UNSUP]: 'ERR_UNSUP',
  [NBD_REP_ERR_POLICY]: 'ERR_POLICY',
  [NBD_REP_ERR_INVALID]: 'ERR_INVALID',
  [NBD_REP_ERR_PLATFORM]: 'ERR_PLATFORM',
  [NBD_REP_ERR_TLS_REQD]: 'ERR_TLS_REQD',
  [NBD_REP_ERR_UNKNOWN]: 'ERR_UNKNOWN',
  [NBD_REP_ERR_SHUTDOWN]: 'ERR_SHUTDOWN',
  [NBD_REP_ERR_BLOCK_SIZE_REQD]: 'ERR_BLOCK_SIZE_REQD',
  [NBD_REP_ERR_TOO_BIG]: 'ERR_TOO_BIG',
};
