import { Qcow2Error } from '../../engine/errors';
import type { Preallocation } from '../../engine/ops/measure';
import { probeIsQcow2, ResizeRefused, resizeQcow2, resizeRaw, type SizeSpec } from '../../engine/ops/resize';
import { QUIET, type CommandSpec } from '../command';
import { sizeOperand } from './create';

export const resizeCommand: CommandSpec = {
  name: 'resize',
  summary: 'grow or shrink an image in place, as qemu-img resize (crash-safe order)',
  usage: ['[-q] [-f qcow2|raw] [--shrink] [--preallocation=off|metadata|falloc|full] FILE [+|-]SIZE'],
  options: [
    { short: 'f', value: 'FMT', choices: ['qcow2', 'raw'], help: 'image format (default: probed)' },
    { long: 'shrink', help: 'allow shrinking (the data past the new end is lost)' },
    { long: 'preallocation', value: 'MODE', choices: ['off', 'metadata', 'falloc', 'full'], help: 'preallocate the added area' },
    QUIET,
  ],
  operands: { names: ['FILE'] },
  trailingOperand: 'SIZE',
  async run(args) {
    const [file, sizeText] = args.operands;
    const rel = sizeText.startsWith('+') ? 1 : sizeText.startsWith('-') ? -1 : 0;
    const n = sizeOperand(rel ? sizeText.slice(1) : sizeText);
    const spec: SizeSpec = rel ? { delta: rel * n } : { absolute: n };
    const fmt = args.string('f') ?? (probeIsQcow2(file) ? 'qcow2' : 'raw');
    const opts = { shrink: args.has('shrink'), preallocation: args.string('preallocation') as Preallocation | undefined };
    try {
      if (fmt === 'qcow2') await resizeQcow2(file, spec, opts);
      else await resizeRaw(file, spec, opts);
    } catch (e) {
      if (e instanceof ResizeRefused) throw new Qcow2Error(file, 'size', undefined, e.message, 'unsupported');
      throw e;
    }
    if (!args.quiet) process.stdout.write('Image resized.\n');
    return 0;
  },
};
