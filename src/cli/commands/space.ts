import { spaceReport } from '../../guest/space/report';
import { describeSpace } from '../../guest/space/text';
import { JSON_FLAG, OUTPUT, type CommandSpec } from '../command';

export const spaceCommand: CommandSpec = {
  name: 'space',
  summary: 'where the image file\'s bytes went (metadata, guest files, guest free space, snapshots, leaks, holes) and what compact and sparsify reclaim',
  usage: ['[--output=human|json] [--zero-scan] [--swap] IMAGE'],
  options: [
    OUTPUT, JSON_FLAG,
    { long: 'zero-scan', help: 'read every data cluster to find the all-zero ones (otherwise only host-file holes and zero flags count)' },
    { long: 'swap', help: 'count swap partitions as free space, as sparsify --swap' },
  ],
  operands: { names: ['IMAGE'] },
  async run(args) {
    const [image] = args.operands;
    const r = await spaceReport(image, { zeroScan: args.has('zero-scan'), swap: args.has('swap') });
    process.stdout.write(args.json ? JSON.stringify(r, null, 2) + '\n' : describeSpace(r));
    return 0;
  },
};
