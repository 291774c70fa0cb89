import { CompareError, compareImages } from '../../engine/ops/compare';
import { IMAGE_FORMATS } from '../../engine/ops/compare/open';
import { FORCE_SHARE, JSON_FLAG, OUTPUT, PROGRESS, QUIET, type CommandSpec } from '../command';
import { IMAGE_OPTS, withImageOperands } from '../imageOpts';
import { createProgress } from '../progress';

export const compareCommand: CommandSpec = {
  name: 'compare',
  summary: 'compare two images\' guest contents, as qemu-img compare (exit 0 identical, 1 different, 2 error)',
  usage: ['[-q] [-p] [-s] [-U] [-f FMT] [-F FMT] [--output=human|json] [--object OBJDEF] [--image-opts] A B'],
  options: [
    { short: 'f', value: 'FMT', choices: IMAGE_FORMATS, help: 'format of A (default: probed)' },
    { short: 'F', value: 'FMT', choices: IMAGE_FORMATS, help: 'format of B (default: probed)' },
    { short: 's', long: 'strict', help: 'strict mode: the sizes and every extent\'s block status must match too' },
    FORCE_SHARE, QUIET, PROGRESS, OUTPUT, { ...IMAGE_OPTS, help: 'A and B are option lists, as qemu-img takes them: driver=qcow2,file.filename=PATH[,encrypt.key-secret=ID]' },
    { ...JSON_FLAG, help: 'same as --output=json: the verdict and every differing range, not only the first' },
  ],
  operands: { names: ['A', 'B'] },
  exitCodes: '0 identical, 1 different, 2 an image cannot be opened, 3 block status failed, 4 read failed, 64 usage',
  async run(args) {
    return withImageOperands(args, args.operands, async ([oa, ob]) => {
      const [a, b] = [oa.path, ob.path];
      const progress = createProgress({ label: `comparing ${a} with ${b}`, quiet: args.quiet || args.json, force: args.forceProgress });
      try {
        const r = await compareImages(a, b, {
          formatA: args.string('f'), formatB: args.string('F'), strict: args.has('strict'), forceShare: args.has('force-share'),
          all: args.json, onProgress: (d, t) => progress.update(d, t), keysA: oa.keys, keysB: ob.keys,
        });
        progress.end();
        if (args.json) {
          process.stdout.write(JSON.stringify({
            identical: r.identical, 'exit-code': r.exitCode, 'size-a': r.sizeA, 'size-b': r.sizeB, 'first-mismatch': r.firstMismatch ?? null,
            messages: r.messages, differences: r.differences, 'status-mismatches': r.statusMismatches,
          }, null, 4) + '\n');
        } else if (!args.quiet) {
          process.stdout.write(r.messages.map(m => m + '\n').join(''));
        }
        return r.exitCode;
      } catch (e) {
        progress.end();
        if (e instanceof CompareError) {
          process.stderr.write(`qcow2-lens: ${e.message}\n`);
          return e.exitCode;
        }
        throw e;
      }
    });
  },
};
