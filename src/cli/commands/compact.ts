import { compactImage } from '../../engine/ops/compact';
import { JSON_FLAG, OUTPUT, PROGRESS, QUIET, type CommandSpec } from '../command';
import { UsageError } from '../errors';
import { IMAGE_OPTS, secretById, withImageOperands } from '../imageOpts';
import { createProgress } from '../progress';

export const compactCommand: CommandSpec = {
  name: 'compact',
  summary: 'rewrite an image keeping only clusters that carry data (snapshots, bitmaps and backing file kept)',
  usage: ['[-q] [-p] [-o OUT] [--compress zlib|zstd] [--cluster-size N] [--output=human|json] [--object OBJDEF --image-opts [--new-secret ID [--iter-time MS]]] IMAGE'],
  options: [
    { short: 'o', value: 'OUT', help: 'write the compacted image here (default: replace IMAGE, through a temporary file)' },
    { long: 'compress', value: 'zlib|zstd', choices: ['zlib', 'zstd'], help: 'compress the data clusters' },
    { long: 'cluster-size', value: 'N', help: 're-cluster to N bytes (512 to 2M, a power of two)' },
    OUTPUT, JSON_FLAG, QUIET, PROGRESS,
    { ...IMAGE_OPTS, help: 'IMAGE is an option list: driver=qcow2,file.filename=PATH,encrypt.key-secret=ID (an encrypted image stays encrypted, same LUKS header and key)' },
    { long: 'new-secret', value: 'ID', help: 'an encrypted image: the output gets a new master key and LUKS header (same algorithms) with this --object secret as its only passphrase' },
    { long: 'iter-time', value: 'MS', help: 'with --new-secret: PBKDF2 milliseconds for the key slot (default 2000, as qemu-img)' },
  ],
  operands: { names: ['IMAGE'] },
  async run(args) {
    return withImageOperands(args, args.operands, async ([{ path, keys }]) => {
      const output = args.string('o');
      const compress = args.string('compress') as 'zlib' | 'zstd' | undefined;
      const clusterSize = args.has('cluster-size') ? args.size('cluster-size') : undefined;
      const newId = args.string('new-secret'), iter = args.string('iter-time');
      if (iter !== undefined && newId === undefined) throw new UsageError('--iter-time applies with --new-secret only');
      const iterTimeMs = iter === undefined ? undefined : Number(iter);
      if (iterTimeMs !== undefined && !(Number.isInteger(iterTimeMs) && iterTimeMs > 0)) throw new UsageError('--iter-time takes a whole number of milliseconds');
      const passphrase = newId === undefined ? undefined : await secretById(args.objects, newId, '--new-secret');
      const progress = createProgress({ label: `compacting ${path}`, quiet: args.quiet, force: args.forceProgress });
      const ac = new AbortController();
      const onSig = () => ac.abort();
      process.once('SIGINT', onSig);
      process.once('SIGTERM', onSig);
      try {
        const newKey = passphrase && { passphrase, iterTimeMs, signal: ac.signal };
        const r = await compactImage(path, { output, compress, clusterSize, key: keys?.({ path, depth: 0 }), newKey, signal: ac.signal, onProgress: (d, t) => progress.update(d, t) });
        progress.end();
        if (args.json) process.stdout.write(JSON.stringify(r) + '\n');
        else if (!args.quiet) process.stdout.write(`${r.output}: ${r.bytesBefore} bytes before, ${r.bytesAfter} bytes after (${(100 * r.bytesAfter / Math.max(1, r.bytesBefore)).toFixed(1)}%)\n`);
        return 0;
      } finally {
        passphrase?.wipe();
        progress.end();
        process.off('SIGINT', onSig);
        process.off('SIGTERM', onSig);
      }
    });
  },
};
