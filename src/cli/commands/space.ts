import { LOCKED_NOTE, spaceReport } from '../../guest/space/report';
import { describeSpace } from '../../guest/space/text';
import { JSON_FLAG, OUTPUT, type CommandSpec } from '../command';
import { IMAGE_OPTS, withImageOperands } from '../imageOpts';

export const spaceCommand: CommandSpec = {
  name: 'space',
  summary: 'where the image file\'s bytes went (metadata, guest files, guest free space, snapshots, leaks, holes) and what compact and sparsify reclaim',
  usage: ['[--output=human|json] [--zero-scan] [--swap] IMAGE', '[--output=human|json] [--zero-scan] [--swap] --object secret,id=ID,file=PATH --image-opts driver=qcow2,file.filename=PATH,encrypt.key-secret=ID'],
  options: [
    OUTPUT, JSON_FLAG,
    { long: 'zero-scan', help: 'read every data cluster to find the all-zero ones (otherwise only host-file holes and zero flags count)' },
    { long: 'swap', help: 'count swap partitions as free space, as sparsify --swap' },
    { ...IMAGE_OPTS, help: 'IMAGE is an option list: driver=qcow2,file.filename=PATH,encrypt.key-secret=ID (an encrypted image\'s guest split needs its passphrase)' },
  ],
  operands: { names: ['IMAGE'] },
  async run(args) {
    return withImageOperands(args, args.operands, async ([{ path, keys }]) => {
      const r = await spaceReport(path, { zeroScan: args.has('zero-scan'), swap: args.has('swap'), keys });
      process.stdout.write(args.json ? JSON.stringify(r, null, 2) + '\n' : describeSpace(r));
      // the JSON on stdout stays whole; the missing passphrase is said on stderr too
      if (args.json && r.notes.includes(LOCKED_NOTE)) process.stderr.write(`qcow2-lens: note: ${path}: ${LOCKED_NOTE}\n`);
      return 0;
    });
  },
};
