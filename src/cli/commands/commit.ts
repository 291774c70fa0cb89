import { commitImage } from '../../engine/ops/commit';
import { PROGRESS, QUIET, type CommandSpec } from '../command';
import { IMAGE_OPTS, withImageOperands } from '../imageOpts';
import { createProgress } from '../progress';

export const commitCommand: CommandSpec = {
  name: 'commit',
  summary: 'merge an overlay into its backing file in place, as qemu-img commit (crash-safe order)',
  usage: ['[-q] [-p] [-f qcow2] [-b BASE] [-d] [--object OBJDEF] [--image-opts] FILE'],
  options: [
    { short: 'f', value: 'FMT', choices: ['qcow2', 'raw', 'vpc', 'vmdk'], help: 'FILE\'s format (only qcow2 has a backing file)' },
    { short: 'b', value: 'BASE', help: 'commit into this image further down the chain (implies -d)' },
    { short: 'd', help: 'leave FILE as it is (by default it is emptied after the commit)' },
    QUIET, PROGRESS, { ...IMAGE_OPTS, help: 'FILE is an option list, as qemu-img takes it: driver=qcow2,file.filename=PATH[,encrypt.key-secret=ID][,backing.encrypt.key-secret=ID] (an encrypted base is written encrypted)' },
  ],
  operands: { names: ['FILE'] },
  async run(args) {
    await withImageOperands(args, args.operands, async ([op]) => {
      const file = op.path;
      const progress = createProgress({ label: `committing ${file}`, quiet: args.quiet, force: args.forceProgress });
      try {
        await commitImage(file, { format: args.string('f'), base: args.string('b'), drop: args.has('d'), keys: op.keys, onProgress: (d, t) => progress.update(d, t) });
      } finally {
        progress.end();
      }
    });
    if (!args.quiet) process.stdout.write('Image committed.\n');
    return 0;
  },
};
