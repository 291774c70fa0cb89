import { editBitmap, type BitmapOp } from '../../engine/ops/bitmaps';
import { UsageError } from '../args';
import { type CommandSpec } from '../command';
import { sizeOperand } from './create';

export const bitmapCommand: CommandSpec = {
  name: 'bitmap',
  summary: 'add, remove, clear, enable, disable or merge persistent dirty bitmaps, as qemu-img bitmap',
  usage: ['(--add [--disable] [-g GRANULARITY] | --remove | --clear | --enable | --disable | --merge SOURCE [-b SOURCE_FILE [-F qcow2]]) [-f qcow2] FILE BITMAP'],
  options: [
    { long: 'add', help: 'create BITMAP (enabled unless --disable)' },
    { long: 'remove', help: 'delete BITMAP' },
    { long: 'clear', help: 'clear every bit of BITMAP' },
    { long: 'enable', help: 'let QEMU record writes in BITMAP' },
    { long: 'disable', help: 'stop recording writes in BITMAP' },
    { long: 'merge', value: 'SOURCE', help: 'set in BITMAP every bit set in SOURCE (a bitmap of this image, or of SOURCE_FILE with -b)' },
    { short: 'g', value: 'GRANULARITY', help: 'with --add: bytes per bit (a power of two; default the cluster size within 4 KiB..64 KiB)' },
    { short: 'b', value: 'SOURCE_FILE', help: 'with --merge: SOURCE is a bitmap of this qcow2 image (of the same virtual size)' },
    { short: 'F', value: 'FMT', choices: ['qcow2'], help: 'format of SOURCE_FILE (only qcow2 has persistent bitmaps)' },
    { short: 'f', value: 'qcow2', choices: ['qcow2'], help: 'image format' },
  ],
  operands: { names: ['FILE', 'BITMAP'] },
  async run(args) {
    const [file, name] = args.operands;
    const ops = ['add', 'remove', 'clear', 'enable', 'merge'].filter(o => args.has(o));
    const disable = args.has('disable');
    if (ops.length > 1 || (ops.length === 0 && !disable) || (disable && ops.length === 1 && ops[0] !== 'add')) {
      throw new UsageError('exactly one of --add, --remove, --clear, --enable, --disable, --merge is needed (--disable may go with --add)');
    }
    if (args.has('g') && ops[0] !== 'add') throw new UsageError('-g goes with --add');
    if ((args.has('b') || args.has('F')) && ops[0] !== 'merge') throw new UsageError('-b and -F go with --merge');
    if (args.has('F') && !args.has('b')) throw new UsageError('-F needs -b');
    let op: BitmapOp;
    if (ops[0] === 'add') op = { op: 'add', granularity: args.has('g') ? sizeOperand(args.string('g')!) : undefined, disabled: disable };
    else if (ops[0] === 'merge') op = { op: 'merge', source: args.string('merge')!, sourceFile: args.string('b') };
    else op = { op: (ops[0] ?? 'disable') as 'remove' | 'clear' | 'enable' | 'disable' };
    await editBitmap(file, name, op);
    return 0;
  },
};
