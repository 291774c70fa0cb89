/**
 * The command-line parser every command shares: node:util parseArgs (strict) over the options the
 * command's spec declares, so options may come before or after the operands, `--output=json` and
 * `--output json`, `-r all` and `-rall` all work, `--` ends the options, and an undeclared option
 * is a usage error. Our own code does only what parseArgs cannot: qemu-img's trailing SIZE operand
 * (taken before parsing, as qemu-img resize does, so `-10G` is not read as options), the
 * `key=value,…` lists of --object (optlist.ts, objects.ts) and the size suffixes below.
 * Errors name the option or operand, never a value (errors.ts says why).
 */
import { parseArgs as nodeParseArgs } from 'node:util';
import { COMMON_OPTIONS, optionKey, type CommandSpec, type OptionSpec, type ParsedArgs } from './command';
import { parseOffset } from '../engine/units';
import { UsageError } from './errors';
import { parseObjects, type QemuObject } from './objects';

export { UsageError } from './errors';

type Value = string | boolean | string[];

/** A parsed command line: the operands in order and the options by key (long name, else letter). */
export class Parsed implements ParsedArgs {
  constructor(
    readonly spec: CommandSpec,
    readonly operands: readonly string[],
    private readonly values: ReadonlyMap<string, Value>,
    /** The --object definitions (secrets), parsed; never print them. */
    readonly objects: readonly QemuObject[],
  ) {}

  has(key: string): boolean {
    return this.values.has(key);
  }

  /** The option's value (the last one given), or undefined. */
  string(key: string): string | undefined {
    const v = this.values.get(key);
    if (v === undefined || typeof v === 'boolean') return undefined;
    return Array.isArray(v) ? v[v.length - 1] : v;
  }

  /** Every value of a repeatable option, in order. */
  strings(key: string): string[] {
    const v = this.values.get(key);
    if (v === undefined || typeof v === 'boolean') return [];
    return Array.isArray(v) ? [...v] : [v];
  }

  /** `--output=json` or `--json`. */
  get json(): boolean {
    return this.string('output') === 'json' || this.has('json');
  }

  get quiet(): boolean {
    return this.has('quiet');
  }

  /** -p: progress even when stderr is not a terminal. */
  get forceProgress(): boolean {
    return this.has('progress');
  }

  /** A size option (`--offset 64K`), or `fallback` when absent (required when no fallback). */
  size(key: string, fallback?: number): number {
    const v = this.string(key);
    const name = optionName(this.spec, key);
    if (v === undefined) {
      if (fallback === undefined) throw new UsageError(`${name} is required`);
      return fallback;
    }
    const n = parseOffset(v);
    if (n === undefined) throw new UsageError(`${name} must be a number of bytes (suffixes K, M, G, T; 0x for hex)`);
    return n;
  }
}

/** The options a command accepts: its own and the common ones. */
export function allOptions(spec: CommandSpec): OptionSpec[] {
  return [...spec.options, ...COMMON_OPTIONS];
}

function optionName(spec: CommandSpec, key: string): string {
  const o = allOptions(spec).find(x => optionKey(x) === key);
  return o?.long ? `--${o.long}` : `-${o?.short ?? key}`;
}

/** True when the command line asks for the command's help (-h or --help before any `--`). */
export function wantsHelp(argv: readonly string[]): boolean {
  for (const a of argv) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

/** Parses a command's arguments against its spec. Throws UsageError. */
export function parseCommandLine(spec: CommandSpec, argv: readonly string[]): Parsed {
  const args = [...argv];
  let trailing: string | undefined;
  if (spec.trailingOperand) {
    trailing = args.pop();
    if (trailing === undefined) throw new UsageError(`${spec.trailingOperand} is required`);
  }
  const specs = allOptions(spec);
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const o of specs) {
    const key = optionKey(o);
    options[key] = { type: o.value ? 'string' : 'boolean', ...(o.short && o.long ? { short: o.short } : {}), ...(o.repeatable ? { multiple: true } : {}) };
  }
  let parsed: ReturnType<typeof nodeParseArgs>;
  try {
    parsed = nodeParseArgs({ args, options, allowPositionals: true, strict: true, tokens: true });
  } catch (e) {
    throw new UsageError(describeParseError(e, args, options));
  }
  // parseArgs also takes a one-letter key written long (`--o`); our short-only options are short only
  for (const t of parsed.tokens ?? []) {
    if (t.kind === 'option' && t.rawName.startsWith('--') && t.name.length === 1) throw new UsageError(`unknown option ${t.rawName}`);
  }
  const values = new Map<string, Value>();
  for (const [k, v] of Object.entries(parsed.values)) if (v !== undefined) values.set(k, v as Value);
  for (const o of specs) {
    const v = values.get(optionKey(o));
    if (o.choices && v !== undefined) {
      for (const one of Array.isArray(v) ? v : [v]) {
        if (typeof one !== 'string' || !o.choices.includes(one)) throw new UsageError(`${optionName(spec, optionKey(o))} must be ${o.choices.join(' or ')}`);
      }
    }
  }
  const operands = [...parsed.positionals];
  const names = spec.operands.names;
  const min = spec.operands.min ?? names.length, max = spec.operands.max ?? names.length;
  if (operands.length < min) throw new UsageError(`${names[operands.length] ?? 'an operand'} is required`);
  if (operands.length > max) throw new UsageError(max === 0 ? 'this command takes no operands' : `too many operands (expected ${names.join(' ')})`);
  if (trailing !== undefined) operands.push(trailing);
  return new Parsed(spec, operands, values, parseObjects(values.has('object') ? (values.get('object') as string[]) : []));
}

/**
 * parseArgs's own messages are good but quote what it saw; we re-read the command line leniently
 * (tokens) to name the offending option ourselves and say nothing of any value.
 */
function describeParseError(e: unknown, args: string[], options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>): string {
  const { tokens } = nodeParseArgs({ args, options, allowPositionals: true, strict: false, tokens: true });
  for (const t of tokens) {
    if (t.kind !== 'option') continue;
    const o = options[t.name];
    // rawName is the option as written, without any "=value" (`--foo`, `-x`)
    if (!o) return `unknown option ${t.rawName}`;
    if (o.type === 'string' && t.value === undefined) return `option ${t.rawName} needs a value`;
    if (o.type === 'boolean' && t.inlineValue) return `option ${t.rawName} takes no value`;
  }
  // e.g. `--output -q`: parseArgs refuses a value that looks like an option
  const name = /Option '(-{1,2}[A-Za-z0-9-]+)/.exec((e as Error).message ?? '')?.[1];
  return name ? `option ${name} needs a value (one starting with "-" is written ${name.startsWith('--') ? `${name}=VALUE` : `${name}VALUE`})` : 'invalid command line';
}
