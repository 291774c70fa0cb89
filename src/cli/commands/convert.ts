import { Qcow2Error } from '../../engine/errors';
import { convert } from '../../engine/ops/convert';
import { parseQemuSize } from '../../engine/ops/options';
import { UsageError } from '../args';
import { FORCE_SHARE, PROGRESS, QUIET, type CommandSpec } from '../command';
import { IMAGE_OPTS, withImageOperands } from '../imageOpts';
import { findSecret, secretBytes } from '../objects';
import { Secret } from '../../engine/crypto/secret';
import { createProgress } from '../progress';
import { optionEntries } from './create';

const SOURCE_FORMATS = ['qcow2', 'raw', 'vpc', 'vmdk'] as const;

/** qemu-img convert options we take so scripts parse, but that change nothing here (said in their help). */
const NO_EFFECT = ['t', 'T', 'm', 'W'];
/** qemu-img convert options we do not do: refused with a message naming them. */
const REFUSED: Record<string, string> = {
  s: '-s is not an option of qemu-img 7.2 convert (it was removed there: "unrecognized option"); use -l SNAPSHOT',
  r: '-r (rate limit) is not supported',
  C: '-C (copy offloading) is not supported',
  salvage: '--salvage is not supported: a read error stops the conversion',
  'target-image-opts': '--target-image-opts is not supported: give the file name, -O and -o',
  bitmaps: '--bitmaps is not supported: persistent bitmaps are not copied',
  'skip-broken-bitmaps': '--skip-broken-bitmaps is not supported (nor is --bitmaps)',
};

export const convertCommand: CommandSpec = {
  name: 'convert',
  summary: 'copy images into a new one (qcow2, raw, vpc, vmdk): the backing chain read through, as qemu-img convert',
  usage: ['[-f FMT] [-O qcow2|raw|vpc|vmdk] [-c] [-o OPTIONS] [-B BACKING [-F FMT]] [-n [--target-is-zero]] [-l SNAPSHOT] [-S SIZE] [-U] [-p] [-q] SRC... DST'],
  options: [
    { short: 'f', value: 'FMT', choices: SOURCE_FORMATS, help: 'format of every SRC (default: probed, as qemu-img)' },
    { short: 'O', value: 'FMT', help: 'output format: qcow2, raw (the default, as qemu-img), vpc or vmdk' },
    { short: 'c', help: 'compress the output\'s clusters (qcow2: zlib or compression_type=zstd; vmdk: accepted, streamOptimized is always compressed)' },
    { short: 'o', value: 'OPTIONS', repeatable: true, help: 'qcow2: cluster_size, compat, refcount_bits, lazy_refcounts, extended_l2, compression_type, preallocation, backing_file, backing_fmt; raw: preallocation; vpc: subformat=dynamic|fixed, force_size; vmdk: subformat=monolithicSparse|streamOptimized, adapter_type, hwversion, compat6, toolsversion, zeroed_grain' },
    { short: 'B', value: 'BACKING', help: 'the output is an overlay of BACKING (qcow2): only what the sources\' top layers allocate is copied' },
    { short: 'F', value: 'FMT', help: 'BACKING\'s format (qemu-img requires it with -B)' },
    { short: 'n', help: 'the target exists (of the -O format, default raw) and is at least as large: write every guest range into it instead of creating it (qcow2 in place, crash-safe; raw in place; vpc, vmdk rewritten whole)' },
    { long: 'target-is-zero', help: 'with -n: the target reads as zeros, zero ranges are not written' },
    { short: 'S', value: 'SIZE', help: 'zero runs of at least SIZE stay sparse (default 4k; 0 = fully allocated output)' },
    { ...FORCE_SHARE, help: 'read sources a running QEMU holds (qemu-img refuses them without -U)' },
    { short: 't', value: 'CACHE', help: 'accepted as qemu-img takes it; the output is always synced once before it is renamed into place' },
    { short: 'T', value: 'CACHE', help: 'accepted as qemu-img takes it (sources are read through the page cache)' },
    { short: 'm', value: 'N', help: 'accepted as qemu-img takes it (writes are in order)' },
    { short: 'W', help: 'accepted as qemu-img takes it (writes are in order)' },
    { short: 'l', value: 'SNAPSHOT', help: 'read the first SRC as of an internal snapshot: snapshot.id=ID, snapshot.name=NAME (or both), or NAME (an id or a name; one SRC only); its backing chain is read as it is now' },
    { short: 's', value: 'SNAPSHOT', help: 'refused, as qemu-img 7.2 refuses it (removed there; -l is its successor)' },
    { short: 'r', value: 'RATE', help: 'not supported (refused)' },
    { short: 'C', help: 'not supported (refused)' },
    { long: 'salvage', help: 'not supported (refused)' },
    { ...IMAGE_OPTS, help: 'every SRC is an option list, as qemu-img takes it: driver=qcow2,file.filename=PATH[,encrypt.key-secret=ID]' },
    { long: 'target-image-opts', help: 'not supported (refused)' },
    { long: 'bitmaps', help: 'not supported (refused)' },
    { long: 'skip-broken-bitmaps', help: 'not supported (refused)' },
    PROGRESS, QUIET,
  ],
  operands: { names: ['SRC', 'DST'], min: 2, max: Number.MAX_SAFE_INTEGER },
  async run(args) {
    for (const [k, msg] of Object.entries(REFUSED)) if (args.has(k)) throw new UsageError(msg);
    void NO_EFFECT;
    const ops = [...args.operands];
    const dest = ops.pop()!;
    if (args.has('image-opts') && args.has('f')) throw new UsageError('--image-opts and -f are mutually exclusive (the driver is in the option list)');
    return withImageOperands(args, ops, async srcs => {
      const sText = args.string('S');
      let minSparse = 4096;
      if (sText !== undefined) {
        const n = parseQemuSize(sText);
        if (n === undefined) throw new Qcow2Error(dest, 'options', undefined, 'Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).', 'unsupported');
        minSparse = n;
      }
      const entries = optionEntries(args.strings('o'));
      const secretId = entries.filter(e => e.key === 'encrypt.key-secret').pop()?.value;
      const secretObj = secretId === undefined ? undefined : findSecret(args.objects, secretId);
      const encryptSecret = secretObj ? Secret.adopt(await secretBytes(secretObj)) : undefined;
      const progress = createProgress({ label: `converting to ${dest}`, quiet: args.quiet, force: args.forceProgress });
      // Ctrl-C stops between writes: the temporary file is removed, nothing is left at DST
      const ac = new AbortController();
      const onSig = () => ac.abort();
      process.once('SIGINT', onSig);
      process.once('SIGTERM', onSig);
      try {
        await convert({
          sources: srcs.map(s => s.path), sourceKeys: srcs.map(s => s.keys), sourceFormat: args.string('f') as (typeof SOURCE_FORMATS)[number] | undefined, output: dest,
          outputFormat: args.string('O'), options: entries, compress: args.has('c'), encryptSecret,
          backing: args.string('B'), backingFormat: args.string('F'), noCreate: args.has('n'), snapshot: args.string('l'), targetIsZero: args.has('target-is-zero'),
          minSparse, forceShare: args.has('force-share'),
        }, (d, t) => progress.update(d, t), ac.signal);
        progress.update(1, 1);
        return 0;
      } finally {
        encryptSecret?.wipe();
        progress.end();
        process.off('SIGINT', onSig);
        process.off('SIGTERM', onSig);
      }
    });
  },
};
