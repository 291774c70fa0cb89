/**
 * qemu-img's `-o` creation options for qcow2 and raw: parsing and validation with QEMU 7.2's own
 * messages (block/qcow2.c qcow2_co_create, qcow2_co_create_opts), and the "Formatting …" line
 * qemu-img create prints (qemu_opts_print: the merged option list in QEMU's order, defaults shown).
 * Messages quote no user value except where qemu-img itself quotes one (the parameter name).
 */
import { Qcow2Error } from '../errors';
import type { Preallocation } from './measure';

export type { Preallocation } from './measure';

export interface Qcow2CreateOptions {
  size?: number;
  version: 2 | 3;
  clusterSize: number;
  refcountBits: number;
  lazyRefcounts: boolean;
  extendedL2: boolean;
  compressionType: 'zlib' | 'zstd';
  preallocation: Preallocation;
  backingFile?: string;
  backingFmt?: string;
  dataFile?: string;
  dataFileRaw: boolean;
  /** encrypt.* (LUKS only; legacy AES is read and converted, never written). */
  encrypt?: EncryptCreateOptions;
}

/** `-o encrypt.format=luks,encrypt.key-secret=ID,…` as given; the secret is an --object id, resolved by the caller. */
export interface EncryptCreateOptions {
  format: 'luks';
  keySecret: string;
  cipherAlg?: string;
  cipherMode?: string;
  ivgenAlg?: string;
  ivgenHashAlg?: string;
  hashAlg?: string;
  /** Milliseconds of PBKDF2 per key slot (default 2000). */
  iterTime?: number;
}

/** The encrypt.* keys, in the order qemu-img's "Formatting" line lists them. */
export const ENCRYPT_KEYS = ['encrypt.format', 'encrypt.key-secret', 'encrypt.cipher-alg', 'encrypt.cipher-mode', 'encrypt.ivgen-alg',
  'encrypt.ivgen-hash-alg', 'encrypt.hash-alg', 'encrypt.iter-time'] as const;

function parseEncryptOptions(entries: readonly OptionEntry[]): EncryptCreateOptions | undefined {
  const e = new Map<string, string>();
  for (const { key, value } of entries) if (key.startsWith('encrypt.')) e.set(key, value);
  if (e.size === 0) return undefined;
  const format = e.get('encrypt.format');
  if (format === undefined) throw new OptionError("Parameter 'encrypt.format' is missing");
  if (format === 'aes') throw new OptionError('encrypt.format=aes (legacy qcow2 AES) is read and converted, never written: use encrypt.format=luks');
  if (format !== 'luks') throw new OptionError("Parameter 'encrypt.format' does not accept value '" + format + "'");
  const keySecret = e.get('encrypt.key-secret');
  if (keySecret === undefined) throw new OptionError("Parameter 'encrypt.key-secret' is required for cipher");
  const iter = e.get('encrypt.iter-time');
  return {
    format, keySecret,
    cipherAlg: e.get('encrypt.cipher-alg'), cipherMode: e.get('encrypt.cipher-mode'), ivgenAlg: e.get('encrypt.ivgen-alg'),
    ivgenHashAlg: e.get('encrypt.ivgen-hash-alg'), hashAlg: e.get('encrypt.hash-alg'),
    iterTime: iter === undefined ? undefined : parseNumber('encrypt.iter-time', iter),
  };
}

/** An option list entry as the command line gave it (key=value; a bare key is key=on). */
export interface OptionEntry {
  key: string;
  value: string;
}

/** A user error in the options: qemu-img's message, reported as "FILE: message". */
export class OptionError extends Error {}

const QCOW2_KEYS = ['size', 'compat', 'backing_file', 'backing_fmt', 'data_file', 'data_file_raw', 'encryption', 'cluster_size', 'preallocation',
  'lazy_refcounts', 'refcount_bits', 'compression_type', 'extended_l2', 'nocow'] as const;

/** QEMU's bool parser (qapi_bool_parse): on/off and its synonyms. */
export function parseBool(key: string, v: string): boolean {
  if (['on', 'yes', 'true', 'y'].includes(v)) return true;
  if (['off', 'no', 'false', 'n'].includes(v)) return false;
  throw new OptionError(`Parameter '${key}' expects 'on' or 'off'`);
}

const SUFFIX: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60 };

