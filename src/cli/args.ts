/** A small argument parser shared by the CLI commands: positionals and --flag / --flag value / -x value. */
export interface ParsedArgs {
  positionals: string[];
  flags: Map<string, string | true>;
}

export class UsageError extends Error {}

export function parseArgs(argv: string[], valueFlags: string[]): ParsedArgs {
  const positionals: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('-') && a !== '-') {
      const eq = a.indexOf('=');
      const name = eq > 0 ? a.slice(0, eq) : a;
      if (eq > 0) flags.set(name, a.slice(eq + 1));
      else if (valueFlags.includes(name)) {
        if (i + 1 >= argv.length) throw new UsageError(`${name} needs a value`);
        flags.set(name, argv[++i]);
      } else flags.set(name, true);
    } else positionals.push(a);
  }
  return { positionals, flags };
}

export function numberFlag(args: ParsedArgs, name: string, fallback?: number): number {
  const v = args.flags.get(name);
  if (v === undefined) {
    if (fallback === undefined) throw new UsageError(`${name} is required`);
    return fallback;
  }
  if (v === true) throw new UsageError(`${name} needs a value`);
  const n = parseSize(v);
  if (n === undefined) throw new UsageError(`${name}: "${v}" is not a number`);
  return n;
}

/** Accepts 1234, 0x4d2, and sizes with K/M/G/T suffixes (powers of 1024), as qemu-img does. */
export function parseSize(s: string): number | undefined {
  const m = /^(0x[0-9a-f]+|\d+)([kmgtKMGT]?)$/.exec(s.trim());
  if (!m) return undefined;
  const base = Number(m[1]);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const n = base * mult;
  return Number.isSafeInteger(n) ? n : undefined;
}
