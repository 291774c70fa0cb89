import { copyOut } from '../../guest/copyOut';
import { withGuestImage } from '../../guest/image';
import { parsePartitionPath } from '../../guest/guest';
import type { CommandSpec } from '../command';

export const cpCommand: CommandSpec = {
  name: 'cp',
  summary: 'copy a guest file or folder out to the host (recursively; modes, times and symlinks kept; never overwrites)',
  usage: ['IMAGE [PARTITION:]PATH DEST'],
  options: [],
  operands: { names: ['IMAGE', '[PARTITION:]PATH', 'DEST'] },
  async run(args) {
    const [image, spec, dest] = args.operands;
    const { partition, path } = parsePartitionPath(spec);
    return withGuestImage(image, async g => {
      const r = await copyOut(g.fileSystem(partition), path, dest);
      for (const s of r.skipped) process.stderr.write(`skipped: ${s}\n`);
      return 0;
    });
  },
};
