import { Qcow2Image } from '../../engine/image/image';
import { formatInfoJson, imageInfo, ImageInfo } from '../../engine/image/info';
import { FORCE_SHARE, FORMAT, JSON_FLAG, OUTPUT, type CommandSpec } from '../command';

function humanSize(size: number | bigint): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  // qemu-img sizes the unsigned value (a VM state size read as int64 may be negative)
  const n = typeof size === 'bigint' ? Number(BigInt.asUintN(64, size)) : size;
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
      lines.push(`${s.id.padEnd(10)}${s.name.padEnd(18)}${humanSize(s['vm-state-size']).padStart(7)} ${date} ${String(s['vm-clock-sec']).padStart(12)} ${s.icount?.toString() ?? ''}`);
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

export const infoCommand: CommandSpec = {
  name: 'info',
  summary: 'header, features, snapshots, bitmaps and backing file, as qemu-img info',
  usage: ['[-f qcow2] [--output=human|json] [-U] IMAGE'],
  options: [OUTPUT, JSON_FLAG, FORMAT, { ...FORCE_SHARE, help: 'accepted as qemu-img takes it: info only reads and never refuses an image QEMU holds' }],
  operands: { names: ['IMAGE'] },
  async run(args) {
    const [path] = args.operands;
    const json = args.json;
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
