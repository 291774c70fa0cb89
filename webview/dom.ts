/** Small DOM and formatting helpers for the webview (no framework; CSP-safe: no innerHTML of data, no inline styles by attribute). */

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: { className?: string; text?: string; attrs?: Record<string, string>; title?: string } = {},
  ...children: Array<Node | string | null | undefined | false>
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (props.className) e.className = props.className;
  if (props.text !== undefined) e.textContent = props.text;
  if (props.title) e.title = props.title;
  if (props.attrs) for (const [k, v] of Object.entries(props.attrs)) e.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

export function button(label: string, onClick: () => void, opts: { title?: string; className?: string; attrs?: Record<string, string> } = {}): HTMLButtonElement {
  const b = el('button', { text: label, title: opts.title, className: opts.className, attrs: { type: 'button', ...(opts.attrs ?? {}) } });
  b.addEventListener('click', onClick);
  return b;
}

export function hex(n: number, pad = 0): string {
  return '0x' + n.toString(16).padStart(pad, '0');
}

export function formatBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let u = 0, v = n;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return u === 0 ? `${n} bytes` : `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[u]}`;
}

/** Parses "0x1f000", "1f000h", "1048576", "1M", "4k" into a byte offset (NaN when invalid). */
export function parseOffset(text: string): number {
  const t = text.trim().toLowerCase().replace(/_/g, '');
  let m = /^0x([0-9a-f]+)$/.exec(t) ?? /^([0-9a-f]+)h$/.exec(t);
  if (m) return parseInt(m[1], 16);
  m = /^(\d+)\s*([kmgt]?)i?b?$/.exec(t);
  if (m) return Number(m[1]) * 1024 ** ' kmgt'.indexOf(m[2] || ' ');
  return NaN;
}

export function decodeBase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function clear(e: Element): void {
  while (e.firstChild) e.firstChild.remove();
}

/** Runs `fn` at most once per animation frame. */
export function rafThrottle(fn: () => void): () => void {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; fn(); });
  };
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
