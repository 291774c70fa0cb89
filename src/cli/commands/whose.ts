import { withGuestImage } from '../../guest/image';
import { describeWhose } from '../../guest/whose';
import { numberFlag, parseArgs, UsageError } from '../args';
import type { Command } from './index';

export const whoseCommand: Command = {
  usage: '[--json] IMAGE --guest-offset N   the guest file, free space or file-system metadata at a guest offset',
  async run(argv) {
    const args = parseArgs(argv, ['--guest-offset']);
    const [image] = args.positionals;
    if (!image) throw new UsageError('IMAGE is required');
    const offset = numberFlag(args, '--guest-offset');
    const w = await withGuestImage(image, g => g.whose(offset), { strict: false });
    process.stdout.write(args.flags.has('--json') ? JSON.stringify(w, null, 2) + '\n' : describeWhose(w) + '\n');
    return 0;
  },
};
