import { withGuestImage } from '../../guest/image';
import { describeWhose } from '../../guest/whose';
import { JSON_FLAG, OUTPUT, type CommandSpec } from '../command';

export const whoseCommand: CommandSpec = {
  name: 'whose',
  summary: 'the guest file, free space or file-system metadata at a guest offset',
  usage: ['[--output=human|json] IMAGE --guest-offset N'],
  options: [OUTPUT, JSON_FLAG, { long: 'guest-offset', value: 'N', help: 'guest byte offset (K/M/G/T suffixes, 0x for hex)' }],
  operands: { names: ['IMAGE'] },
  async run(args) {
    const [image] = args.operands;
    const offset = args.size('guest-offset');
    const w = await withGuestImage(image, g => g.whose(offset), { strict: false });
    process.stdout.write(args.json ? JSON.stringify(w, null, 2) + '\n' : describeWhose(w) + '\n');
    return 0;
  },
};
