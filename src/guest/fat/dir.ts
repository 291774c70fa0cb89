/**
 * FAT directory entries (32 bytes each) and VFAT long file names: LFN entries precede their short
 * entry in reverse order, each carrying 13 UTF-16 units and the short name's checksum; a sequence
 * that does not match is ignored and the 8.3 name used, as Linux does. Short names honour the NT
 * lowercase flags (what mtools and Linux show as "hello.txt" instead of "HELLO.TXT").
 */

export const ATTR_READ_ONLY = 0x01;
export const ATTR_HIDDEN = 0x02;
export const ATTR_SYSTEM = 0x04;
export const ATTR_VOLUME_ID = 0x08;
export const ATTR_DIRECTORY = 0x10;
export const ATTR_LONG_NAME = 0x0f;

export interface FatDirEntry {
  name: string;
  shortName: string;
  attr: number;
  firstCluster: number;
  size: number;
  mtime: number;
  atime: number;
  ctime: number;
  /** Byte offset of the short entry inside the directory's data. */
  entryOffset: number;
}

function fatTime(date: number, time: number): number {
  if (date === 0) return 0;
  const y = 1980 + (date >> 9), mo = ((date >> 5) & 15) - 1, d = date & 31;
  const h = time >> 11, mi = (time >> 5) & 63, s = (time & 31) * 2;
  return Math.floor(Date.UTC(y, mo, d, h, mi, s) / 1000);
}

export function lfnChecksum(short: Buffer): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = (((sum & 1) << 7) | (sum >> 1)) + short[i] & 0xff;
  return sum;
}

function shortNameOf(e: Buffer, ntRes: number): string {
  const raw = Buffer.from(e.subarray(0, 11));
  if (raw[0] === 0x05) raw[0] = 0xe5;
  let base = raw.toString('latin1', 0, 8).replace(/ +$/, '');
  let ext = raw.toString('latin1', 8, 11).replace(/ +$/, '');
  if (ntRes & 0x08) base = base.toLowerCase();
  if (ntRes & 0x10) ext = ext.toLowerCase();
  return ext ? `${base}.${ext}` : base;
}

/**
 * Parses a directory's data. Stops at the first entry whose first byte is 0 (end of directory).
 * Skips deleted entries, the volume label, "." and "..".
 */
export function parseFatDir(data: Buffer): FatDirEntry[] {
  const out: FatDirEntry[] = [];
  let lfnParts: string[] = [];
  let lfnSum = -1, lfnNext = 0;
  for (let o = 0; o + 32 <= data.length; o += 32) {
    const e = data.subarray(o, o + 32);
    const first = e[0];
    if (first === 0) break;
    if (first === 0xe5) { lfnParts = []; lfnNext = 0; continue; }
    const attr = e[11];
    if ((attr & 0x3f) === ATTR_LONG_NAME) {
      const ord = first & 0x1f;
      if (first & 0x40) { lfnParts = []; lfnSum = e[13]; lfnNext = ord; }
      if (ord === 0 || ord !== lfnNext || e[13] !== lfnSum) { lfnParts = []; lfnNext = 0; continue; }
      const units = Buffer.concat([e.subarray(1, 11), e.subarray(14, 26), e.subarray(28, 32)]);
      let part = units.toString('utf16le');
      const end = part.indexOf('\0');
      if (end >= 0) part = part.slice(0, end);
      lfnParts[ord - 1] = part;
      lfnNext = ord - 1;
      continue;
    }
    const complete = lfnParts.length > 0 && lfnNext === 0 && lfnSum === lfnChecksum(e);
    const longName = complete ? lfnParts.join('') : undefined;
    lfnParts = [];
    lfnNext = 0;
    if (attr & ATTR_VOLUME_ID) continue;
    const shortName = shortNameOf(e, e[12]);
    if (shortName === '.' || shortName === '..') continue;
    out.push({
      name: longName || shortName,
      shortName,
      attr,
      firstCluster: (e.readUInt16LE(20) << 16 | e.readUInt16LE(26)) >>> 0,
      size: e.readUInt32LE(28),
      mtime: fatTime(e.readUInt16LE(24), e.readUInt16LE(22)),
      atime: fatTime(e.readUInt16LE(18), 0),
      ctime: fatTime(e.readUInt16LE(16), e.readUInt16LE(14)),
      entryOffset: o,
    });
  }
  return out;
}
