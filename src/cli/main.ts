/**
 * qcow2-lens: the engine's command-line front end. Its JSON output is what the tests and the
 * editor rely on; it mirrors qemu-img's where qemu-img has the same command.
 * Exit codes: 0 success, 1 error (one line on stderr naming file, structure and offset),
 * 64 usage error (EX_USAGE); `check` uses qemu-img check's codes (help.ts lists them).
 */
import { version } from '../../package.json';
import { parseCommandLine, wantsHelp } from './args';
import type { CommandSpec } from './command';
import { commands, loadCommands } from './commands';
import { isUsageError } from './errors';
import { commandHelp, mainHelp } from './help';

const EXIT_USAGE = 64;

/** The named command's spec, loading only its own code. */
async function find(name: string): Promise<CommandSpec | undefined> {
  return commands.find(c => c.name === name)?.load();
}

/** The command name is not echoed: a mistyped line may have put anything first. */
function unknownCommand(): number {
  process.stderr.write(`qcow2-lens: unknown command; the commands are ${commands.map(c => c.name).join(', ')} (qcow2-lens --help)\n`);
  return EXIT_USAGE;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    process.stderr.write(mainHelp(await loadCommands(), version));
    return EXIT_USAGE;
  }
  if (name === '-h' || name === '--help') {
    process.stdout.write(mainHelp(await loadCommands(), version));
    return 0;
  }
  if (name === '-V' || name === '--version') {
    process.stdout.write(`qcow2-lens ${version}\n`);
    return 0;
  }
  if (name === 'help') {
    if (rest.length === 0) {
      process.stdout.write(mainHelp(await loadCommands(), version));
      return 0;
    }
    const cmd = rest.length === 1 ? await find(rest[0]) : undefined;
    if (!cmd) return unknownCommand();
    process.stdout.write(commandHelp(cmd));
    return 0;
  }
  if (name.startsWith('-')) {
    process.stderr.write('qcow2-lens: a command comes first (options follow it); see qcow2-lens --help\n');
    return EXIT_USAGE;
  }
  const cmd = await find(name);
  if (!cmd) return unknownCommand();
  if (wantsHelp(rest)) {
    process.stdout.write(commandHelp(cmd));
    return 0;
  }
  try {
    return await cmd.run(parseCommandLine(cmd, rest));
  } catch (e) {
    // The command ran in its own bundle (build.mjs): its errors are recognised by name, not class.
    if (isUsageError(e)) {
      process.stderr.write(`qcow2-lens ${cmd.name}: ${e.message}\n${cmd.usage.map((u, i) => `${i ? '      ' : 'usage:'} qcow2-lens ${cmd.name} ${u}`).join('\n')}\n(qcow2-lens help ${cmd.name} lists every option)\n`);
      return EXIT_USAGE;
    }
    if (e instanceof Error && e.name === 'Qcow2Error') {
      process.stderr.write(`qcow2-lens: ${e.message}\n`);
      return 1;
    }
    const err = e as NodeJS.ErrnoException;
    process.stderr.write(`qcow2-lens: ${err.code === 'EPIPE' ? 'output closed' : err.message ?? String(e)}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  code => { process.exitCode = code; },
  (e: unknown) => { process.stderr.write(`qcow2-lens: ${String(e)}\n`); process.exitCode = 1; },
);
