/**
 * The cluster map: the image file's host clusters as a grid of cells on a canvas, coloured by role
 * (theme colours from CSS variables), with a legend. Each cell covers `zoom` clusters; zoom is a
 * power of two ("Fit" picks the smallest that shows the whole file). Only the visible rows are
 * requested and drawn. Hover describes the cluster's owner; click selects it and opens its bytes.
 */
import type { ClusterDescription } from '../src/protocol';
import { CLUSTER_ROLE_LABELS, CLUSTER_ROLES, ClusterRole } from '../src/protocol';
import { button, clear, el, errorText, hex, onThemeChange, onWidthChange, rafThrottle, sizeCanvas } from './dom';

const MIN_CELL = 10;
const MAX_VISIBLE_ROWS = 12;
const LEAKED = CLUSTER_ROLES.indexOf('leaked');
const CONFLICT = CLUSTER_ROLES.indexOf('conflict');

export interface MapHost {
  getCells(startCluster: number, count: number, zoom: number): Promise<{ startCluster: number; zoom: number; totalClusters: number; cells: number[] }>;
  describe(hostCluster: number): Promise<ClusterDescription>;
  onPick(hostCluster: number, zoom: number): void;
  onStateChange(): void;
}

export class ClusterMap {
  readonly element: HTMLElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly scroller: HTMLDivElement;
  private readonly spacer: HTMLDivElement;
  private readonly hoverLine: HTMLDivElement;
  private readonly zoomLabel: HTMLSpanElement;
  private readonly legend: HTMLElement;
  private readonly message: HTMLDivElement;
  private colors: string[] = [];
  totalClusters = 0;
  zoom = 1;
  private fitted = true;
  /** Cell size in CSS pixels: larger for small files so a handful of clusters stays visible. */
  private cell = MIN_CELL;
  /** Loaded cells: key `${zoom}:${row}` → role indexes of that row. */
  private rows = new Map<string, number[] | 'pending' | Error>();
  private selectedCluster: number | undefined;
  /** Host clusters outlined in the focus colour (a guest file's clusters), and the cells they fall in at `highlightZoom`. */
  private highlighted: number[] = [];
  private highlightCells = new Set<number>();
  private highlightZoom = 0;
  private hoverSeq = 0;
  private lastHover = -1;
  private readonly schedule = rafThrottle(() => this.draw());
  hoverText = '';
  private draws = 0;

  constructor(private readonly host: MapHost) {
    this.canvas = el('canvas', { className: 'map-canvas', attrs: { role: 'img', 'aria-label': 'Cluster map of the image file' } });
    this.spacer = el('div', { className: 'map-spacer' });
    this.scroller = el('div', { className: 'map-scroll', attrs: { tabindex: '0', 'aria-label': 'Cluster map; arrow keys move, Enter opens the cluster' } }, this.canvas, this.spacer);
    this.hoverLine = el('div', { className: 'map-hover', attrs: { 'aria-live': 'polite' }, text: 'Hover a cell to see which structure owns the cluster.' });
    this.zoomLabel = el('span', { className: 'map-zoom' });
    this.message = el('div', { className: 'map-message', text: 'Loading cluster map…' });
    this.legend = el('div', { className: 'legend', attrs: { 'aria-label': 'Legend' } });
    this.element = el('div', { className: 'cluster-map' },
      el('div', { className: 'pane-toolbar' },
        el('span', { className: 'pane-title', text: 'Cluster map' }),
        button('−', () => this.setZoom(this.zoom * 2), { title: 'Zoom out (more clusters per cell)', attrs: { 'aria-label': 'Zoom out' } }),
        button('+', () => this.setZoom(Math.max(1, this.zoom / 2)), { title: 'Zoom in (fewer clusters per cell)', attrs: { 'aria-label': 'Zoom in' } }),
        button('Fit', () => { this.fitted = true; this.fit(); }, { title: 'Show the whole file' }),
        this.zoomLabel),
      this.message, this.scroller, this.hoverLine, this.legend);
    this.scroller.addEventListener('scroll', () => { this.schedule(); this.host.onStateChange(); });
    this.canvas.addEventListener('mousemove', e => this.onHover(e));
    this.canvas.addEventListener('mouseleave', () => { this.lastHover = -1; });
    this.canvas.addEventListener('click', e => {
      const c = this.clusterAt(e);
      if (c !== undefined) this.pick(c);
    });
    this.scroller.addEventListener('keydown', e => this.onKey(e));
    onThemeChange(() => { this.readColors(); this.schedule(); });
    onWidthChange(this.scroller, () => { if (this.fitted) this.fit(); else this.layout(); });
  }

