/** The help texts: `qcow2-lens --help` (every command) and `qcow2-lens help CMD` (every flag). */
import { allOptions } from './args';
import { optionLabel, type CommandSpec } from './command';

export const EXIT_CODES = 'Exit codes: 0 success, 1 error (one line on stderr naming the file, the structure and the offset), 64 usage error.';

export function mainHelp(commands: readonly CommandSpec[], version: string): string {
  const width = Math.max(...commands.map(c => c.name.length)) + 2;
  return [
    `qcow2-lens ${version}: look inside QEMU qcow2 disk images, check, repair and compact them (output as qemu-img's).`,
    '',
    'usage: qcow2-lens COMMAND [options] OPERANDS…',
    '       qcow2-lens help COMMAND     (or: qcow2-lens COMMAND --help)   every option of a command',
    '       qcow2-lens --version',
    '',
    'Commands:',
    ...commands.map(c => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    'Every command takes --object secret,id=ID,data=TEXT|file=PATH (as qemu-img) and -h/--help.',
    EXIT_CODES,
    ...commands.filter(c => c.exitCodes).map(c => `  ${c.name}: ${c.exitCodes ?? ''}`),
    '',
  ].join('\n');
}

/** Help lines are wrapped to fit 100 columns. */
const WIDTH = 100;

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) { lines.push(line); line = word; }
    else line = line ? `${line} ${word}` : word;
  }
  return [...lines, line];
}

export function commandHelp(c: CommandSpec): string {
  const opts = allOptions(c);
  const labels = opts.map(optionLabel);
  const width = Math.min(32, Math.max(...labels.map(l => l.length)) + 2);
  const lines = [
    ...c.usage.map((u, i) => `${i === 0 ? 'usage: ' : '       '}qcow2-lens ${c.name} ${u}`),
    '',
    c.summary,
    '',
    'Options:',
    ...opts.map((o, i) => {
      const label = labels[i];
      const help = wrap(o.repeatable ? `${o.help} (repeatable)` : o.help, WIDTH - width - 2).join(`\n  ${''.padEnd(width)}`);
      return label.length + 2 > width ? `  ${label}\n  ${''.padEnd(width)}${help}` : `  ${label.padEnd(width)}${help}`;
    }),
    '',
    c.exitCodes ? `Exit codes: ${c.exitCodes}` : EXIT_CODES,
    '',
  ];
  return lines.join('\n');
}
