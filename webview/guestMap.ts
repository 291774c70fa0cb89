/**
 * The guest-disk map: the virtual disk as a strip of cells on a canvas, each cell coloured by what
 * its bytes read from (allocated in this file, compressed, encrypted, a backing file — each depth
 * its own shade —, zero, unallocated), theme colours only (CSS variables --guest-*). Zoom is a
 * power-of-two number of clusters per cell, from the whole disk ("Fit") down to one cluster; the
 * host summarises just the cells shown (protocol getGuestRuns), never a per-cluster array, so a
 * 1 TiB sparse disk costs what its L1/L2 tables cost. A click (or Enter) picks a cell: its first
 * byte of the kind shown opens in the Disk view and its L1/L2 entry is selected in the tree.
 *
 * Keyboard: arrows move, + and - zoom, Home/End, Enter picks. A text alternative (the cells merged
 * into runs, in words) sits under the canvas for screen readers; a summary line says how much of
 * the disk this file holds. Other views highlight guest ranges with the document event
 * `qcow2lens:highlightGuest` ({ ranges: [{start, length}], label }; no ranges clears).
 */
import type { GuestBucket, GuestRunKind, GuestRunsReply } from '../src/protocol';
import { GUEST_RUN_KINDS } from '../src/protocol';
import { formatBytes } from '../src/engine/units';
import { button, clear, el, errorText, hex, onThemeChange, onWidthChange, rafThrottle, sizeCanvas } from './dom';

const ROWS = 4;
const CELL = 12;
/** Cells listed in the text alternative before "… and N more". */
const MAX_TEXT_RUNS = 200;
export const HIGHLIGHT_EVENT = 'qcow2lens:highlightGuest';

export interface GuestMapHost {
  getRuns(start: number, length: number, buckets: number): Promise<Omit<GuestRunsReply, 'type' | 'requestId'>>;
  /** A cell was picked: show the guest byte `offset` (the first byte of the cell's kind). */
  onPick(offset: number): void;
  onStateChange(): void;
  /** The file of a chain layer (depth ≥ 1), for the legend. */
  layerName(depth: number): string | undefined;
}

export const GUEST_KIND_LABELS: Record<GuestRunKind, string> = {
  data: 'Allocated in this file',
  compressed: 'Compressed',
  encrypted: 'Encrypted',
  backing: 'From backing file',
  zero: 'Zero',
  unallocated: 'Unallocated',
};

function kindText(kind: GuestRunKind, depth: number): string {
  return kind === 'backing' ? `from backing file at depth ${depth}` : kind === 'data' ? 'allocated in this file' : kind === 'unallocated' ? 'unallocated (reads zeros)' : kind;
}

/** "1 run", "412 runs". */
export function plural(n: number, one: string, many = one + 's'): string {
  return `${n} ${n === 1 ? one : many}`;
}

function cssKey(kind: GuestRunKind, depth: number): string {
  return kind === 'backing' ? `backing-${Math.max(1, Math.min(4, depth))}` : kind;
}

interface Highlight { start: number; length: number }

export class GuestMap {
  readonly element: HTMLElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly focusBox: HTMLDivElement;
  private readonly zoomLabel: HTMLSpanElement;
  private readonly summaryLine: HTMLDivElement;
  private readonly hoverLine: HTMLDivElement;
  private readonly highlightLine: HTMLDivElement;
  private readonly legend: HTMLElement;
  private readonly textAlt: HTMLElement;
  private colors = new Map<string, string>();
  private size = 0;
  private clusterSize = 65536;
  /** Bytes per cell: clusterSize × 2^k. */
  bucketBytes = 65536;
  /** First guest byte of the first cell shown (a multiple of bucketBytes). */
  start = 0;
  private fitted = true;
  private cells: GuestBucket[] = [];
  private cellsKey = '';
  private seq = 0;
  /** The focused cell's first byte (keyboard and clicks). */
  selected: number | undefined;
  private highlights: Highlight[] = [];
  private highlightLabel = '';
  private readonly schedule = rafThrottle(() => this.draw());
  private draws = 0;
  /** The whole disk's totals, for the summary line (asked once per image). */
  summaryText = '';

