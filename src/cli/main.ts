/**
 * qcow2-lens: the engine's command-line front end. Its JSON output is what the tests and the
 * editor rely on; it mirrors qemu-img's where qemu-img has the same command.
 * Exit codes: 0 success, 1 error (one line on stderr naming file, structure and offset),
 * 64 usage error; `check` uses qemu-img check's codes.
 */
import { Qcow2Error } from '../engine/errors';
import { UsageError } from './args';
import { commands } from './commands';

const USAGE = `usage: qcow2-lens <command> [options]
${Object.entries(commands).map(([n, c]) => `  ${n.padEnd(9)}${c.usage}`).join('\n')}
`;

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(USAGE);
    return name ? 0 : 64;
  }
  const cmd = commands[name];
  if (!cmd) {
    process.stderr.write(`qcow2-lens: unknown command "${name}"\n${USAGE}`);
    return 64;
  }
  try {
    return await cmd.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`qcow2-lens ${name}: ${e.message}\nusage: qcow2-lens ${name} ${cmd.usage}\n`);
      return 64;
    }
    if (e instanceof Qcow2Error) {
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
  e => { process.stderr.write(`qcow2-lens: ${String(e)}\n`); process.exitCode = 1; },
);
