import { Qcow2Image } from '../../engine/image';
import { formatInfoJson, imageInfo, ImageInfo } from '../../engine/info';
import { parseArgs, UsageError } from '../args';
import type { Command } from './index';

function humanSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0, v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${n} B` : `${Number(v.toFixed(3))} ${units[i]}`;
}

function human(info: ImageInfo): string {
  const d = info['format-specific'].data;
  const lines = [
    `image: ${info.filename}`,
    `file format: ${info.format}`,
    `virtual size: ${humanSize(info['virtual-size'])} (${info['virtual-size']} bytes)`,
    `disk size: ${humanSize(info['actual-size'])}`,
    `cluster_size: ${info['cluster-size']}`,
  ];
  if (info['backing-filename']) lines.push(`backing file: ${info['backing-filename']}${info['full-backing-filename'] !== info['backing-filename'] ? ` (actual path: ${info['full-backing-filename'] ?? ''})` : ''}`);
  if (info['backing-filename-format']) lines.push(`backing file format: ${info['backing-filename-format']}`);
  if (info.encrypted) lines.push('encrypted: yes');
  if (info.snapshots) {
    lines.push('Snapshot list:', 'ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT');
    for (const s of info.snapshots) {
      const date = new Date(s['date-sec'] * 1000).toISOString().replace('T', ' ').slice(0, 19);
      lines.push(`${s.id.padEnd(10)}${s.name.padEnd(18)}${humanSize(s['vm-state-size']).padStart(7)} ${date} ${String(s['vm-clock-sec']).padStart(12)} ${s.icount ?? ''}`);
    }
  }
  lines.push('Format specific information:');
  for (const [k, v] of Object.entries(d)) {
    if (k === 'bitmaps' && Array.isArray(v)) {
      lines.push('    bitmaps:');
      for (const b of v as { name: string; granularity: number; flags: string[] }[]) lines.push(`        [${b.name}]: granularity ${b.granularity}, flags: ${b.flags.join(', ') || '(none)'}`);
    } else if (typeof v !== 'object') lines.push(`    ${k}: ${v}`);
  }
  return lines.join('\n') + '\n';
}

export const infoCommand: Command = {
  usage: 'IMAGE [--json]            header, features, snapshots, bitmaps, backing file (as qemu-img info)',
  async run(argv) {
    const args = parseArgs(argv, ['--output']);
    const [path] = args.positionals;
    if (!path) throw new UsageError('IMAGE is required');
    const json = args.flags.has('--json') || args.flags.get('--output') === 'json';
    const img = await Qcow2Image.open(path, { openBacking: false, openDataFile: false });
    try {
      const info = await imageInfo(img);
      process.stdout.write(json ? formatInfoJson(info) : human(info));
      return 0;
    } finally {
      await img.close();
    }
  },
};
