import { pipeline } from 'node:stream/promises';
import { withGuestImage } from '../../guest/image';
import { parsePartitionPath } from '../../guest/guest';
import { parseArgs, UsageError } from '../args';
import type { Command } from './index';

export const catCommand: Command = {
  usage: 'IMAGE [PARTITION:]PATH   a guest file\'s bytes on stdout',
  async run(argv) {
    const args = parseArgs(argv, []);
    const [image, spec] = args.positionals;
    if (!image || !spec) throw new UsageError('IMAGE and PATH are required');
    const { partition, path } = parsePartitionPath(spec);
    return withGuestImage(image, async g => {
      await pipeline(await g.fileSystem(partition).createReadStream(path), process.stdout, { end: false });
      return 0;
    });
  },
};