/**
 * qemu_strtosz: a decimal number (a fraction allowed before a suffix), optionally with one of
 * B, K, M, G, T, P, E (powers of 1024, either case). Returns undefined when it is not one.
 */
export function parseQemuSize(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?|0x[0-9a-fA-F]+)([bBkKmMgGtTpPeE]?)$/.exec(s.trim());
  if (!m) return undefined;
  const isHex = m[1].startsWith('0x');
  if (isHex && m[2]) return undefined;
  if (m[1].includes('.') && !m[2]) return undefined;
  const n = Number(m[1]) * SUFFIX[m[2].toLowerCase()];
  const r = Math.floor(n);
  return Number.isSafeInteger(r) && r >= 0 ? r : undefined;
}

function parseSizeOption(key: string, v: string): number {
  const n = parseQemuSize(v);
  if (n === undefined) throw new OptionError(`Parameter '${key}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.`);
  return n;
}

function parseNumber(key: string, v: string): number {
  if (!/^\d+$/.test(v)) throw new OptionError(`Parameter '${key}' expects a number`);
  return Number(v);
}

/**
 * Parses and validates qcow2 creation options (the union of -o, -b and -F, with size when given).
 * `encrypt.*` is parsed into `encrypt` (LUKS); `encryption=on` (legacy AES) is refused.
 */
export function parseQcow2CreateOptions(entries: readonly OptionEntry[]): Qcow2CreateOptions {
  const o: Qcow2CreateOptions = {
    version: 3, clusterSize: 65536, refcountBits: 16, lazyRefcounts: false, extendedL2: false,
    compressionType: 'zlib', preallocation: 'off', dataFileRaw: false,
  };
  let compatGiven = false;
  for (const { key, value } of entries) {
    if (key === 'encryption') throw new OptionError('encryption=on (legacy qcow2 AES) is read and converted, never written: use encrypt.format=luks');
    if (key.startsWith('encrypt.')) {
      if (!(ENCRYPT_KEYS as readonly string[]).includes(key)) throw new OptionError(`Invalid parameter '${key}'`);
      continue;
    }
    if (!(QCOW2_KEYS as readonly string[]).includes(key)) throw new OptionError(`Invalid parameter '${key}'`);
    switch (key) {
      case 'size': o.size = parseSizeOption(key, value); break;
      case 'compat':
        if (value === '0.10' || value === 'v2') o.version = 2;
        else if (value === '1.1' || value === 'v3') o.version = 3;
        else throw new OptionError("Parameter 'version' does not accept value '" + value + "'");
        compatGiven = true;
        break;
      case 'backing_file': o.backingFile = value; break;
      case 'backing_fmt': o.backingFmt = value; break;
      case 'data_file': o.dataFile = value; break;
      case 'data_file_raw': o.dataFileRaw = parseBool(key, value); break;
      case 'cluster_size': o.clusterSize = parseSizeOption(key, value); break;
      case 'preallocation':
        if (!['off', 'metadata', 'falloc', 'full'].includes(value)) throw new OptionError("Parameter 'preallocation' does not accept value '" + value + "'");
        o.preallocation = value as Preallocation;
        break;
      case 'lazy_refcounts': o.lazyRefcounts = parseBool(key, value); break;
      case 'refcount_bits': o.refcountBits = parseNumber(key, value); break;
      case 'compression_type':
        if (value !== 'zlib' && value !== 'zstd') throw new OptionError("Parameter 'compression-type' does not accept value '" + value + "'");
        o.compressionType = value;
        break;
      case 'extended_l2': o.extendedL2 = parseBool(key, value); break;
      case 'nocow': parseBool(key, value); break;
    }
  }
  void compatGiven;
  o.encrypt = parseEncryptOptions(entries);
  validateQcow2(o);
  return o;
}

