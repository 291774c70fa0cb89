import { copyOut } from '../../guest/copyOut';
import { withGuestImage } from '../../guest/image';
import { parsePartitionPath } from '../../guest/guest';
import { parseArgs, UsageError } from '../args';
import type { Command } from './index';

export const cpCommand: Command = {
  usage: 'IMAGE [PARTITION:]PATH DEST   copy a guest file or folder out (recursively; modes, times and symlinks kept)',
  async run(argv) {
    const args = parseArgs(argv, []);
    const [image, spec, dest] = args.positionals;
    if (!image || !spec || !dest) throw new UsageError('IMAGE, PATH and DEST are required');
    const { partition, path } = parsePartitionPath(spec);
    return withGuestImage(image, async g => {
      const r = await copyOut(g.fileSystem(partition), path, dest);
      for (const s of r.skipped) process.stderr.write(`skipped: ${s}\n`);
      return 0;
    });
  },
};