  private readColors(): void {
    const cs = getComputedStyle(this.element);
    this.colors = CLUSTER_ROLES.map(r => cs.getPropertyValue(`--role-${r}`).trim() || '#888');
  }

  /** Roles seen in the cells loaded so far: the legend lists only those. */
  private seen = new Set<number>();

  private buildLegend(): void {
    clear(this.legend);
    const order: ClusterRole[] = ['header', 'l1', 'l2', 'refcountTable', 'refcountBlock', 'data', 'compressed', 'snapshotTable', 'snapshotL1', 'bitmapDirectory', 'bitmapTable', 'bitmapData', 'crypto', 'free', 'leaked', 'conflict', 'mixed'];
    const shown = order.filter(r => this.seen.has(CLUSTER_ROLES.indexOf(r)));
    for (const r of shown) {
      const sw = el('span', { className: `swatch role-${r}`, attrs: { 'aria-hidden': 'true' } });
      const item = el('span', { className: 'legend-item' }, sw, el('span', { text: CLUSTER_ROLE_LABELS[r] }));
      item.dataset.role = r;
      this.legend.append(item);
    }
  }

  /** Starts (or restarts after refresh) with a file of `totalClusters` clusters. */
  reset(totalClusters: number, zoom?: number, scrollTop?: number): void {
    this.totalClusters = totalClusters;
    this.rows.clear();
    this.seen.clear();
    this.readColors();
    this.buildLegend();
    if (zoom && zoom >= 1) { this.fitted = false; this.zoom = zoom; this.layout(); if (scrollTop) this.scroller.scrollTop = scrollTop; }
    else { this.fitted = true; this.fit(); }
    this.message.hidden = totalClusters > 0;
    this.message.classList.remove('error'); // a refusal (e.g. over qcow2Lens.clusterMap.maxClusters) is asked again
    if (totalClusters === 0) this.message.textContent = 'The file has no clusters.';
    this.schedule();
  }

  get scrollTop(): number {
    return this.scroller.scrollTop;
  }

  private get cols(): number {
    return Math.max(8, Math.floor((this.scroller.clientWidth || 600) / this.cell));
  }
  private get cellCount(): number {
    return Math.ceil(this.totalClusters / this.zoom);
  }
  private get totalRows(): number {
    return Math.ceil(this.cellCount / this.cols);
  }

  private fit(): void {
    const width = this.scroller.clientWidth || 600;
    this.cell = MIN_CELL;
    for (const size of [32, 24, 16, 12]) {
      if (Math.ceil(this.totalClusters / Math.max(8, Math.floor(width / size))) <= 4) { this.cell = size; break; }
    }
    let z = 1;
    while (Math.ceil(this.totalClusters / z / this.cols) > MAX_VISIBLE_ROWS) z *= 2;
    this.zoom = z;
    this.layout();
  }

  setZoom(z: number): void {
    const maxZoom = 2 ** Math.ceil(Math.log2(Math.max(1, this.totalClusters)));
    this.fitted = false;
    this.cell = MIN_CELL;
    this.zoom = Math.max(1, Math.min(maxZoom, z));
    this.layout();
    this.host.onStateChange();
  }

  private layout(): void {
    const rows = this.totalRows;
    const visible = Math.min(rows, MAX_VISIBLE_ROWS);
    this.scroller.style.height = `${Math.max(1, visible) * this.cell + 2}px`;
    this.spacer.style.height = `${Math.max(0, rows - visible) * this.cell}px`;
    this.zoomLabel.textContent = `${this.zoom} cluster${this.zoom === 1 ? '' : 's'} per cell · ${this.totalClusters} clusters`;
    this.schedule();
  }

  private rowKey(row: number): string {
    return `${this.zoom}:${this.cols}:${row}`;
  }

