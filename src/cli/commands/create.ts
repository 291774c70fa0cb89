import { Qcow2Error } from '../../engine/errors';
import { createQcow2, createRaw } from '../../engine/ops/create/create';
import { formattingLine, OptionError, parseQcow2CreateOptions, parseQemuSize, parseRawCreateOptions, type OptionEntry } from '../../engine/ops/options';
import { UsageError } from '../args';
import { QUIET, type CommandSpec } from '../command';
import { parseOptionList } from '../optlist';
import { findSecret, secretBytes } from '../objects';
import { Secret } from '../../engine/crypto/secret';

/** The -o lists in order (repeated -o are joined as qemu-img joins them), with -b / -F appended. */
export function optionEntries(lists: readonly string[]): OptionEntry[] {
  const out: OptionEntry[] = [];
  for (const l of lists) {
    if (l === 'help' || l === '?') throw new UsageError('-o help is not supported; see qcow2-lens help create');
    out.push(...parseOptionList(l, '-o'));
  }
  return out;
}

/** A qemu-img SIZE operand (k, M, G, T, P, E suffixes; fractions before a suffix). */
export function sizeOperand(s: string): number {
  const n = parseQemuSize(s);
  if (n === undefined) throw new UsageError('Invalid image size specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.');
  return n;
}

export function optionFailure(file: string, e: unknown): never {
  if (e instanceof OptionError) throw new Qcow2Error(file, 'options', undefined, e.message, 'unsupported');
  throw e;
}

export const createCommand: CommandSpec = {
  name: 'create',
  summary: 'create a new qcow2 or raw image, laid out as qemu-img create lays it out',
  usage: ['[-q] [-f qcow2|raw] [-o OPTIONS] [-b BACKING -F FMT] [-u] FILE [SIZE]'],
  options: [
    { short: 'f', value: 'FMT', choices: ['qcow2', 'raw'], help: 'image format (default raw, as qemu-img)' },
    { short: 'o', value: 'OPTIONS', repeatable: true, help: 'cluster_size, preallocation=off|metadata|falloc|full, compat=0.10|1.1, refcount_bits, lazy_refcounts, extended_l2, compression_type, backing_file, backing_fmt, data_file, data_file_raw; encrypt.format=luks, encrypt.key-secret=ID (an --object secret), encrypt.cipher-alg, encrypt.cipher-mode, encrypt.ivgen-alg, encrypt.ivgen-hash-alg, encrypt.hash-alg, encrypt.iter-time' },
    { short: 'b', value: 'BACKING', help: 'backing file (recorded as given; relative to FILE\'s folder)' },
    { short: 'F', value: 'FMT', help: 'backing file format (qemu-img requires it with -b)' },
    { short: 'u', help: 'unsafe: do not open the backing file (SIZE is then required)' },
    QUIET,
  ],
  operands: { names: ['FILE', 'SIZE'], min: 1 },
  async run(args) {
    const [file, sizeText] = args.operands;
    const fmt = args.string('f') ?? 'raw';
    const entries = optionEntries(args.strings('o'));
    const b = args.string('b'), F = args.string('F');
    if (b !== undefined) entries.push({ key: 'backing_file', value: b });
    if (F !== undefined) entries.push({ key: 'backing_fmt', value: F });
    let size = sizeText === undefined ? undefined : sizeOperand(sizeText);
    const given = new Map(entries.map(e => [e.key, e.value] as [string, string]));
    try {
      if (fmt === 'raw') {
        if (b !== undefined) throw new OptionError("Invalid parameter 'backing_file'");
        const r = parseRawCreateOptions(entries);
        size ??= r.size;
        if (!args.quiet && size !== undefined) process.stdout.write(formattingLine(file, 'raw', given, size));
        await createRaw(file, size, r.preallocation);
        return 0;
      }
      const o = parseQcow2CreateOptions(entries);
      if (o.backingFile !== undefined && o.backingFmt === undefined) {
        throw new OptionError('Backing file specified without backing format');
      }
      size ??= o.size;
      const req = { ...o, size, unsafe: args.has('u') };
      if (size === undefined && (o.backingFile === undefined || req.unsafe)) throw new OptionError('Image creation needs a size parameter');
      let shown = size;
      if (shown === undefined) {
        const { backingSize } = await import('../../engine/ops/create/create');
        shown = await backingSize(file, o.backingFile!, o.backingFmt);
        req.size = shown;
      }
      if (!args.quiet) process.stdout.write(formattingLine(file, 'qcow2', given, shown));
      // Ctrl-C stops between writes; the temporary file is removed, nothing is left at FILE
      const ac = new AbortController();
      const onSig = () => ac.abort();
      process.once('SIGINT', onSig);
      const secretObj = o.encrypt ? findSecret(args.objects, o.encrypt.keySecret) : undefined;
      const encryptSecret = secretObj ? Secret.adopt(await secretBytes(secretObj)) : undefined;
      try {
        await createQcow2(file, { ...req, signal: ac.signal, encryptSecret });
      } finally {
        encryptSecret?.wipe();
        process.off('SIGINT', onSig);
      }
      return 0;
    } catch (e) {
      optionFailure(file, e);
    }
  },
};