  constructor(private readonly host: GuestMapHost) {
    this.canvas = el('canvas', { className: 'guest-canvas', attrs: { role: 'img', 'aria-label': 'Guest disk map: what each part of the virtual disk reads from' } });
    this.textAlt = el('ul', { className: 'sr-only guest-runs', attrs: { id: 'guest-map-runs', 'aria-label': 'Guest disk runs shown' } });
    this.focusBox = el('div', {
      className: 'guest-scroll',
      attrs: { tabindex: '0', role: 'group', 'aria-label': 'Guest disk map; arrow keys move, + and - zoom, Enter shows the bytes and the L1/L2 entry', 'aria-describedby': 'guest-map-runs' },
    }, this.canvas);
    this.zoomLabel = el('span', { className: 'map-zoom' });
    this.summaryLine = el('div', { className: 'guest-summary', attrs: { role: 'status' }, text: 'Reading the disk\'s mapping…' });
    this.hoverLine = el('div', { className: 'map-hover guest-hover', attrs: { 'aria-live': 'polite' }, text: 'Hover a cell to see what that part of the disk reads from.' });
    this.highlightLine = el('div', { className: 'guest-highlight-line' });
    this.highlightLine.hidden = true;
    this.legend = el('div', { className: 'legend guest-legend', attrs: { 'aria-label': 'Guest map legend' } });
    this.element = el('div', { className: 'guest-map' },
      el('div', { className: 'pane-toolbar' },
        el('span', { className: 'pane-title', text: 'Disk map' }),
        button('−', () => this.zoomOut(), { title: 'Zoom out (more of the disk per cell)', attrs: { 'aria-label': 'Zoom out the disk map' } }),
        button('+', () => this.zoomIn(), { title: 'Zoom in (down to one cluster per cell)', attrs: { 'aria-label': 'Zoom in the disk map' } }),
        button('Fit', () => this.fit(), { title: 'Show the whole disk', attrs: { 'aria-label': 'Show the whole disk' } }),
        this.zoomLabel),
      this.summaryLine, this.focusBox, this.hoverLine, this.highlightLine, this.legend, this.textAlt);
    this.canvas.addEventListener('click', e => { const i = this.cellAt(e); if (i !== undefined) this.pickCell(i); });
    this.canvas.addEventListener('mousemove', e => { const i = this.cellAt(e); if (i !== undefined) this.hoverLine.textContent = this.describeCell(i); });
    this.canvas.addEventListener('wheel', e => {
      if (this.fitted || e.deltaY === 0) return;
      e.preventDefault();
      this.pan(Math.sign(e.deltaY) * this.cols);
    }, { passive: false });
    this.focusBox.addEventListener('keydown', e => this.onKey(e));
    document.addEventListener(HIGHLIGHT_EVENT, e => {
      const d = (e as CustomEvent<{ ranges?: Highlight[]; label?: string }>).detail ?? {};
      this.highlight(Array.isArray(d.ranges) ? d.ranges : [], typeof d.label === 'string' ? d.label : '');
    });
    onThemeChange(() => { this.readColors(); this.schedule(); });
    // a zoomed window keeps its start and the selected cell in view when the width (cells a row) changes
    onWidthChange(this.focusBox, () => {
      if (this.fitted) { this.fit(false); return; }
      this.start = this.clampStart(this.start);
      if (this.selected !== undefined) this.bringIntoView(this.selected);
      this.load();
    });
  }

  private readColors(): void {
    const cs = getComputedStyle(this.element);
    this.colors.clear();
    for (const k of ['data', 'compressed', 'encrypted', 'zero', 'unallocated', 'backing-1', 'backing-2', 'backing-3', 'backing-4', 'highlight', 'selection']) {
      this.colors.set(k, cs.getPropertyValue(`--guest-${k}`).trim() || '#888');
    }
  }