  private requestRows(first: number, last: number): void {
    // one request for the missing rows of the visible window
    let a = -1, b = -1;
    for (let r = first; r <= last; r++) if (!this.rows.has(this.rowKey(r))) { if (a < 0) a = r; b = r; }
    if (a < 0) return;
    if (this.rows.size > 4096) this.rows.clear(); // rows of other zoom levels and widths
    const cols = this.cols, zoom = this.zoom;
    for (let r = a; r <= b; r++) this.rows.set(this.rowKey(r), 'pending');
    const startCell = a * cols;
    const count = Math.min((b - a + 1) * cols, this.cellCount - startCell);
    this.host.getCells(startCell * zoom, count, zoom).then(res => {
      for (let r = a; r <= b; r++) this.rows.set(`${zoom}:${cols}:${r}`, res.cells.slice((r - a) * cols, (r - a + 1) * cols));
      const before = this.seen.size;
      for (const c of res.cells) this.seen.add(c);
      if (this.seen.size !== before) this.buildLegend();
      this.message.hidden = true;
      this.schedule();
    }, e => {
      for (let r = a; r <= b; r++) this.rows.delete(`${zoom}:${cols}:${r}`);
      this.message.hidden = false;
      this.message.textContent = `Cannot build the cluster map: ${errorText(e)}`;
      this.message.classList.add('error');
    });
  }

  private draw(): void {
    if (!this.colors.length) this.readColors();
    const cols = this.cols;
    const w = cols * this.cell;
    const visibleRows = Math.min(this.totalRows, MAX_VISIBLE_ROWS);
    const h = Math.max(1, visibleRows) * this.cell;
    const dpr = sizeCanvas(this.canvas, w, h);
    this.canvas.dataset.draws = String(++this.draws);
    this.canvas.dataset.cell = String(this.cell);
    this.canvas.dataset.cols = String(cols);
    this.canvas.dataset.zoom = String(this.zoom);
    const ctx = this.canvas.getContext('2d');
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const firstRow = Math.floor(this.scroller.scrollTop / this.cell);
    const lastRow = Math.min(this.totalRows - 1, firstRow + visibleRows - 1);
    this.requestRows(firstRow, lastRow);
    const style = getComputedStyle(this.element);
    const selColor = style.getPropertyValue('--map-selection').trim() || '#fff';
    const hatch = style.getPropertyValue('--map-hatch').trim() || '#000';
    const hiColor = style.getPropertyValue('--map-highlight').trim() || selColor;
    if (this.highlightZoom !== this.zoom) {
      this.highlightZoom = this.zoom;
      this.highlightCells = new Set(this.highlighted.map(c => Math.floor(c / this.zoom)));
    }
    for (let r = firstRow; r <= lastRow; r++) {
      const cells = this.rows.get(this.rowKey(r));
      const y = (r - firstRow) * this.cell;
      for (let c = 0; c < cols; c++) {
        const cell = r * cols + c;
        if (cell >= this.cellCount) break;
        const role = Array.isArray(cells) ? cells[c] : undefined;
        ctx.fillStyle = role === undefined ? (this.colors[CLUSTER_ROLES.indexOf('beyondEnd')] ?? '#444') : this.colors[role];
        ctx.globalAlpha = role === undefined ? 0.3 : 1;
        ctx.fillRect(c * this.cell, y, this.cell - 1, this.cell - 1);
        ctx.globalAlpha = 1;
        if (role === LEAKED || role === CONFLICT) {
          // problems are hatched as well as coloured, so they stand out in any theme
          ctx.strokeStyle = hatch;
          ctx.lineWidth = 1;
          ctx.beginPath();
          ctx.moveTo(c * this.cell, y + this.cell - 1);
          ctx.lineTo(c * this.cell + this.cell - 1, y);
          if (role === CONFLICT) { ctx.moveTo(c * this.cell, y); ctx.lineTo(c * this.cell + this.cell - 1, y + this.cell - 1); }
          ctx.stroke();
        }
        if (this.highlightCells.has(cell)) {
          ctx.strokeStyle = hiColor;
          ctx.lineWidth = 1;
          ctx.strokeRect(c * this.cell + 0.5, y + 0.5, this.cell - 2, this.cell - 2);
        }
        if (this.selectedCluster !== undefined && Math.floor(this.selectedCluster / this.zoom) === cell) {
          ctx.strokeStyle = selColor;
          ctx.lineWidth = 2;
          ctx.strokeRect(c * this.cell + 1, y + 1, this.cell - 3, this.cell - 3);
        }
      }
    }
    // keep the canvas at the top of the scroll area (it scrolls with sticky positioning)
  }

