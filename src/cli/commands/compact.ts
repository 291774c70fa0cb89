import { compactImage } from '../../engine/ops/compact';
import { JSON_FLAG, OUTPUT, PROGRESS, QUIET, type CommandSpec } from '../command';
import { IMAGE_OPTS, withImageOperands } from '../imageOpts';
import { createProgress } from '../progress';

export const compactCommand: CommandSpec = {
  name: 'compact',
  summary: 'rewrite an image keeping only clusters that carry data (snapshots, bitmaps and backing file kept)',
  usage: ['[-q] [-p] [-o OUT] [--compress zlib|zstd] [--cluster-size N] [--output=human|json] [--object OBJDEF --image-opts] IMAGE'],
  options: [
    { short: 'o', value: 'OUT', help: 'write the compacted image here (default: replace IMAGE, through a temporary file)' },
    { long: 'compress', value: 'zlib|zstd', choices: ['zlib', 'zstd'], help: 'compress the data clusters' },
    { long: 'cluster-size', value: 'N', help: 're-cluster to N bytes (512 to 2M, a power of two)' },
    OUTPUT, JSON_FLAG, QUIET, PROGRESS,
    { ...IMAGE_OPTS, help: 'IMAGE is an option list: driver=qcow2,file.filename=PATH,encrypt.key-secret=ID (an encrypted image stays encrypted, same LUKS header and key)' },
  ],
  operands: { names: ['IMAGE'] },
  async run(args) {
    return withImageOperands(args, args.operands, async ([{ path, keys }]) => {
      const output = args.string('o');
      const compress = args.string('compress') as 'zlib' | 'zstd' | undefined;
      const clusterSize = args.has('cluster-size') ? args.size('cluster-size') : undefined;
      const progress = createProgress({ label: `compacting ${path}`, quiet: args.quiet, force: args.forceProgress });
      const ac = new AbortController();
      const onSig = () => ac.abort();
      process.once('SIGINT', onSig);
      process.once('SIGTERM', onSig);
      try {
        const r = await compactImage(path, { output, compress, clusterSize, key: keys?.({ path, depth: 0 }), signal: ac.signal, onProgress: (d, t) => progress.update(d, t) });
        progress.end();
        if (args.json) process.stdout.write(JSON.stringify(r) + '\n');
        else if (!args.quiet) process.stdout.write(`${r.output}: ${r.bytesBefore} bytes before, ${r.bytesAfter} bytes after (${(100 * r.bytesAfter / Math.max(1, r.bytesBefore)).toFixed(1)}%)\n`);
        return 0;
      } finally {
        progress.end();
        process.off('SIGINT', onSig);
        process.off('SIGTERM', onSig);
      }
    });
  },
};
