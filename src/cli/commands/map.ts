import { Qcow2Image } from '../../engine/image';
import { mapImage, writeMapJson } from '../../engine/map';
import { parseArgs, UsageError } from '../args';
import type { Command } from './index';

export const mapCommand: Command = {
  usage: 'IMAGE [--json]            guest ranges and where they live (as qemu-img map)',
  async run(argv) {
    const args = parseArgs(argv, ['--output']);
    const [path] = args.positionals;
    if (!path) throw new UsageError('IMAGE is required');
    const json = args.flags.has('--json') || args.flags.get('--output') === 'json';
    const img = await Qcow2Image.open(path);
    try {
      const preallocated: string[] = [];
      for (const layer of img.chain()) {
        if (layer instanceof Qcow2Image && await layer.detectMetadataPreallocation().catch(() => false)) preallocated.push(layer.path);
      }
      if (preallocated.length) {
        process.stderr.write(`qcow2-lens: note: ${preallocated.join(', ')}: metadata preallocation detected; qemu-img map would also ask the file system for holes in data clusters and report them as "zero": true (Node cannot see holes; see README, Known differences)\n`);
      }
      if (json) {
        // The walk does not pause for a slow reader (stdout buffers); one drain wait at a time.
        let drain: Promise<void> | null = null;
        await writeMapJson(img, chunk => {
          if (!process.stdout.write(chunk) && !drain) {
            drain = new Promise<void>(resolve => process.stdout.once('drain', () => { drain = null; resolve(); }));
          }
          return drain ?? undefined;
        });
      } else {
        const entries = await mapImage(img);
        const chain = img.chain();
        const lines = ['Offset          Length          Mapped to       File'];
        for (const e of entries) {
          if (!e.data || e.offset === undefined) continue;
          lines.push(`0x${e.start.toString(16).padEnd(16)}0x${e.length.toString(16).padEnd(16)}0x${e.offset.toString(16).padEnd(16)}${chain[e.depth]?.path ?? ''}`);
        }
        process.stdout.write(lines.join('\n') + '\n');
      }
      return 0;
    } finally {
      await img.close();
    }
  },
};
