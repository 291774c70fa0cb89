/** The text form of a `space` report: one line per part and sub-part, with both reclaim figures. */
import { formatBytes } from '../../engine/units';
import type { SpacePart, SpaceReport } from './report';

const cell = (n?: number | string) => (n === undefined ? '' : typeof n === 'string' ? n : formatBytes(n)).padStart(12);

function row(indent: number, name: string, bytes?: number | string, c?: number | string, s?: number | string, extra = ''): string {
  return `${' '.repeat(indent)}${name}`.padEnd(40) + cell(bytes) + cell(c) + cell(s) + extra;
}

export function describeSpace(r: SpaceReport): string {
  const out = [
    `${r.image}: ${r.fileSize} bytes (${formatBytes(r.fileSize)}; ${formatBytes(r.allocatedBytes)} allocated on disk), ${formatBytes(r.clusterSize)} clusters, ${formatBytes(r.virtualSize)} guest disk`,
    row(0, 'part', 'bytes', 'compact', 'sparsify'),
  ];
  const walk = (p: SpacePart, indent: number) => {
    const extra = p.deleteFrees !== undefined ? `   (deleting it frees ${formatBytes(p.deleteFrees)})` : '';
    out.push(row(indent, p.name, p.bytes, p.compact, p.sparsify, extra));
    for (const q of p.parts ?? []) if (q.bytes || q.deleteFrees) walk(q, indent + 2);
  };
  for (const p of r.parts) walk(p, 0);
  out.push(row(0, 'reclaimable', undefined, r.reclaim.compact, r.reclaim.sparsify));
  for (const f of r.guest.fileSystems) out.push(`guest ${f.partition === 0 ? 'whole disk' : `partition ${f.partition}`} (${f.fs}): ${formatBytes(f.free)} free of ${formatBytes(f.size)}`);
  for (const n of r.notes) out.push(`note: ${n}`);
  return out.join('\n') + '\n';
}
