import { pipeline } from 'node:stream/promises';
import { withGuestImage } from '../../guest/image';
import { parsePartitionPath } from '../../guest/guest';
import type { CommandSpec } from '../command';

export const catCommand: CommandSpec = {
  name: 'cat',
  summary: 'a guest file\'s bytes on stdout',
  usage: ['IMAGE [PARTITION:]PATH'],
  options: [],
  operands: { names: ['IMAGE', '[PARTITION:]PATH'] },
  async run(args) {
    const [image, spec] = args.operands;
    const { partition, path } = parsePartitionPath(spec);
    return withGuestImage(image, async g => {
      await pipeline(await g.fileSystem(partition).createReadStream(path), process.stdout, { end: false });
      return 0;
    });
  },
};
