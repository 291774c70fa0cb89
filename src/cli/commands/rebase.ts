import { rebaseImage } from '../../engine/ops/rebase';
import { UsageError } from '../args';
import { PROGRESS, QUIET, type CommandSpec } from '../command';
import { IMAGE_OPTS, withImageOperands } from '../imageOpts';
import { createProgress } from '../progress';

export const rebaseCommand: CommandSpec = {
  name: 'rebase',
  summary: 'change an overlay\'s backing file in place, as qemu-img rebase (safe: copies what differs; -u: the name only; -b "": flatten)',
  usage: ['[-q] [-p] [-f qcow2] [-u] -b BACKING [-F FMT] [--object OBJDEF] [--image-opts] FILE', '[-q] -u FILE'],
  options: [
    { short: 'f', value: 'FMT', choices: ['qcow2', 'raw', 'vpc', 'vmdk'], help: 'FILE\'s format (only qcow2 has a backing file)' },
    { short: 'b', value: 'BACKING', help: 'the new backing file, as the header will name it ("" removes it, copying its data in: flatten)' },
    { short: 'F', value: 'FMT', help: 'the new backing file\'s format (qcow2, raw, vpc, vmdk); needed with a new name, as in qemu-img 7.2' },
    { short: 'u', help: 'unsafe: only the name and format change (no backing file is opened)' },
    QUIET, PROGRESS, { ...IMAGE_OPTS, help: 'FILE is an option list, as qemu-img takes it: driver=qcow2,file.filename=PATH[,encrypt.key-secret=ID][,backing.encrypt.key-secret=ID] (an encrypted FILE is written encrypted)' },
  ],
  operands: { names: ['FILE'] },
  async run(args) {
    const backing = args.string('b');
    if (!args.has('u') && backing === undefined) throw new UsageError('Must specify backing file (-b) or use unsafe mode (-u)');
    return withImageOperands(args, args.operands, async ([op]) => {
      const file = op.path;
      const progress = createProgress({ label: `rebasing ${file}`, quiet: args.quiet, force: args.forceProgress });
      try {
        await rebaseImage(file, { format: args.string('f'), backing, backingFormat: args.string('F'), unsafe: args.has('u'), keys: op.keys, onProgress: (d, t) => progress.update(d, t) });
      } finally {
        progress.end();
      }
      return 0;
    });
  },
};
