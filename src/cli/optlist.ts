/**
 * qemu-img's `key=value,key=value` option lists (QemuOpts, as `-o` and `--object` take them), which
 * node:util parseArgs does not know: a comma separates entries and `,,` is a literal comma inside a
 * value; the first entry may be a bare value for an implied key (`secret,id=s0` is
 * `qom-type=secret,id=s0`); a later bare `key` means `key=on`.
 */
import { UsageError } from './errors';

export interface OptionListEntry {
  key: string;
  value: string;
}

/** Splits an option list. `what` names the option in errors (the text itself is never quoted). */
export function parseOptionList(text: string, what: string, impliedKey?: string): OptionListEntry[] {
  const entries: OptionListEntry[] = [];
  let i = 0;
  while (i <= text.length) {
    // one entry: up to the next single comma; ",," stays as one comma
    let raw = '';
    for (; i < text.length; i++) {
      if (text[i] === ',') {
        if (text[i + 1] === ',') { raw += ','; i++; continue; }
        break;
      }
      raw += text[i];
    }
    i++;
    const eq = raw.indexOf('=');
    if (eq < 0) {
      if (entries.length === 0 && impliedKey !== undefined) entries.push({ key: impliedKey, value: raw });
      else if (raw === '') throw new UsageError(`${what}: empty entry in the option list`);
      else entries.push({ key: raw, value: 'on' });
    } else {
      const key = raw.slice(0, eq);
      if (!/^[A-Za-z0-9_.-]+$/.test(key)) throw new UsageError(`${what}: an entry has no valid name before "="`);
      entries.push({ key, value: raw.slice(eq + 1) });
    }
  }
  return entries;
}
