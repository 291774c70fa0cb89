/**
 * JSON text as `JSON.stringify(value, null, indent)` writes it, with one addition: a bigint is
 * printed as its exact decimal digits. qemu-img prints 64-bit integers exactly (snapshot icount,
 * VM state sizes), and a JavaScript number would round anything beyond 2^53.
 */
export type JsonValue = string | number | bigint | boolean | null | undefined | JsonValue[] | { [key: string]: JsonValue };

/** An integral number as the JSON printer should print it: a bigint past 2^53, whose digits are the double's exact value. */
export function exactInteger(n: number): number | bigint {
  return Number.isSafeInteger(n) ? n : BigInt(n);
}

export function stringifyExact(value: unknown, indent = 4): string {
  return write(value, '', ' '.repeat(indent)) ?? 'null';
}

function write(v: unknown, at: string, step: string): string | undefined {
  switch (typeof v) {
    case 'bigint': return v.toString();
    case 'number': return Number.isFinite(v) ? String(v) : 'null';
    case 'string': return JSON.stringify(v);
    case 'boolean': return v ? 'true' : 'false';
    case 'undefined': case 'function': case 'symbol': return undefined;
    default: break;
  }
  if (v === null) return 'null';
  const inner = at + step;
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    return `[\n${v.map(x => inner + (write(x, inner, step) ?? 'null')).join(',\n')}\n${at}]`;
  }
  const parts: string[] = [];
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    const s = write(x, inner, step);
    if (s !== undefined) parts.push(`${inner}${JSON.stringify(k)}: ${s}`);
  }
  return parts.length === 0 ? '{}' : `{\n${parts.join(',\n')}\n${at}}`;
}
