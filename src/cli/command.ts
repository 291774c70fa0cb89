/**
 * What a qcow2-lens command is: a spec (name, summary, usage lines, every option with its help)
 * and a `run` that gets the parsed command line. One file per command under commands/ exports one
 * of these; commands/index.ts lists them. The spec is also the help text, so a flag cannot exist
 * without being documented, and an undeclared flag is a usage error.
 */
import type { QemuObject } from './objects';

/** What a command's `run` gets: the parsed command line (args.ts parses it). */
export interface ParsedArgs {
  /** The operands (positionals), in order; the spec's counts are already checked. */
  readonly operands: readonly string[];
  /** The --object definitions (secrets), parsed; never print them. */
  readonly objects: readonly QemuObject[];
  /** Options are named by key: the long name, else the letter (`optionKey`). */
  has(key: string): boolean;
  /** The option's value (the last one given), or undefined. */
  string(key: string): string | undefined;
  /** Every value of a repeatable option, in order. */
  strings(key: string): string[];
  /** A size option (`--offset 64K`, qemu-img's suffixes), or `fallback` when absent (required without one). */
  size(key: string, fallback?: number): number;
  /** `--output=json` or `--json`. */
  readonly json: boolean;
  /** -q / --quiet. */
  readonly quiet: boolean;
  /** -p / --progress: progress even when stderr is not a terminal. */
  readonly forceProgress: boolean;
}

export interface OptionSpec {
  /** Long name without the dashes (`output` for --output). Omit for a short-only option. */
  long?: string;
  /** One letter (`r` for -r). */
  short?: string;
  /** Placeholder shown in the help when the option takes a value (`FMT`); omit for a flag. */
  value?: string;
  /** Values it accepts, checked by the parser (the error names the option, never the value). */
  choices?: readonly string[];
  /** May be given more than once; the values are collected in order. */
  repeatable?: boolean;
  /** One line for --help. */
  help: string;
}

export interface CommandSpec {
  name: string;
  /** One line, shown in `qcow2-lens --help`. */
  summary: string;
  /** Usage lines without the leading `qcow2-lens NAME ` (e.g. `[options] IMAGE`). */
  usage: readonly string[];
  /**
   * The command's own options. Every command also takes --object and -h/--help (COMMON_OPTIONS);
   * shared ones (OUTPUT, JSON, QUIET, PROGRESS, FORCE_SHARE, FORMAT) are listed here by the command.
   */
  options: readonly OptionSpec[];
  /** Operand (positional) names in order; `min` defaults to all of them, `max` to their count. */
  operands: { names: readonly string[]; min?: number; max?: number };
  /**
   * The last argument is this operand, taken before option parsing, as qemu-img resize takes its
   * SIZE (`-10G` must not be read as an option). Implies one more operand after `operands`.
   */
  trailingOperand?: string;
  /** Exit codes, when not the common ones (0 success, 1 error, 64 usage). */
  exitCodes?: string;
  run(args: ParsedArgs): Promise<number>;
}

/** Options every command takes. Their values are never printed. */
export const OBJECT: OptionSpec = {
  long: 'object', value: 'OBJDEF', repeatable: true,
  help: 'secret,id=ID,data=TEXT | secret,id=ID,file=PATH [,format=raw|base64] — a secret, as qemu-img takes it (file= keeps it out of the process list)',
};
export const HELP: OptionSpec = { long: 'help', short: 'h', help: 'print this help' };
export const COMMON_OPTIONS: readonly OptionSpec[] = [OBJECT, HELP];

/** Shared options a command lists in its `options` when it has them (as qemu-img names them). */
export const OUTPUT: OptionSpec = { long: 'output', value: 'human|json', choices: ['human', 'json'], help: 'output format (default human)' };
export const JSON_FLAG: OptionSpec = { long: 'json', help: 'same as --output=json' };
export const QUIET: OptionSpec = { long: 'quiet', short: 'q', help: 'quiet: no progress, no report (errors and the exit code remain)' };
export const PROGRESS: OptionSpec = { long: 'progress', short: 'p', help: 'show progress even when stderr is not a terminal (on a terminal it is shown anyway)' };
export const FORCE_SHARE: OptionSpec = { long: 'force-share', short: 'U', help: 'open the image even if a running QEMU holds it (read-only; results may be inconsistent)' };
export const FORMAT: OptionSpec = { short: 'f', value: 'qcow2', choices: ['qcow2'], help: 'image format, as qemu-img takes it (qcow2 is the only one read)' };

/** The key an option's value is stored under in Parsed: its long name, else its letter. */
export function optionKey(o: OptionSpec): string {
  const key = o.long ?? o.short;
  if (!key) throw new Error('an option needs a long or a short name');
  return key;
}

/** `-r, --repair=MODE` / `    --json` / `-o OUT`, as the help shows it. */
export function optionLabel(o: OptionSpec): string {
  const short = o.short ? `-${o.short}` : '';
  const long = o.long ? `--${o.long}` : '';
  const value = o.value ? (o.long ? `=${o.value}` : ` ${o.value}`) : '';
  if (short && long) return `${short}, ${long}${value}`;
  return short ? `${short}${value}` : `    ${long}${value}`;
}
