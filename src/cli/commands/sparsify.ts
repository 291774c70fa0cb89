import { sparsifyImage } from '../../guest/sparsify';
import { UsageError } from '../args';
import { JSON_FLAG, OUTPUT, PROGRESS, QUIET, type CommandSpec } from '../command';
import { IMAGE_OPTS, withImageOperands } from '../imageOpts';
import { createProgress } from '../progress';

export const sparsifyCommand: CommandSpec = {
  name: 'sparsify',
  summary: 'compact, also dropping every cluster that lies wholly in guest free space (ext2/3/4, FAT; swap with --swap)',
  usage: ['[-q] [-p] (-o OUT | --in-place) [--swap] [--compress zlib|zstd] [--output=human|json] [--object OBJDEF --image-opts] IMAGE'],
  options: [
    { short: 'o', value: 'OUT', help: 'write the sparsified image here' },
    { long: 'in-place', help: 'replace IMAGE (through a temporary file, renamed over it when complete)' },
    { long: 'swap', help: 'also drop swap partitions\' contents (their header kept)' },
    { long: 'compress', value: 'zlib|zstd', choices: ['zlib', 'zstd'], help: 'compress the data clusters' },
    OUTPUT, JSON_FLAG, QUIET, PROGRESS,
    { ...IMAGE_OPTS, help: 'IMAGE is an option list: driver=qcow2,file.filename=PATH,encrypt.key-secret=ID (an encrypted image stays encrypted, same LUKS header and key)' },
  ],
  operands: { names: ['IMAGE'] },
  async run(args) {
    return withImageOperands(args, args.operands, async ([{ path, keys }]) => {
      const output = args.string('o');
      if (!output === !args.has('in-place')) throw new UsageError('give exactly one of -o OUT and --in-place');
      const compress = args.string('compress') as 'zlib' | 'zstd' | undefined;
      const progress = createProgress({ label: `sparsifying ${path}`, quiet: args.quiet, force: args.forceProgress });
      const ac = new AbortController();
      const onSig = () => ac.abort();
      process.once('SIGINT', onSig);
      process.once('SIGTERM', onSig);
      try {
        const r = await sparsifyImage(path, { output, compress, swap: args.has('swap'), keys, signal: ac.signal, onProgress: (d, t) => progress.update(d, t) });
        progress.end();
        if (args.json) process.stdout.write(JSON.stringify(r) + '\n');
        else if (!args.quiet) {
          process.stdout.write(`${r.output}: ${r.bytesBefore} bytes before, ${r.bytesAfter} bytes after (${(100 * r.bytesAfter / Math.max(1, r.bytesBefore)).toFixed(1)}%); ${r.droppedClusters} clusters of guest free space dropped\n`);
          for (const n of r.notes) process.stderr.write(`note: ${n}\n`);
        }
        return 0;
      } finally {
        progress.end();
        process.off('SIGINT', onSig);
        process.off('SIGTERM', onSig);
      }
    });
  },
};
