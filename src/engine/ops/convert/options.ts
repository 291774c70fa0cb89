/**
 * `convert`'s output options, checked as qemu-img 7.2 checks them and refused with its messages:
 * the -o list of each output format (qcow2's creation options are create's own parser), -c only
 * where the format compresses, -B only where it has a backing file, -S's range.
 */
import type { VmdkAdapterType, VmdkSubformat } from '../../formats';
import { OptionError, parseBool, parseQcow2CreateOptions, parseRawCreateOptions, type OptionEntry, type Preallocation, type Qcow2CreateOptions } from '../options';

export type OutputFormat = 'qcow2' | 'raw' | 'vpc' | 'vmdk';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['qcow2', 'raw', 'vpc', 'vmdk'];

export type OutputPlan =
  | { format: 'qcow2'; qcow2: Qcow2CreateOptions }
  | { format: 'raw'; preallocation: Preallocation }
  | { format: 'vpc'; subformat: 'dynamic' | 'fixed'; forceSize: boolean }
  | { format: 'vmdk'; subformat: VmdkSubformat; adapterType?: VmdkAdapterType; hwVersion?: string; compat6: boolean; toolsVersion?: string; zeroedGrain: boolean };

export interface PlanRequest {
  format: string;
  entries: readonly OptionEntry[];
  compress: boolean;
  backing?: string;
  backingFormat?: string;
  /** -S in bytes (qemu-img's default 4096; 0 = fully allocated). */
  minSparse: number;
}

/** qemu-img's -S check: multiples of 512 up to 16 MiB (32768 sectors). */
export function checkMinSparse(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes % 512 !== 0 || bytes / 512 > 32768) {
    throw new OptionError('Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).');
  }
}

function onlyKeys(entries: readonly OptionEntry[], keys: readonly string[]): void {
  for (const e of entries) if (!keys.includes(e.key)) throw new OptionError(`Invalid parameter '${e.key}'`);
}

function notCompressible(): OptionError {
  return new OptionError('Compression not supported for this file format');
}

export function planOutput(r: PlanRequest): OutputPlan {
  if (!(OUTPUT_FORMATS as readonly string[]).includes(r.format)) {
    if (['qcow', 'qed', 'vdi', 'vhdx', 'parallels', 'luks', 'cloop', 'dmg', 'bochs'].includes(r.format)) {
      throw new OptionError(`writing the ${r.format} format is not supported (qcow2, raw, vpc and vmdk are)`);
    }
    throw new OptionError(`Unknown file format '${r.format}'`);
  }
  checkMinSparse(r.minSparse);
  const backingGiven = r.backing !== undefined || r.entries.some(e => e.key === 'backing_file');
  if (r.format !== 'qcow2' && backingGiven) {
    if (r.format === 'raw') throw new OptionError("Backing file not supported for file format 'raw'");
    throw new OptionError(`a backing file (-B) for a ${r.format} output is not supported (qcow2 is)`);
  }
  switch (r.format) {
    case 'qcow2': {
      const entries = [...r.entries];
      if (r.backing !== undefined) entries.push({ key: 'backing_file', value: r.backing });
      if (r.backingFormat !== undefined) entries.push({ key: 'backing_fmt', value: r.backingFormat });
      const o = parseQcow2CreateOptions(entries);
      if (o.backingFile !== undefined && o.backingFmt === undefined) throw new OptionError('Use of backing file requires explicit backing format');
      if (o.dataFile !== undefined) throw new OptionError('converting into an image with an external data file (data_file) is not supported yet');
      if (r.compress && o.preallocation !== 'off') throw new OptionError('Compression and preallocation not supported at the same time');
      return { format: 'qcow2', qcow2: o };
    }
    case 'raw': {
      if (r.compress) throw notCompressible();
      if (r.backingFormat !== undefined) throw new OptionError('Backing format cannot be used without backing file');
      const o = parseRawCreateOptions(r.entries);
      return { format: 'raw', preallocation: o.preallocation };
    }
    case 'vpc': {
      if (r.compress) throw notCompressible();
      onlyKeys(r.entries, ['size', 'subformat', 'force_size']);
      let subformat: 'dynamic' | 'fixed' = 'dynamic', forceSize = false;
      for (const { key, value } of r.entries) {
        if (key === 'subformat') {
          if (value !== 'dynamic' && value !== 'fixed') throw new OptionError("Parameter 'subformat' does not accept value '" + value + "'");
          subformat = value;
        } else if (key === 'force_size') forceSize = parseBool(key, value);
      }
      return { format: 'vpc', subformat, forceSize };
    }
    default: {
      onlyKeys(r.entries, ['size', 'subformat', 'adapter_type', 'hwversion', 'compat6', 'toolsversion', 'zeroed_grain', 'backing_file']);
      const p: OutputPlan & { format: 'vmdk' } = { format: 'vmdk', subformat: 'monolithicSparse', compat6: false, zeroedGrain: false };
      for (const { key, value } of r.entries) {
        switch (key) {
          case 'subformat':
            if (value === 'monolithicSparse' || value === 'streamOptimized') p.subformat = value;
            else if (['monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'vmfs', 'vmfsSparse'].includes(value)) {
              throw new OptionError(`writing the vmdk subformat ${value} is not supported (monolithicSparse and streamOptimized are)`);
            } else throw new OptionError('Unknown subformat: ' + value);
            break;
          case 'adapter_type':
            if (!['ide', 'buslogic', 'lsilogic', 'legacyESX'].includes(value)) throw new OptionError('Unknown adapter type: ' + value);
            p.adapterType = value as VmdkAdapterType;
            break;
          case 'hwversion': p.hwVersion = value; break;
          case 'compat6': p.compat6 = parseBool(key, value); break;
          case 'toolsversion': p.toolsVersion = value; break;
          case 'zeroed_grain': p.zeroedGrain = parseBool(key, value); break;
        }
      }
      if (p.compat6 && p.hwVersion !== undefined) throw new OptionError('compat6 cannot be enabled with hwversion set');
      return p;
    }
  }
}
