import { amendQcow2 } from '../../engine/ops/amend';
import { UsageError } from '../args';
import { QUIET, type CommandSpec } from '../command';
import { optionEntries } from './create';

export const amendCommand: CommandSpec = {
  name: 'amend',
  summary: 'change an image\'s compat level or lazy refcounts in place, as qemu-img amend',
  usage: ['[-q] [-f qcow2] -o OPTIONS FILE'],
  options: [
    { short: 'o', value: 'OPTIONS', repeatable: true, help: 'compat=0.10|1.1, lazy_refcounts=on|off (refcount_bits: its current value only)' },
    { short: 'f', value: 'qcow2', choices: ['qcow2'], help: 'image format' },
    { short: 'p', help: 'accepted as qemu-img takes it (the change is one header write)' },
    QUIET,
  ],
  operands: { names: ['FILE'] },
  async run(args) {
    const lists = args.strings('o');
    if (!lists.length) throw new UsageError('-o OPTIONS is required');
    await amendQcow2(args.operands[0], optionEntries(lists));
    return 0;
  },
};
