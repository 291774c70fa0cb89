import { commitImage } from '../../engine/ops/commit';
import { PROGRESS, QUIET, type CommandSpec } from '../command';
import { createProgress } from '../progress';

export const commitCommand: CommandSpec = {
  name: 'commit',
  summary: 'merge an overlay into its backing file in place, as qemu-img commit (crash-safe order)',
  usage: ['[-q] [-p] [-f qcow2] [-b BASE] [-d] FILE'],
  options: [
    { short: 'f', value: 'FMT', choices: ['qcow2', 'raw', 'vpc', 'vmdk'], help: 'FILE\'s format (only qcow2 has a backing file)' },
    { short: 'b', value: 'BASE', help: 'commit into this image further down the chain (implies -d)' },
    { short: 'd', help: 'leave FILE as it is (by default it is emptied after the commit)' },
    QUIET, PROGRESS,
  ],
  operands: { names: ['FILE'] },
  async run(args) {
    const [file] = args.operands;
    const progress = createProgress({ label: `committing ${file}`, quiet: args.quiet, force: args.forceProgress });
    try {
      await commitImage(file, { format: args.string('f'), base: args.string('b'), drop: args.has('d'), onProgress: (d, t) => progress.update(d, t) });
    } finally {
      progress.end();
    }
    if (!args.quiet) process.stdout.write('Image committed.\n');
    return 0;
  },
};
