import { partitionsReport } from '../../guest/report';
import { withGuestImage } from '../../guest/image';
import { formatSize } from '../../guest/format';
import { parseArgs, UsageError } from '../args';
import type { Command } from './index';

export const partitionsCommand: Command = {
  usage: '[--json] IMAGE   the guest disk\'s partition table and the file system in each partition',
  async run(argv) {
    const args = parseArgs(argv, []);
    const [image] = args.positionals;
    if (!image) throw new UsageError('IMAGE is required');
    const report = await withGuestImage(image, async g => partitionsReport(g), { strict: false });
    if (args.flags.has('--json')) {
      process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      return 0;
    }
    process.stdout.write(`table: ${report.table}${report.id ? ` (${report.id})` : ''}\n`);
    for (const p of report.partitions) {
      const fs = p.fs ?? '-';
      const what = [p.typeName, p.label ? `"${p.label}"` : '', p.browsable ? '' : p.fs && p.fs !== 'extended' ? '(not browsable)' : '', p.error ? `error: ${p.error}` : ''].filter(Boolean).join(' ');
      process.stdout.write(`${String(p.number).padStart(3)}  start ${String(p.start).padStart(14)}  ${formatSize(p.size).padStart(10)}  ${fs.padEnd(8)} ${what}\n`);
    }
    for (const w of report.warnings) process.stderr.write(`warning: ${w}\n`);
    return 0;
  },
};
