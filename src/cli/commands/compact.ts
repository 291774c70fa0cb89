import { compactImage } from '../../engine/compact';
import { numberFlag, parseArgs, UsageError } from '../args';
import type { Command } from './index';

export const compactCommand: Command = {
  usage: 'IMAGE [-o OUT] [--compress zlib|zstd] [--cluster-size N] [--json]   keep only clusters that carry data (snapshots, bitmaps, backing kept)',
  async run(argv) {
    const args = parseArgs(argv, ['-o', '--compress', '--cluster-size']);
    const [path] = args.positionals;
    if (!path) throw new UsageError('IMAGE is required');
    const output = args.flags.get('-o');
    if (output === true) throw new UsageError('-o needs a file name');
    const compress = args.flags.get('--compress');
    if (compress !== undefined && compress !== 'zlib' && compress !== 'zstd') throw new UsageError('--compress is zlib or zstd');
    const clusterSize = args.flags.has('--cluster-size') ? numberFlag(args, '--cluster-size') : undefined;
    const ac = new AbortController();
    const onSig = () => ac.abort();
    process.once('SIGINT', onSig);
    process.once('SIGTERM', onSig);
    try {
      const r = await compactImage(path, { output, compress, clusterSize, signal: ac.signal });
      if (args.flags.has('--json')) process.stdout.write(JSON.stringify(r) + '\n');
      else process.stdout.write(`${r.output}: ${r.bytesBefore} bytes before, ${r.bytesAfter} bytes after (${(100 * r.bytesAfter / Math.max(1, r.bytesBefore)).toFixed(1)}%)\n`);
      return 0;
    } finally {
      process.off('SIGINT', onSig);
      process.off('SIGTERM', onSig);
    }
  },
};