  private get cols(): number {
    return Math.max(8, Math.floor((this.focusBox.clientWidth || 600) / CELL));
  }
  private get cellCount(): number {
    return this.cols * ROWS;
  }
  private get maxBucket(): number {
    let b = this.clusterSize;
    while (Math.ceil(this.size / b) > this.cellCount) b *= 2;
    return b;
  }

  /** Starts (or restarts after a refresh) with a disk of `size` bytes. */
  reset(size: number, clusterSize: number, view?: { bucketBytes?: number; start?: number; selected?: number }): void {
    this.size = size;
    this.clusterSize = clusterSize;
    this.cellsKey = '';
    this.summaryText = '';
    this.readColors();
    this.selected = view?.selected;
    if (view?.bucketBytes && view.bucketBytes >= clusterSize && view.bucketBytes < this.maxBucket) {
      this.fitted = false;
      this.bucketBytes = view.bucketBytes;
      this.start = this.clampStart(view.start ?? 0);
      this.load();
    } else {
      this.fit(false);
    }
    void this.loadSummary();
  }

  private async loadSummary(): Promise<void> {
    if (this.size === 0) { this.summaryLine.textContent = 'The disk is empty (0 bytes).'; return; }
    try {
      const r = await this.host.getRuns(0, this.size, 1);
      const extra: string[] = [];
      if (r.bytes.zero) extra.push(`${formatBytes(r.bytes.zero)} zero`);
      if (r.bytes.backing) extra.push(`${formatBytes(r.bytes.backing)} from ${r.chainDepth === 1 ? 'the backing file' : 'backing files'}`);
      this.summaryText = `${formatBytes(r.allocatedBytes)} of ${formatBytes(this.size)} allocated in ${plural(r.allocatedRuns, 'run')}${extra.length ? ` · ${extra.join(' · ')}` : ''}`;
      this.summaryLine.textContent = this.summaryText;
      this.summaryLine.classList.remove('error');
    } catch (e) {
      this.summaryLine.textContent = `Cannot read the disk's mapping: ${errorText(e)}`;
      this.summaryLine.classList.add('error');
    }
  }

  private clampStart(s: number): number {
    const b = this.bucketBytes;
    const maxStart = Math.max(0, Math.ceil(this.size / b) - this.cellCount) * b;
    return Math.max(0, Math.min(maxStart, Math.floor(s / b) * b));
  }

  /** The whole disk in view. */
  fit(notify = true): void {
    this.fitted = true;
    this.bucketBytes = this.maxBucket;
    this.start = 0;
    this.load();
    if (notify) this.host.onStateChange();
  }

  private setBucket(b: number): void {
    const around = this.selected ?? this.start + Math.floor(this.cellCount / 2) * this.bucketBytes;
    this.bucketBytes = Math.max(this.clusterSize, Math.min(this.maxBucket, b));
    this.fitted = this.bucketBytes === this.maxBucket;
    this.start = this.fitted ? 0 : this.clampStart(around - Math.floor(this.cellCount / 2) * this.bucketBytes);
    this.load();
    this.host.onStateChange();
  }

  zoomIn(): void { this.setBucket(this.bucketBytes / 2); }
  zoomOut(): void { this.setBucket(this.bucketBytes * 2); }

  private pan(cells: number): void {
    this.start = this.clampStart(this.start + cells * this.bucketBytes);
    this.load();
    this.host.onStateChange();
  }

