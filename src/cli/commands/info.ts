import * as fs from 'node:fs';
import { findBrokenChain } from '../../engine/check/backingChain';
import { resolveBackingPath } from '../../engine/image/backing';
import { Qcow2Image } from '../../engine/image/image';
import { formatInfoJson, imageInfo, ImageInfo } from '../../engine/image/info';
import { stringifyExact } from '../../engine/json';
import { FORCE_SHARE, FORMAT, JSON_FLAG, OUTPUT, type CommandSpec } from '../command';

function humanSize(size: number | bigint): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  // qemu-img sizes the unsigned value (a VM state size read as int64 may be negative)
  const n = typeof size === 'bigint' ? Number(BigInt.asUintN(64, size)) : size;
  let i = 0, v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${n} B` : `${Number(v.toFixed(3))} ${units[i]}`;
}

/** A raw layer of a chain as qemu-img info --backing-chain shows it. */
interface RawInfo { 'virtual-size': number; filename: string; format: 'raw'; 'actual-size': number; 'dirty-flag': boolean }

function humanRaw(info: RawInfo): string {
  return [`image: ${info.filename}`, `file format: raw`, `virtual size: ${humanSize(info['virtual-size'])} (${info['virtual-size']} bytes)`, `disk size: ${humanSize(info['actual-size'])}`].join('\n') + '\n';
}

/**
 * Every layer's info, top first, as qemu-img info --backing-chain collects them; null (and QEMU's
 * message on stderr) when a layer does not open, for qemu-img then prints nothing and exits 1.
 */
async function chainInfos(top: Qcow2Image): Promise<(ImageInfo | RawInfo)[] | null> {
  const broken = await findBrokenChain(top);
  if (broken) {
    process.stderr.write(`qcow2-lens: Could not open '${broken.backingPath}': ${broken.reason}\n`);
    return null;
  }
  const out: (ImageInfo | RawInfo)[] = [await imageInfo(top)];
  let h = top.header, at = top.path;
  while (h.backingFile) {
    const p = resolveBackingPath(at, h.backingFile);
    let fmt = h.backingFormat;
    if (!fmt) {
      const fh = await fs.promises.open(p, 'r');
      try {
        const b = Buffer.alloc(4);
        fmt = (await fh.read(b, 0, 4, 0)).bytesRead === 4 && b.readUInt32BE(0) === 0x514649fb ? 'qcow2' : 'raw';
      } finally { await fh.close(); }
    }
    if (fmt !== 'qcow2') {
      const st = await fs.promises.stat(p);
      if (fmt !== 'raw' && fmt !== 'file') throw new Error(`${p}: backing format "${fmt}" is not read by qcow2-lens (qcow2 and raw are)`);
      out.push({ 'virtual-size': Math.ceil(st.size / 512) * 512, filename: p, format: 'raw', 'actual-size': st.blocks * 512, 'dirty-flag': false });
      break;
    }
    const img = await Qcow2Image.open(p, { openBacking: false, openDataFile: false });
    try {
      out.push(await imageInfo(img));
      h = img.header;
      at = p;
    } finally {
      await img.close();
    }
  }
  return out;
}

function human(info: ImageInfo | RawInfo): string {
  if (info.format === 'raw') return humanRaw(info);
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
    } else if (typeof v !== 'object') lines.push(`    ${k.replace(/-/g, ' ')}: ${v}`); // QEMU's human dump spells keys with spaces
  }
  return lines.join('\n') + '\n';
}

export const infoCommand: CommandSpec = {
  name: 'info',
  summary: 'header, features, snapshots, bitmaps and backing file, as qemu-img info',
  usage: ['[-f qcow2] [--output=human|json] [-U] [--backing-chain] IMAGE'],
  options: [{ long: 'backing-chain', help: 'every layer of the chain, top first (as qemu-img info --backing-chain: nothing and exit 1 when a layer does not open)' }, OUTPUT, JSON_FLAG, FORMAT, { ...FORCE_SHARE, help: 'accepted as qemu-img takes it: info only reads and never refuses an image QEMU holds' }],
  operands: { names: ['IMAGE'] },
  async run(args) {
    const [path] = args.operands;
    const json = args.json;
    const img = await Qcow2Image.open(path, { openBacking: false, openDataFile: false });
    try {
      // as qemu-img info: the image alone (a missing backing file is named, not opened)
      if (!args.has('backing-chain')) {
        const info = await imageInfo(img);
        process.stdout.write(json ? formatInfoJson(info) : human(info));
        return 0;
      }
      const infos = await chainInfos(img);
      if (!infos) return 1;
      process.stdout.write(json ? stringifyExact(infos, 4) + '\n' : infos.map(human).join('\n'));
      return 0;
    } finally {
      await img.close();
    }
  },
};
