/**
 * A streaming POSIX tar (ustar with pax extended headers for long names, large sizes and
 * sub-second times) writer, for `vmvault files restore --tar`.
 */
import type { Writable } from 'node:stream';

const BLOCK = 512;

/** Metadata of one tar entry. */
export interface TarEntry {
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink';
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  size?: number;
  /** Symlink target, or the earlier path for a hard link. */
  linkname?: string;
}

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, '0')}\0`;
}

function paxRecord(key: string, value: string): string {
  // "<len> key=value\n" where len counts itself.
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len)
    len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

/** Writes tar entries to a stream, with back-pressure. */
export class TarWriter {
  constructor(private readonly out: Writable) {}

  private async write(buf: Buffer): Promise<void> {
    if (!this.out.write(buf)) await new Promise<void>((r) => this.out.once('drain', () => r()));
  }

  private header(e: TarEntry, name: string, typeflag: string, size: number, linkname = ''): Buffer {
    const h = Buffer.alloc(BLOCK);
    h.write(name, 0, 100, 'utf8');
    h.write(octal(e.mode & 0o7777, 8), 100, 'ascii');
    h.write(octal(Math.min(e.uid, 0o7777777), 8), 108, 'ascii');
    h.write(octal(Math.min(e.gid, 0o7777777), 8), 116, 'ascii');
    h.write(octal(Math.min(size, 0o77777777777), 12), 124, 'ascii');
    h.write(octal(Math.max(0, Math.floor(e.mtimeMs / 1000)), 12), 136, 'ascii');
    h.write('        ', 148, 'ascii');
    h.write(typeflag, 156, 'ascii');
    h.write(linkname, 157, 100, 'utf8');
    h.write('ustar\x0000', 257, 'latin1');
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
    return h;
  }

  /** Writes an entry header (and a pax header first when needed). Follow files with {@link data}. */
  async entry(e: TarEntry): Promise<void> {
    const size = e.type === 'file' ? (e.size ?? 0) : 0;
    const pax: string[] = [];
    if (Buffer.byteLength(e.path) > 100) pax.push(paxRecord('path', e.path));
    if (e.linkname && Buffer.byteLength(e.linkname) > 100) pax.push(paxRecord('linkpath', e.linkname));
    if (size > 0o77777777777) pax.push(paxRecord('size', String(size)));
    if (e.uid > 0o7777777) pax.push(paxRecord('uid', String(e.uid)));
    if (e.gid > 0o7777777) pax.push(paxRecord('gid', String(e.gid)));
    pax.push(paxRecord('mtime', (e.mtimeMs / 1000).toFixed(3)));
    const body = Buffer.from(pax.join(''));
    await this.write(this.header(e, 'PaxHeader', 'x', body.length));
    await this.write(body);
    await this.pad(body.length);
    const flag = { file: '0', dir: '5', symlink: '2', hardlink: '1' }[e.type];
    await this.write(this.header(e, e.path.slice(0, 100), flag, size, e.linkname?.slice(0, 100) ?? ''));
  }

  /** Writes file data (in pieces); call {@link endFile} after the last. */
  async data(buf: Buffer): Promise<void> {
    await this.write(buf);
  }

  private async pad(n: number): Promise<void> {
    const rem = n % BLOCK;
    if (rem) await this.write(Buffer.alloc(BLOCK - rem));
  }

  /** Pads a file's data to a block boundary. */
  async endFile(size: number): Promise<void> {
    await this.pad(size);
  }

  /** Writes the end-of-archive marker. */
  async finish(): Promise<void> {
    await this.write(Buffer.alloc(BLOCK * 2));
  }
}