  private clusterAt(e: MouseEvent): number | undefined {
    const rect = this.canvas.getBoundingClientRect();
    const col = Math.floor((e.clientX - rect.left) / this.cell), row = Math.floor((e.clientY - rect.top) / this.cell) + Math.floor(this.scroller.scrollTop / this.cell);
    if (col < 0 || col >= this.cols) return undefined;
    const cell = row * this.cols + col;
    if (cell < 0 || cell >= this.cellCount) return undefined;
    return cell * this.zoom;
  }

  private onHover(e: MouseEvent): void {
    const c = this.clusterAt(e);
    if (c === undefined || c === this.lastHover) return;
    this.lastHover = c;
    void this.describe(c);
  }

  /** Describes a cluster in the hover line (also used for keyboard focus and tests). */
  async describe(cluster: number): Promise<string> {
    const seq = ++this.hoverSeq;
    try {
      const d = await this.host.describe(cluster);
      if (seq !== this.hoverSeq) return this.hoverText;
      const owners = d.owners.map(o => o.structure + (o.guestOffset !== undefined && o.role !== 'l2' ? ` (guest ${hex(o.guestOffset)})` : '')).join('; ');
      const span = this.zoom > 1 ? ` (cell of ${this.zoom} clusters, first shown)` : '';
      this.hoverText = `Cluster ${d.hostCluster} at ${hex(d.hostOffset)}${span}: ${CLUSTER_ROLE_LABELS[d.role]}${owners ? ' — ' + owners : ''}${d.refcount !== undefined ? ` · refcount ${d.refcount}` : ''}`;
    } catch (err) {
      if (seq !== this.hoverSeq) return this.hoverText;
      this.hoverText = `Cluster ${cluster}: ${errorText(err)}`;
    }
    this.hoverLine.textContent = this.hoverText;
    return this.hoverText;
  }

  pick(cluster: number): void {
    this.select(cluster);
    this.host.onPick(cluster, this.zoom);
    void this.describe(cluster);
  }

  /** Highlights the cell holding `cluster` and scrolls it into view. */
  select(cluster: number | undefined): void {
    this.selectedCluster = cluster;
    if (cluster === undefined) delete this.canvas.dataset.selectedCluster;
    else this.canvas.dataset.selectedCluster = String(cluster); // for tests and tools: which host cluster is marked
    if (cluster !== undefined && this.totalClusters) {
      const row = Math.floor(Math.floor(cluster / this.zoom) / this.cols);
      const first = Math.floor(this.scroller.scrollTop / this.cell);
      if (row < first || row >= first + MAX_VISIBLE_ROWS) this.scroller.scrollTop = row * this.cell;
    }
    this.schedule();
  }

  /**
   * Outlines these host clusters in the theme's focus colour (replacing any earlier highlight; an
   * empty list clears it) and scrolls the first into view. The canvas's data-highlighted says how many.
   */
  highlight(hostClusters: readonly number[]): void {
    this.highlighted = [...hostClusters];
    this.highlightZoom = 0;
    this.canvas.dataset.highlighted = String(this.highlighted.length);
    const first = this.highlighted[0];
    if (first !== undefined && this.totalClusters) {
      const row = Math.floor(Math.floor(first / this.zoom) / this.cols);
      const top = Math.floor(this.scroller.scrollTop / this.cell);
      if (row < top || row >= top + MAX_VISIBLE_ROWS) this.scroller.scrollTop = row * this.cell;
    }
    this.schedule();
  }

  /** Whether the cell holding a host cluster is outlined now (tests). */
  isHighlighted(cluster: number): boolean {
    return this.highlighted.includes(cluster);
  }

  private onKey(e: KeyboardEvent): void {
    const cur = this.selectedCluster ?? 0;
    let next: number | undefined;
    switch (e.key) {
      case 'ArrowRight': next = cur + this.zoom; break;
      case 'ArrowLeft': next = cur - this.zoom; break;
      case 'ArrowDown': next = cur + this.zoom * this.cols; break;
      case 'ArrowUp': next = cur - this.zoom * this.cols; break;
      case 'Enter': this.pick(cur); e.preventDefault(); return;
      default: return;
    }
    e.preventDefault();
    next = Math.max(0, Math.min(this.totalClusters - 1, next));
    this.select(next);
    void this.describe(next);
  }
}