  private load(): void {
    const length = Math.max(0, Math.min(this.size - this.start, this.cellCount * this.bucketBytes));
    // whole cells are asked for (the host cuts them at the disk's end), so every cell keeps its size
    const buckets = Math.ceil(length / this.bucketBytes);
    const key = `${this.start}:${length}:${this.bucketBytes}`;
    const per = this.bucketBytes / this.clusterSize;
    this.zoomLabel.textContent = `${plural(per, 'cluster')} per cell (${formatBytes(this.bucketBytes)}) · ${this.start ? formatBytes(this.start) : '0'} – ${formatBytes(this.start + length)}`;
    this.canvas.dataset.bucketBytes = String(this.bucketBytes);
    this.canvas.dataset.start = String(this.start);
    this.canvas.dataset.cols = String(this.cols); // with bucketBytes, before the next frame draws
    this.layout();
    if (key === this.cellsKey || length === 0) { this.schedule(); return; }
    const seq = ++this.seq;
    this.host.getRuns(this.start, buckets * this.bucketBytes, buckets).then(r => {
      if (seq !== this.seq) return;
      this.cells = r.buckets;
      this.cellsKey = key;
      this.buildLegend(r);
      this.buildText();
      this.schedule();
    }, e => {
      if (seq !== this.seq) return;
      this.hoverLine.textContent = `Cannot read the disk's mapping: ${errorText(e)}`;
    });
  }

  /** Cells in the window (fewer than cols × ROWS at the disk's end and for a small disk). */
  private get shownCells(): number {
    return Math.max(0, Math.ceil(Math.min(this.size - this.start, this.cellCount * this.bucketBytes) / this.bucketBytes));
  }

  private layout(): void {
    const w = this.cols * CELL, h = Math.max(1, Math.min(ROWS, Math.ceil(this.shownCells / this.cols))) * CELL;
    sizeCanvas(this.canvas, w, h);
  }

  private buildLegend(r: Omit<GuestRunsReply, 'type' | 'requestId'>): void {
    clear(this.legend);
    const seen = new Set(this.cells.map(c => cssKey(c.kind, c.depth)));
    for (const kind of GUEST_RUN_KINDS) {
      const depths = kind === 'backing' ? r.backingByDepth.map((_, d) => d).filter(d => d > 0) : [0];
      for (const d of depths) {
        const key = cssKey(kind, d);
        if (!seen.has(key) && !(kind === 'data' || kind === 'unallocated')) continue;
        const file = kind === 'backing' ? this.host.layerName(d) : undefined;
        const name = kind === 'backing' ? `Backing depth ${d}${file ? ` (${file})` : ''}` : GUEST_KIND_LABELS[kind];
        const item = el('span', { className: 'legend-item' }, el('span', { className: `swatch guest-${key}`, attrs: { 'aria-hidden': 'true' } }), el('span', { text: name }));
        item.dataset.kind = key;
        this.legend.append(item);
      }
    }
    if (this.highlights.length) {
      const item = el('span', { className: 'legend-item' }, el('span', { className: 'swatch guest-highlight', attrs: { 'aria-hidden': 'true' } }), el('span', { text: this.highlightLabel || 'Highlighted' }));
      item.dataset.kind = 'highlight';
      this.legend.append(item);
    }
  }

  /** The cells shown, merged into runs, in words (the canvas's text alternative). */
  private buildText(): void {
    clear(this.textAlt);
    const runs: Array<{ start: number; end: number; kind: GuestRunKind; depth: number }> = [];
    for (const c of this.cells) {
      const s = c.at - ((c.at - this.start) % this.bucketBytes);
      const e = Math.min(this.size, s + this.bucketBytes);
      const last = runs[runs.length - 1];
      if (last && last.kind === c.kind && last.depth === c.depth && last.end === s) last.end = e;
      else runs.push({ start: s, end: e, kind: c.kind, depth: c.kind === 'backing' ? c.depth : 0 });
    }
    for (const r of runs.slice(0, MAX_TEXT_RUNS)) {
      const li = el('li', { text: `${hex(r.start)} – ${hex(r.end)} (${formatBytes(r.end - r.start)}): ${kindText(r.kind, r.depth)}` });
      li.dataset.start = String(r.start);
      li.dataset.end = String(r.end);
      li.dataset.kind = r.kind;
      li.dataset.depth = String(r.depth);
      this.textAlt.append(li);
    }
    if (runs.length > MAX_TEXT_RUNS) this.textAlt.append(el('li', { text: `… and ${runs.length - MAX_TEXT_RUNS} more runs` }));
  }

