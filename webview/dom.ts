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
  const run = () => {
    if (!queued) return;
    queued = false;
    fn();
  };
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(run);
    // a webview the browser does not paint (behind a modal editor, in a background tab) gets no
    // animation frames; the timer makes sure the work still happens
    setTimeout(run, 100);
  };
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Calls fn when VS Code changes the theme (it rewrites the variables on <html> and the classes on <body>). */
export function onThemeChange(fn: () => void): void {
  const mo = new MutationObserver(fn);
  mo.observe(document.documentElement, { attributes: true, attributeFilter: ['style', 'class'] });
  mo.observe(document.body, { attributes: true, attributeFilter: ['class'] });
}

/** Calls fn when the element's width changes by 2 px or more: a view's own height changes (and a scrollbar appearing) must not loop. */
export function onWidthChange(element: HTMLElement, fn: () => void): void {
  let lastWidth = -1;
  new ResizeObserver(() => {
    const w = element.clientWidth;
    if (Math.abs(w - lastWidth) < 2) return;
    lastWidth = w;
    fn();
  }).observe(element);
}

/** Sizes a canvas to w × h CSS pixels at the screen's pixel ratio (only when that changed: resizing clears it); returns the ratio. */
export function sizeCanvas(canvas: HTMLCanvasElement, w: number, h: number): number {
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
    canvas.width = w * dpr;
    canvas.height = h * dpr;
    canvas.style.width = `${w}px`;
    canvas.style.height = `${h}px`;
  }
  return dpr;
}