/** QEMU 7.2 qcow2_co_create's checks, in its order and with its messages. */
export function validateQcow2(o: Qcow2CreateOptions): void {
  const cs = o.clusterSize;
  if (!(cs >= 512 && cs <= 2 * 1024 * 1024 && (cs & (cs - 1)) === 0)) {
    throw new OptionError('Cluster size must be a power of two between 512 and 2048k');
  }
  const v3 = ' (use version=v3 or greater)';
  if (o.version < 3 && o.lazyRefcounts) throw new OptionError('Lazy refcounts only supported with compatibility level 1.1 and above' + v3);
  const rb = o.refcountBits;
  if (rb > 64 || rb < 1 || (rb & (rb - 1)) !== 0) throw new OptionError('Refcount width must be a power of two and may not exceed 64 bits');
  if (o.version < 3 && rb !== 16) throw new OptionError('Different refcount widths than 16 bits require compatibility level 1.1 or above' + v3);
  if (o.backingFmt !== undefined && o.backingFile === undefined) throw new OptionError('Backing format cannot be used without backing file');
  if (o.dataFileRaw && o.dataFile === undefined) throw new OptionError('data-file-raw requires data-file');
  if (o.dataFile !== undefined && o.version < 3) throw new OptionError('External data files are only supported with compatibility level 1.1 and above' + v3);
  if (o.compressionType !== 'zlib' && o.version < 3) throw new OptionError('Non-zlib compression type is only supported with compatibility level 1.1 and above' + v3);
  if (o.extendedL2) {
    if (o.version < 3) throw new OptionError('Extended L2 entries are only supported with compatibility level 1.1 and above' + v3);
    if (cs < 16384) throw new OptionError('Extended L2 entries are only supported with cluster sizes of at least 16384 bytes');
  }
  if (o.backingFile !== undefined && o.preallocation !== 'off' && !o.extendedL2) {
    throw new OptionError('Backing file and preallocation can only be used at the same time if extended_l2 is on');
  }
  if (o.backingFile !== undefined && Buffer.byteLength(o.backingFile) > 1023) throw new OptionError('Backing file name too long');
  if (o.encrypt && o.preallocation !== 'off') throw new OptionError('preallocation with encryption is not supported yet (QEMU would map clusters of unencrypted zeros)');
  if (o.encrypt && o.version < 3) throw new OptionError('encryption is only supported with compatibility level 1.1 and above here (use compat=v3)');
}

/** qemu-img create's "Formatting 'FILE', fmt=qcow2 …" line (values as given, numbers for sizes). */
export function formattingLine(file: string, fmt: 'qcow2' | 'raw', given: ReadonlyMap<string, string>, size: number | undefined): string {
  const shown: [string, string | undefined][] = fmt === 'raw'
    ? [['size', size === undefined ? undefined : String(size)]]
    : [
      ...ENCRYPT_KEYS.map(k => [k, given.get(k)] as [string, string | undefined]),
      ['cluster_size', given.has('cluster_size') ? String(parseQemuSize(given.get('cluster_size')!)) : '65536'],
      ['extended_l2', given.get('extended_l2') ?? 'off'],
      ['preallocation', given.get('preallocation')],
      ['compression_type', given.get('compression_type') ?? 'zlib'],
      ['size', size === undefined ? undefined : String(size)],
      ['compat', given.get('compat')],
      ['backing_file', given.get('backing_file')],
      ['backing_fmt', given.get('backing_fmt')],
      ['data_file', given.get('data_file')],
      ['data_file_raw', given.get('data_file_raw')],
      ['lazy_refcounts', given.get('lazy_refcounts') ?? 'off'],
      ['refcount_bits', given.get('refcount_bits') ?? '16'],
      ['nocow', given.get('nocow')],
    ];
  const parts = shown.filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${String(v)}`);
  return `Formatting '${file}', fmt=${fmt} ${parts.join(' ')}\n`;
}

/** Raw creation options: only size (and preallocation, which qemu-img's raw driver also takes). */
export function parseRawCreateOptions(entries: readonly OptionEntry[]): { size?: number; preallocation: Preallocation } {
  const r: { size?: number; preallocation: Preallocation } = { preallocation: 'off' };
  for (const { key, value } of entries) {
    if (key === 'size') r.size = parseSizeOption(key, value);
    else if (key === 'preallocation') {
      if (!['off', 'falloc', 'full'].includes(value)) throw new OptionError("Parameter 'preallocation' does not accept value '" + value + "'");
      r.preallocation = value as Preallocation;
    } else if (key === 'nocow') parseBool(key, value);
    else throw new OptionError(`Invalid parameter '${key}'`);
  }
  return r;
}

/** An option error as the engine reports it (path first, as qemu-img prints "FILE: message"). */
export function optionFailure(path: string, e: OptionError): Qcow2Error {
  return new Qcow2Error(path, 'options', undefined, e.message, 'unsupported');
}
