import * as fs from 'node:fs';
import { Qcow2Error } from '../../engine/errors';
import { Qcow2Image } from '../../engine/image/image';
import { forEachMapEntry } from '../../engine/image/map';
import { formatMeasureHuman, formatMeasureJson, luksHeaderSize, measure, type MeasureFormat, type MeasureSource, type Preallocation, type Qcow2MeasureOptions } from '../../engine/ops/measure';
import { parseBool, parseQemuSize, OptionError } from '../../engine/ops/options';
import { probeIsQcow2 } from '../../engine/ops/resize';
import { UsageError } from '../args';
import { JSON_FLAG, OUTPUT, type CommandSpec } from '../command';
import { optionEntries, sizeOperand } from './create';

/** The source's length and data runs (qemu-img measure's block status walk) and its bitmaps. */
async function sourceOf(file: string, fmt: string | undefined): Promise<MeasureSource> {
  if ((fmt ?? (probeIsQcow2(file) ? 'qcow2' : 'raw')) === 'raw') {
    const size = fs.statSync(file).size;
    return { virtualSize: size, dataRuns: [{ start: 0, length: size }] };
  }
  const img = await Qcow2Image.open(file);
  try {
    const runs: { start: number; length: number }[] = [];
    await forEachMapEntry(img, e => { if (e.data && !e.zero) runs.push({ start: e.start, length: e.length }); });
    const bitmaps = img.header.version >= 3 ? img.bitmaps.map(b => ({ name: b.name, granularity: 2 ** b.granularityBits })) : undefined;
    return { virtualSize: img.header.size, dataRuns: runs, bitmaps };
  } finally {
    await img.close();
  }
}

function measureOptions(lists: readonly string[]): Qcow2MeasureOptions {
  const o: Qcow2MeasureOptions = {};
  let luks = false;
  const cipher: { cipherAlg?: string; cipherMode?: string } = {};
  for (const { key, value } of optionEntries(lists)) {
    switch (key) {
      case 'size': { const n = parseQemuSize(value); if (n === undefined) throw new OptionError("Parameter 'size' expects a size"); o.size = n; break; }
      case 'cluster_size': { const n = parseQemuSize(value); if (n === undefined) throw new OptionError("Parameter 'cluster_size' expects a size"); o.clusterSize = n; break; }
      case 'refcount_bits': o.refcountBits = Number(value); break;
      case 'compat': o.compat = value; break;
      case 'extended_l2': o.extendedL2 = parseBool(key, value); break;
      case 'preallocation': o.preallocation = value as Preallocation; break;
      case 'backing_file': o.backingFile = true; break;
      case 'encrypt.format': luks = value === 'luks'; break;
      case 'encrypt.cipher-alg': cipher.cipherAlg = value; break;
      case 'encrypt.cipher-mode': cipher.cipherMode = value; break;
      default: break;
    }
  }
  if (luks) o.luksHeaderSize = luksHeaderSize(cipher);
  return o;
}

export const measureCommand: CommandSpec = {
  name: 'measure',
  summary: 'how large a new image would be, as qemu-img measure',
  usage: ['[--output=human|json] [-O qcow2|raw] [-o OPTIONS] (--size SIZE | [-f FMT] FILE)'],
  options: [
    { short: 'O', value: 'FMT', help: 'output format (default raw, as qemu-img)' },
    { short: 'o', value: 'OPTIONS', repeatable: true, help: 'the output\'s creation options (cluster_size, compat, refcount_bits, extended_l2, preallocation, backing_file, encrypt.format)' },
    { long: 'size', value: 'SIZE', help: 'measure a new image of this size instead of FILE' },
    { short: 'f', value: 'FMT', choices: ['qcow2', 'raw'], help: 'FILE\'s format (default: probed)' },
    OUTPUT, JSON_FLAG,
  ],
  operands: { names: ['FILE'], min: 0 },
  async run(args) {
    const [file] = args.operands;
    const sizeText = args.string('size');
    if ((file === undefined) === (sizeText === undefined)) throw new UsageError('either --size SIZE or FILE is needed (not both)');
    const fmt = (args.string('O') ?? 'raw') as MeasureFormat;
    let opts: Qcow2MeasureOptions;
    try {
      opts = measureOptions(args.strings('o'));
    } catch (e) {
      if (e instanceof OptionError) throw new Qcow2Error('measure', 'options', undefined, e.message, 'unsupported');
      throw e;
    }
    if (sizeText !== undefined) opts.size = sizeOperand(sizeText);
    const source = file === undefined ? undefined : await sourceOf(file, args.string('f'));
    const r = measure(fmt, opts, source);
    process.stdout.write(args.json ? formatMeasureJson(r) : formatMeasureHuman(r));
    return 0;
  },
};
