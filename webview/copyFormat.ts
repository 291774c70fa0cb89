/** "Copy as" formats for selected bytes, and parsing of Find's hex patterns (pure: tested in Node). */

export type CopyFormat = 'hex' | 'c' | 'base64';

export function formatBytesAs(bytes: Uint8Array, format: CopyFormat): string {
  switch (format) {
    case 'hex': return Array.from(bytes, b => b.toString(16).padStart(2, '0')).join(' ');
    case 'base64': {
      let bin = '';
      for (const b of bytes) bin += String.fromCharCode(b);
      return btoa(bin);
    }
    case 'c': {
      const lines: string[] = [];
      for (let i = 0; i < bytes.length; i += 12) lines.push('  ' + Array.from(bytes.subarray(i, i + 12), b => `0x${b.toString(16).padStart(2, '0')}`).join(', '));
      return `unsigned char data[${bytes.length}] = {\n${lines.join(',\n')}\n};`;
    }
  }
}

/** "4d 5a", "4d5a", "0x4d 0x5a" → bytes; undefined when it is not whole hex bytes. */
export function parseHexPattern(text: string): Uint8Array | undefined {
  const clean = text.replace(/0x/gi, '').replace(/[\s,]+/g, '');
  if (!clean || clean.length % 2 || !/^[0-9a-f]+$/i.test(clean)) return undefined;
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** Text → its UTF-8 bytes. */
export function textPattern(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** The UTF-8 character starting at bytes[0] (or the decoded text of a longer selection), for the inspector. */
export function utf8Preview(bytes: Uint8Array, selectionLength: number): string {
  if (!bytes.length) return '—';
  let n = selectionLength > 1 ? Math.min(bytes.length, selectionLength, 32) : 1;
  if (selectionLength <= 1) {
    const b = bytes[0];
    n = b < 0x80 ? 1 : b >> 5 === 6 ? 2 : b >> 4 === 14 ? 3 : b >> 3 === 30 ? 4 : 1;
    if (n > bytes.length) return 'incomplete';
  }
  const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes.subarray(0, n));
  const shown = Array.from(text, c => (c.charCodeAt(0) < 0x20 || c === '\u007f' ? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}` : c)).join('');
  return selectionLength <= 1 && text === '\ufffd' ? 'invalid' : shown;
}