  private cellRange(i: number): { start: number; end: number } {
    const start = this.start + i * this.bucketBytes;
    return { start, end: Math.min(this.size, start + this.bucketBytes) };
  }

  private highlighted(i: number): boolean {
    const { start, end } = this.cellRange(i);
    return this.highlights.some(h => h.start < end && h.start + h.length > start);
  }

  private draw(): void {
    if (!this.colors.size) this.readColors();
    this.layout();
    const cols = this.cols, dpr = window.devicePixelRatio || 1;
    const ctx = this.canvas.getContext('2d');
    this.canvas.dataset.draws = String(++this.draws);
    this.canvas.dataset.bucketBytes = String(this.bucketBytes);
    this.canvas.dataset.start = String(this.start);
    this.canvas.dataset.cols = String(cols);
    this.canvas.dataset.cell = String(CELL);
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cols * CELL, ROWS * CELL);
    const loaded = this.cellsKey !== '';
    const selCell = this.selected === undefined ? -1 : Math.floor((this.selected - this.start) / this.bucketBytes);
    let lit = 0;
    const n = loaded ? this.cells.length : this.shownCells;
    for (let i = 0; i < n; i++) {
      const x = (i % cols) * CELL, y = Math.floor(i / cols) * CELL;
      const c = this.cells[i];
      ctx.globalAlpha = loaded && c ? 1 : 0.3;
      ctx.fillStyle = this.colors.get(c ? cssKey(c.kind, c.depth) : 'unallocated') ?? '#888';
      ctx.fillRect(x, y, CELL - 1, CELL - 1);
      ctx.globalAlpha = 1;
      if (this.highlights.length && this.highlighted(i)) {
        lit++;
        ctx.strokeStyle = this.colors.get('highlight') ?? '#ff0';
        ctx.lineWidth = 2;
        ctx.strokeRect(x + 1, y + 1, CELL - 3, CELL - 3);
      }
      if (i === selCell) {
        ctx.strokeStyle = this.colors.get('selection') ?? '#fff';
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.moveTo(x, y + CELL - 2);
        ctx.lineTo(x + CELL - 1, y + CELL - 2);
        ctx.moveTo(x, y + 1);
        ctx.lineTo(x + CELL - 1, y + 1);
        ctx.stroke();
      }
    }
    this.canvas.dataset.highlighted = String(lit);
    this.canvas.dataset.selectedCell = String(selCell);
  }

  private cellAt(e: MouseEvent): number | undefined {
    const rect = this.canvas.getBoundingClientRect();
    const col = Math.floor((e.clientX - rect.left) / CELL), row = Math.floor((e.clientY - rect.top) / CELL);
    if (col < 0 || col >= this.cols || row < 0 || row >= ROWS) return undefined;
    const i = row * this.cols + col;
    return this.cellRange(i).start < this.size ? i : undefined;
  }

  /** What cell `i` holds, in words (hover, keyboard focus). */
  describeCell(i: number): string {
    const { start, end } = this.cellRange(i);
    const c = this.cells[i];
    const span = `${hex(start)} – ${hex(end)} (${formatBytes(end - start)})`;
    if (!c) return `${span}: loading…`;
    const share = c.used && c.used < end - start && c.kind !== 'unallocated' ? `, ${formatBytes(c.used)} of it used` : '';
    return `${span}: ${kindText(c.kind, c.depth)}${c.at !== start ? ` from ${hex(c.at)}` : ''}${share}`;
  }

  private pickCell(i: number): void {
    const c = this.cells[i];
    const offset = c?.at ?? this.cellRange(i).start;
    this.selected = offset;
    this.hoverLine.textContent = this.describeCell(i);
    this.schedule();
    this.host.onPick(offset);
    this.host.onStateChange();
  }

  /** Marks the cell holding guest byte `offset` (from the hex view or the tree) and brings it into view. */
  select(offset: number | undefined): void {
    this.selected = offset;
    if (offset !== undefined && this.size && (offset < this.start || offset >= this.start + this.cellCount * this.bucketBytes)) {
      this.start = this.clampStart(offset - Math.floor(this.cellCount / 2) * this.bucketBytes);
      this.load();
    }
    this.schedule();
  }

  /** Draws the guest ranges highlighted (empty: clears). */
  highlight(ranges: Highlight[], label = ''): void {
    this.highlights = ranges.filter(r => Number.isFinite(r.start) && Number.isFinite(r.length) && r.length > 0);
    this.highlightLabel = label;
    if (this.highlights.length) {
      const total = this.highlights.reduce((a, r) => a + r.length, 0);
      this.highlightLine.textContent = `Highlighted${label ? ` ${label}` : ''}: ${plural(this.highlights.length, 'range')}, ${formatBytes(total)}`;
      this.highlightLine.hidden = false;
    } else {
      this.highlightLine.hidden = true;
      this.highlightLine.textContent = '';
    }
    // zoomed in away from every highlighted range: bring the first one into view
    const windowEnd = this.start + this.cellCount * this.bucketBytes;
    const first = this.highlights[0];
    if (first && !this.fitted && !this.highlights.some(r => r.start < windowEnd && r.start + r.length > this.start)) {
      this.start = this.clampStart(first.start - Math.floor(this.cellCount / 2) * this.bucketBytes);
      this.load();
    }
    const swatch = this.legend.querySelector('[data-kind="highlight"]');
    if (swatch) swatch.remove();
    if (this.highlights.length) {
      const item = el('span', { className: 'legend-item' }, el('span', { className: 'swatch guest-highlight', attrs: { 'aria-hidden': 'true' } }), el('span', { text: label || 'Highlighted' }));
      item.dataset.kind = 'highlight';
      this.legend.append(item);
    }
    this.schedule();
  }

  /** Moves the window by whole rows so guest offset `pos` is in it; whether it moved. */
  private bringIntoView(pos: number): boolean {
    const b = this.bucketBytes, row = b * this.cols, windowEnd = this.start + this.cellCount * b;
    const before = this.start;
    if (pos < this.start) this.start = this.clampStart(this.start - Math.ceil((this.start - pos) / row) * row);
    else if (pos >= windowEnd) this.start = this.clampStart(this.start + Math.ceil((pos - windowEnd + 1) / row) * row);
    return this.start !== before;
  }

  private onKey(e: KeyboardEvent): void {
    const b = this.bucketBytes;
    const cur = this.selected === undefined ? this.start : this.selected - (this.selected % b);
    let next: number | undefined;
    switch (e.key) {
      case 'ArrowRight': next = cur + b; break;
      case 'ArrowLeft': next = cur - b; break;
      case 'ArrowDown': next = cur + b * this.cols; break;
      case 'ArrowUp': next = cur - b * this.cols; break;
      case 'Home': next = 0; break;
      case 'End': next = Math.max(0, Math.ceil(this.size / b) - 1) * b; break;
      case '+': case '=': this.zoomIn(); e.preventDefault(); return;
      case '-': case '_': this.zoomOut(); e.preventDefault(); return;
      case 'Enter': case ' ': {
        const i = Math.floor((cur - this.start) / b);
        if (i >= 0 && i < this.cellCount) this.pickCell(i);
        e.preventDefault();
        return;
      }
      default: return;
    }
    e.preventDefault();
    next = Math.max(0, Math.min(Math.max(0, Math.ceil(this.size / b) - 1) * b, next));
    this.selected = next;
    if (this.bringIntoView(next)) this.load();
    this.schedule();
    const i = Math.floor((next - this.start) / b);
    this.hoverLine.textContent = this.describeCell(i);
    this.host.onStateChange();
  }
}
