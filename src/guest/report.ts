/** The `partitions --json` shape (fixed by issue 12: table, partitions[number, start, size, fs, …]). */
import type { Guest } from './guest';

export interface PartitionsReport {
  table: 'gpt' | 'mbr' | 'none';
  id?: string;
  sectorSize: number;
  partitions: Array<{
    number: number;
    start: number;
    size: number;
    fs: string | null;
    type: string;
    typeName: string;
    name?: string;
    uuid?: string;
    bootable?: boolean;
    logical?: boolean;
    /** Bytes the file system says it spans. */
    fsSize?: number;
    label?: string;
    version?: string;
    browsable: boolean;
    readOnly?: boolean;
    warnings?: string[];
    error?: string;
  }>;
  warnings: string[];
}

export function partitionsReport(g: Guest): PartitionsReport {
  return {
    table: g.table.table,
    ...(g.table.id ? { id: g.table.id } : {}),
    sectorSize: g.table.sectorSize,
    partitions: g.partitions.map(p => {
      const o: PartitionsReport['partitions'][number] = { number: p.number, start: p.start, size: p.size, fs: p.fs, type: p.type, typeName: p.typeName, browsable: p.browsable };
      if (p.name) o.name = p.name;
      if (p.uuid) o.uuid = p.uuid;
      if (p.bootable) o.bootable = true;
      if (p.logical) o.logical = true;
      if (p.fsInfo?.size !== undefined) o.fsSize = p.fsInfo.size;
      const label = p.fileSystem?.label ?? p.fsInfo?.label;
      if (label) o.label = label;
      if (p.fsInfo?.version) o.version = p.fsInfo.version;
      if (p.fileSystem) {
        o.readOnly = p.fileSystem.readOnly;
        if (p.fileSystem.warnings.length) o.warnings = [...p.fileSystem.warnings];
      }
      if (p.error) o.error = p.error;
      return o;
    }),
    warnings: g.warnings,
  };
}
