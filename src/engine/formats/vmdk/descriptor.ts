/**
 * The VMDK descriptor: the text naming the disk's type, content ID and extents. Written with the
 * exact template of QEMU 7.2 (vmdk_co_do_create); read the way QEMU reads it (the first "CID",
 * "parentCID" and `createType="…"`, and `RW` extent lines of the forms it accepts).
 */

export type VmdkAdapterType = 'ide' | 'buslogic' | 'lsilogic' | 'legacyESX';

export interface DescriptorFields {
  cid: number;
  parentCid: number;
  createType: string;
  /** `RW <sectors> SPARSE "<file>"` lines (each ending in "\n"). */
  extentLines: string;
  hwVersion: string;
  /** Disk size in bytes (the geometry's cylinders are derived from it as QEMU does). */
  size: number;
  adapterType: VmdkAdapterType;
  toolsVersion: string;
}

/** QEMU's descriptor text. IDE disks get 16 heads, others 255 (VMware's convention); 63 sectors. */
export function buildDescriptor(d: DescriptorFields): string {
  const heads = d.adapterType === 'ide' ? 16 : 255;
  const cylinders = Math.floor(d.size / (63 * heads * 512));
  return '# Disk DescriptorFile\n'
    + 'version=1\n'
    + `CID=${(d.cid >>> 0).toString(16)}\n`
    + `parentCID=${(d.parentCid >>> 0).toString(16)}\n`
    + `createType="${d.createType}"\n`
    + '\n'
    + '# Extent description\n'
    + d.extentLines
    + '\n'
    + '# The Disk Data Base\n'
    + '#DDB\n'
    + '\n'
    + `ddb.virtualHWVersion = "${d.hwVersion}"\n`
    + `ddb.geometry.cylinders = "${cylinders}"\n`
    + `ddb.geometry.heads = "${heads}"\n`
    + 'ddb.geometry.sectors = "63"\n'
    + `ddb.adapterType = "${d.adapterType}"\n`
    + `ddb.toolsVersion = "${d.toolsVersion}"\n`;
}

export function sparseExtentLine(sectors: number, fileName: string): string {
  return `RW ${sectors} SPARSE "${fileName}"\n`;
}

export interface ExtentLine {
  access: string;
  sectors: number;
  type: 'FLAT' | 'SPARSE' | 'VMFS' | 'VMFSSPARSE' | 'SESPARSE';
  fileName: string;
  /** FLAT: the extent's first sector in its file (VMFS: 0). */
  flatOffset: number;
  /** The line as written, for messages. */
  line: string;
}

export interface ParsedDescriptor {
  createType: string | undefined;
  cid: number | undefined;
  parentCid: number | undefined;
  parentFileNameHint: string | undefined;
  extents: ExtentLine[];
  /** Extent lines QEMU calls invalid (a FLAT line without its offset, extra fields, …). */
  invalidLine: string | undefined;
}

/** The value QEMU's vmdk_parse_description finds: after the first `name`, skip `="`, up to the next `"`. */
function quotedValue(text: string, name: string): string | undefined {
  const at = text.indexOf(name);
  if (at < 0) return undefined;
  const from = at + name.length + 2;
  if (from >= text.length) return undefined;
  const end = text.indexOf('"', from);
  return end < 0 ? undefined : text.slice(from, end);
}

/** QEMU's sscanf("%x") after the first occurrence of `name` and one more character. */
function hexAfter(text: string, name: string): number | undefined {
  const at = text.indexOf(name);
  if (at < 0) return undefined;
  const m = /^\s*(?:0[xX])?([0-9a-fA-F]+)/.exec(text.slice(at + name.length + 1));
  if (!m) return undefined;
  return Number(BigInt('0x' + m[1]) & 0xffffffffn);
}

const EXTENT = /^\s*(\S{1,10})\s+([-+]?\d+)\s+(\S{1,10})\s+"([^\n\r"]{1,511})"(?:[ \t]+([-+]?\d+))?/;

export function parseDescriptor(text: string): ParsedDescriptor {
  const cut = text.indexOf('\0');
  if (cut >= 0) text = text.slice(0, cut);
  const out: ParsedDescriptor = {
    createType: quotedValue(text, 'createType'),
    cid: hexAfter(text, 'CID'),
    parentCid: hexAfter(text, 'parentCID'),
    parentFileNameHint: undefined,
    extents: [],
    invalidLine: undefined,
  };
  const hint = text.indexOf('parentFileNameHint');
  if (hint >= 0) {
    const from = hint + 'parentFileNameHint'.length + 2;
    const end = text.indexOf('"', from);
    if (end >= 0) out.parentFileNameHint = text.slice(from, end);
  }
  for (const line of text.split('\n')) {
    const m = EXTENT.exec(line);
    if (!m || m[1] !== 'RW') continue;
    const [, access, sectorsText, type, fileName, offsetText] = m;
    const hasOffset = offsetText !== undefined;
    if (type === 'FLAT') {
      if (!hasOffset || Number(offsetText) < 0) { out.invalidLine ??= line.replace(/\r$/, ''); continue; }
    } else if (hasOffset) {
      out.invalidLine ??= line.replace(/\r$/, '');
      continue;
    }
    const sectors = Number(sectorsText);
    if (!(sectors > 0) || !['FLAT', 'SPARSE', 'VMFS', 'VMFSSPARSE', 'SESPARSE'].includes(type)) continue;
    out.extents.push({ access, sectors, type: type as ExtentLine['type'], fileName, flatOffset: hasOffset ? Number(offsetText) : 0, line });
  }
  return out;
}
