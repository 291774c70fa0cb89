import { partitionsReport } from '../../guest/report';
import { withGuestImage } from '../../guest/image';
import { formatSize } from '../../guest/format';
import { JSON_FLAG, OUTPUT, type CommandSpec } from '../command';

export const partitionsCommand: CommandSpec = {
  name: 'partitions',
  summary: 'the guest disk\'s partition table and the file system in each partition',
  usage: ['[--output=human|json] IMAGE'],
  options: [OUTPUT, JSON_FLAG],
  operands: { names: ['IMAGE'] },
  async run(args) {
    const [image] = args.operands;
    const report = await withGuestImage(image, async g => partitionsReport(g), { strict: false });
    if (args.json) {
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
