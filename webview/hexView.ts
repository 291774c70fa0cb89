/**
 * The hex view: virtualized rows (only the visible rows exist in the DOM and only their bytes are
 * requested, in aligned 4 KiB chunks kept in a small LRU cache). Works in host space (the image
 * file) or guest space (the virtual disk, through the mapping and the backing chain). For spaces
 * taller than a browser can scroll (a 1 TiB disk has 68 G rows), the scrollbar is scaled.
 */
import type { ByteRangeSource } from '../src/protocol';
import { parseOffset } from '../src/engine/units';
import { type CopyFormat, formatBytesAs } from './copyFormat';
import { button, clear, el, errorText, hex, rafThrottle } from './dom';
import { FindBar } from './findBar';

export type Space = 'host' | 'guest';
/** Bytes per row the view starts with, until the host's settings say (qcow2Lens.hexView.bytesPerRow). */
export const DEFAULT_ROW_BYTES = 16;
const CHUNK = 4096;
const MAX_CHUNKS = 256;
/** Browsers cap element heights (~33 M px in Chromium); stay well below. */
const MAX_SCROLL_PX = 8_000_000;

export interface HexHost {
  read(space: Space, offset: number, length: number): Promise<{ offset: number; data: Uint8Array; sources: ByteRangeSource[] }>;
  size(space: Space): number;
  /** The image's path, to tell its own bytes from an external data file's. */
  imagePath?(): string;
  /** Host cluster size, to mark cluster boundaries in the file view. */
  clusterSize?(): number;
  onSelect(space: Space, offset: number, bytes: Uint8Array, length: number): void;
  onStateChange(): void;
  /** The allocated guest range after/before an offset (the Disk view's next/previous buttons and keys). */
  findAllocated?(offset: number, direction: 'next' | 'previous'): Promise<{ start?: number; length?: number }>;
  /** Find in the image file or the guest disk, one bounded window per call (findBytes). */
  find?(space: Space, pattern: Uint8Array, from: number, direction: 'next' | 'previous', window: number): Promise<{ offset?: number; scannedTo: number }>;
  /** Writes text to the clipboard (Copy as). */
  copy?(text: string): Promise<void>;
  /** The view jumped to a guest offset (go to, next/previous allocated): say where it lives. */
  onGuestJump?(offset: number): void;
}

interface Chunk { data?: Uint8Array; sources?: ByteRangeSource[]; error?: string; pending?: Promise<void> }

export class HexView {
  readonly element: HTMLElement;
  private readonly scroller: HTMLDivElement;
  private readonly spacer: HTMLDivElement;
  private readonly rows: HTMLDivElement;
  private readonly status: HTMLDivElement;
  private readonly spaceButtons: Record<Space, HTMLButtonElement>;
  private readonly gotoInput: HTMLInputElement;
  private readonly allocButtons: HTMLElement;
  readonly findBar: FindBar;
  /** Where the last guest jump landed, in words (describeGuest). */
  private readonly where: HTMLDivElement;
  /** Which guest file owns the selected byte ("/etc/fstab, partition 1"), from the host's whose. */
  private readonly ownerLine = el('div', { className: 'hex-owner', attrs: { role: 'status', 'aria-live': 'polite' } });
  private rowHeight = 18;
  /** Bytes per row: 8, 16 or 32 (setBytesPerRow). */
  private rowBytes = DEFAULT_ROW_BYTES;
  private chunks = new Map<string, Chunk>();
  space: Space = 'host';
  topRow = 0;
  selected: number | undefined;
  selectedLength = 1;
  /** Range selection: where it started (Shift+arrows, Shift+click and drags extend from here) and the moving end. */
  private anchor = 0;
  private cursor = 0;
  // each render's own time, on the rows element, for the editor section of npm run bench
  private readonly schedule = rafThrottle(() => { const t = performance.now(); this.render(); this.rows.dataset.renderMs = (performance.now() - t).toFixed(2); });

  constructor(private readonly host: HexHost) {
    this.spaceButtons = {
      host: button('File', () => this.setSpace('host'), { title: 'Bytes of the image file (host offsets)', attrs: { 'aria-pressed': 'true' } }),
      guest: button('Disk', () => this.setSpace('guest'), { title: 'Bytes of the virtual disk (guest offsets), through the backing chain', attrs: { 'aria-pressed': 'false' } }),
    };
    this.gotoInput = el('input', { className: 'goto', attrs: { type: 'text', placeholder: 'Go to offset (0x…, 1M)', 'aria-label': 'Go to offset', spellcheck: 'false' } });
    this.gotoInput.addEventListener('keydown', e => {
      if (e.key !== 'Enter') return;
      const off = parseOffset(this.gotoInput.value);
      if (off !== undefined && off < this.size) {
        this.gotoInput.classList.remove('invalid');
        this.reveal(off, 1);
        if (this.space === 'guest') this.host.onGuestJump?.(off);
      } else this.gotoInput.classList.add('invalid');
    });
    this.allocButtons = el('span', { className: 'seg alloc-nav' },
      button('◀', () => void this.jumpAllocated('previous'), { title: 'Previous allocated range (P)', attrs: { 'aria-label': 'Previous allocated range', 'aria-keyshortcuts': 'P' } }),
      button('▶', () => void this.jumpAllocated('next'), { title: 'Next allocated range (N)', attrs: { 'aria-label': 'Next allocated range', 'aria-keyshortcuts': 'N' } }));
    this.allocButtons.hidden = true;
    this.where = el('div', { className: 'hex-where', attrs: { role: 'status', 'aria-live': 'polite' } });
    this.where.hidden = true;
    this.status = el('div', { className: 'hex-status', attrs: { 'aria-live': 'polite' } });
    this.spacer = el('div', { className: 'hex-spacer' });
    this.rows = el('div', { className: 'hex-rows', attrs: { role: 'grid', 'aria-label': 'Hex view', 'aria-readonly': 'true' } });
    this.rows.dataset.bytesPerRow = String(this.rowBytes);
    this.scroller = el('div', { className: 'hex-scroll', attrs: { tabindex: '0' } }, this.rows, this.spacer);
    this.scroller.addEventListener('scroll', () => this.onScroll());
    // one delegated listener instead of one per byte cell (rows are rebuilt on every scroll frame)
    // selection with the mouse: press on a byte, drag to extend, Shift+click extends from the anchor
    const cellAt = (e: MouseEvent) => {
      const cell = (e.target as HTMLElement).closest<HTMLElement>('.hb, .ha');
      return cell?.dataset.offset ? Number(cell.dataset.offset) : undefined;
    };
    let dragging = false;
    this.rows.addEventListener('mousedown', e => {
      const off = cellAt(e);
      if (off === undefined || e.button !== 0) return;
      e.preventDefault();
      dragging = true;
      this.select(e.shiftKey ? this.anchor : off, off);
      this.scroller.focus({ preventScroll: true });
    });
    this.rows.addEventListener('mouseover', e => {
      if (!dragging) return;
      if (!(e.buttons & 1)) { dragging = false; return; }
      const off = cellAt(e);
      if (off !== undefined) this.select(this.anchor, off);
    });
    window.addEventListener('mouseup', () => { dragging = false; });
    this.scroller.addEventListener('keydown', e => this.onKey(e));
    // With a scaled scrollbar one wheel notch would jump millions of rows: scroll by rows instead.
    this.scroller.addEventListener('wheel', e => {
      if (this.scale <= 1 || e.deltaY === 0) return;
      e.preventDefault();
      const px = e.deltaMode === 1 ? e.deltaY * this.rowHeight : e.deltaMode === 2 ? e.deltaY * this.scroller.clientHeight : e.deltaY;
      this.scrollToRow(this.topRow + (Math.trunc(px / this.rowHeight) || Math.sign(px)));
      this.host.onStateChange();
    }, { passive: false });
    let lastSize = '';
    new ResizeObserver(() => {
      const size = `${this.scroller.clientWidth}x${this.scroller.clientHeight}`;
      if (size === lastSize) return;
      lastSize = size;
      this.schedule();
    }).observe(this.scroller);
    this.findBar = new FindBar({
      // in the view shown: the File view searches the image file, the Disk view the guest disk
      find: (pattern, from, direction, window) => {
        const space = this.space;
        return this.host.find ? this.host.find(space, pattern, from, direction, window) : Promise.reject(new Error('find is not available'));
      },
      size: () => this.host.size(this.space),
      selection: () => this.selected,
      onFound: (offset, length) => this.reveal(offset, length, this.space),
    });
    const copy = (format: CopyFormat) => void this.copySelection(format);
    const copyAs = el('span', { className: 'seg copy-as', attrs: { role: 'group', 'aria-label': 'Copy the selection as' } },
      button('Hex', () => copy('hex'), { title: 'Copy the selected bytes as hex', attrs: { 'aria-label': 'Copy as hex' } }),
      button('C', () => copy('c'), { title: 'Copy the selected bytes as a C array', attrs: { 'aria-label': 'Copy as C array' } }),
      button('Base64', () => copy('base64'), { title: 'Copy the selected bytes as base64', attrs: { 'aria-label': 'Copy as base64' } }));
    this.element = el('div', { className: 'hex-view' },
      el('div', { className: 'pane-toolbar' }, el('span', { className: 'pane-title', text: 'Bytes' }), el('span', { className: 'seg' }, this.spaceButtons.host, this.spaceButtons.guest), this.allocButtons, this.gotoInput,
        button('Find', () => this.findBar.open(), { className: 'find-open', title: 'Find hex bytes or text in the image file (File view) or the virtual disk (Disk view) (Ctrl+F)', attrs: { 'aria-keyshortcuts': 'Control+F' } }),
        el('span', { className: 'copy-label', text: 'Copy as' }), copyAs),
      this.findBar.element, this.where, this.ownerLine, this.scroller, this.status);
    this.ownerLine.hidden = true;
    this.element.addEventListener('keydown', e => {
      if ((e.ctrlKey || e.metaKey) && (e.key === 'f' || e.key === 'F')) { e.preventDefault(); e.stopPropagation(); this.findBar.open(); }
    });
  }

  get size(): number {
    return this.host.size(this.space);
  }
  private get totalRows(): number {
    return Math.ceil(this.size / this.rowBytes);
  }
  private get visibleRows(): number {
    // one row's height goes to the 00…0f column header
    return Math.max(1, Math.floor(this.scroller.clientHeight / this.rowHeight) - 1);
  }
  private get scale(): number {
    const full = this.totalRows * this.rowHeight;
    return full > MAX_SCROLL_PX ? full / MAX_SCROLL_PX : 1;
  }

  setSpace(space: Space, keepOffset?: number): void {
    if (space !== this.space) {
      this.space = space;
      this.selected = undefined;
      for (const s of ['host', 'guest'] as const) this.spaceButtons[s].setAttribute('aria-pressed', String(s === space));
      this.spaceChanged();
      this.layout();
      this.scrollToRow(keepOffset !== undefined ? Math.floor(keepOffset / this.rowBytes) : 0);
      this.host.onStateChange();
    }
    this.schedule();
  }

  private spaceChanged(): void {
    this.allocButtons.hidden = this.space !== 'guest' || !this.host.findAllocated;
    this.findBar.setSpace(this.space);
    this.where.hidden = true;
  }

  /** Says where the guest byte lives (host's words), under the toolbar. */
  /** The owner of the selected byte in the guest ("Owner: /etc/fstab, partition 1"); undefined hides the line. */
  showOwner(text: string | undefined): void {
    this.ownerLine.textContent = text ? `Owner: ${text}` : '';
    this.ownerLine.hidden = !text;
  }

  showWhere(text: string | undefined): void {
    this.where.textContent = text ?? '';
    this.where.hidden = !text;
  }

  /** Next/previous allocated range in the Disk view: selects its first byte and says how long it is. */
  async jumpAllocated(direction: 'next' | 'previous'): Promise<void> {
    if (this.space !== 'guest' || !this.host.findAllocated) return;
    const from = this.selected ?? this.topRow * this.rowBytes;
    this.showWhere(direction === 'next' ? 'Looking for the next allocated range…' : 'Looking for the previous allocated range…');
    try {
      const r = await this.host.findAllocated(from, direction);
      if (r.start === undefined) {
        this.showWhere(`No allocated range ${direction === 'next' ? 'after' : 'before'} ${hex(from)}.`);
        return;
      }
      this.reveal(r.start, 1);
      this.host.onGuestJump?.(r.start);
    } catch (e) {
      this.showWhere(`Cannot search: ${errorText(e)}`);
    }
  }

  get bytesPerRow(): number {
    return this.rowBytes;
  }

  /** Changes the row width (a setting changed): the first byte shown and the selection stay where they are. */
  setBytesPerRow(n: number): void {
    if (!Number.isInteger(n) || n <= 0 || n === this.rowBytes) return;
    const topOffset = this.topRow * this.rowBytes;
    this.rowBytes = n;
    this.rows.dataset.bytesPerRow = String(n);
    this.layout();
    this.scrollToRow(Math.floor(topOffset / n));
    this.host.onStateChange();
  }

  /** Drops cached bytes (after a refresh) and re-renders. */
  invalidate(): void {
    this.chunks.clear();
    this.layout();
    this.schedule();
  }

  layout(): void {
    this.spacer.style.height = `${Math.min(this.totalRows * this.rowHeight, MAX_SCROLL_PX)}px`;
  }

  /** Shows and selects [offset, offset+length) in the current space (switching space first if given). */
  reveal(offset: number, length = 1, space?: Space): void {
    if (space) this.setSpace(space);
    this.selected = offset;
    this.selectedLength = Math.max(1, length);
    this.anchor = offset;
    this.cursor = offset + this.selectedLength - 1;
    const row = Math.floor(offset / this.rowBytes);
    if (row < this.topRow || row >= this.topRow + this.visibleRows - 1) this.scrollToRow(Math.max(0, row - 2));
    this.notifySelect();
    this.schedule();
    this.host.onStateChange();
  }

  /** Selects [min(a, b), max(a, b)] and keeps the moving end `b` in view. */
  select(a: number, b: number): void {
    const max = Math.max(0, this.size - 1);
    a = Math.max(0, Math.min(max, a));
    b = Math.max(0, Math.min(max, b));
    this.anchor = a;
    this.cursor = b;
    this.selected = Math.min(a, b);
    this.selectedLength = Math.abs(b - a) + 1;
    const row = Math.floor(b / this.rowBytes);
    if (row < this.topRow) this.scrollToRow(row);
    else if (row >= this.topRow + this.visibleRows) this.scrollToRow(row - this.visibleRows + 1);
    this.notifySelect();
    this.schedule();
    this.host.onStateChange();
  }

  /** Copy as hex / C array / base64 (at most 1 MiB of the selection); says so in the status line. */
  async copySelection(format: CopyFormat): Promise<void> {
    if (this.selected === undefined || !this.host.copy) return;
    try {
      const bytes = await this.selectionBytes();
      await this.host.copy(formatBytesAs(bytes, format));
      this.showWhere(`Copied ${bytes.length === 1 ? '1 byte' : `${bytes.length} bytes`} as ${format === 'c' ? 'a C array' : format}${bytes.length < this.selectedLength ? ` (the first ${bytes.length} of ${this.selectedLength})` : ''}.`);
    } catch (e) {
      this.showWhere(`Cannot copy: ${errorText(e)}`);
    }
  }

  /** The selected bytes (read from the host, at most `max`), for Copy as. */
  async selectionBytes(max = 1024 * 1024): Promise<Uint8Array> {
    if (this.selected === undefined) return new Uint8Array();
    const n = Math.min(this.selectedLength, max);
    const r = await this.host.read(this.space, this.selected, n);
    return r.data.subarray(0, n);
  }

  private scrollToRow(row: number): void {
    this.topRow = Math.max(0, Math.min(row, Math.max(0, this.totalRows - this.visibleRows)));
    this.scroller.scrollTop = (this.topRow * this.rowHeight) / this.scale;
    // With a scaled scrollbar the browser rounds scrollTop; remember it so the scroll event this
    // assignment fires does not move topRow by thousands of rows.
    this.programmaticScrollTop = this.scroller.scrollTop;
    this.schedule();
  }

  private programmaticScrollTop = -1;

  private onScroll(): void {
    if (Math.abs(this.scroller.scrollTop - this.programmaticScrollTop) < 1) return;
    this.programmaticScrollTop = -1;
    const maxTop = Math.max(0, this.totalRows - this.visibleRows);
    this.topRow = Math.min(maxTop, Math.floor((this.scroller.scrollTop * this.scale) / this.rowHeight));
    this.schedule();
    this.host.onStateChange();
  }

  private chunkKey(start: number): string {
    return `${this.space}:${start}`;
  }

  private ensureChunk(start: number): Chunk {
    const key = this.chunkKey(start);
    let c = this.chunks.get(key);
    if (c) {
      this.chunks.delete(key);
      this.chunks.set(key, c);
      return c;
    }
    c = {};
    const space = this.space;
    c.pending = this.host.read(space, start, Math.min(CHUNK, this.size - start)).then(
      r => { c.data = r.data; c.sources = r.sources; },
      e => { c.error = errorText(e); },
    ).finally(() => { c.pending = undefined; if (space === this.space) this.schedule(); });
    this.chunks.set(key, c);
    while (this.chunks.size > MAX_CHUNKS) this.chunks.delete(this.chunks.keys().next().value!);
    return c;
  }

  /** The byte at `offset` if loaded (undefined while loading). */
  private byteAt(offset: number): { value?: number; source?: ByteRangeSource; error?: string } {
    const start = Math.floor(offset / CHUNK) * CHUNK;
    const c = this.ensureChunk(start);
    if (c.error) return { error: c.error };
    if (!c.data) return {};
    const i = offset - start;
    const source = c.sources?.find(s => offset >= s.offset && offset < s.offset + s.length);
    return { value: i < c.data.length ? c.data[i] : undefined, source };
  }

  bytesAt(offset: number, n: number): Uint8Array {
    const out: number[] = [];
    for (let k = 0; k < n && offset + k < this.size; k++) {
      const b = this.byteAt(offset + k).value;
      if (b === undefined) break;
      out.push(b);
    }
    return new Uint8Array(out);
  }

  private renders = 0;

  private render(): void {
    this.rows.dataset.renders = String(++this.renders);
    const size = this.size;
    clear(this.rows);
    if (size === 0) {
      this.rows.append(el('div', { className: 'empty', text: this.space === 'guest' ? 'The virtual disk is empty.' : 'The file is empty.' }));
      this.status.textContent = '';
      return;
    }
    const head = el('div', { className: 'hex-header', attrs: { role: 'row', 'aria-hidden': 'true' } });
    const offWidth = this.space === 'guest' ? 10 : 8;
    head.append(el('span', { className: 'hex-off', text: 'offset'.padEnd(offWidth, ' ') }));
    const cols = el('span', { className: 'hex-bytes' });
    for (let k = 0; k < this.rowBytes; k++) cols.append(el('span', { className: 'hb', text: k.toString(16).padStart(2, '0') }));
    const asciiHead = el('span', { className: 'hex-ascii' });
    for (let k = 0; k < this.rowBytes; k++) asciiHead.append(el('span', { className: 'ha', text: (k % 16).toString(16) }));
    head.append(cols, asciiHead);
    this.rows.append(head);
    const n = Math.min(this.visibleRows + 1, this.totalRows - this.topRow);
    let loading = false, error: string | undefined;
    for (let r = 0; r < n; r++) {
      const rowOff = (this.topRow + r) * this.rowBytes;
      const line = el('div', { className: 'hex-row', attrs: { role: 'row' } });
      const cs = this.host.clusterSize?.() ?? 0;
      if (this.space === 'host' && cs && rowOff % cs === 0 && rowOff > 0) line.classList.add('cluster-start');
      line.append(el('span', { className: 'hex-off', text: rowOff.toString(16).padStart(this.space === 'guest' ? 10 : 8, '0'), attrs: { role: 'rowheader' } }));
      const bytes = el('span', { className: 'hex-bytes' });
      const ascii = el('span', { className: 'hex-ascii', attrs: { 'aria-hidden': 'true' } });
      let rowSource: ByteRangeSource | undefined;
      for (let k = 0; k < this.rowBytes; k++) {
        const off = rowOff + k;
        if (off >= size) break;
        const b = this.byteAt(off);
        if (b.error) error = b.error;
        if (b.value === undefined && !b.error) loading = true;
        rowSource ??= b.source;
        const cell = el('span', { className: 'hb', text: b.value === undefined ? (b.error ? '!!' : '··') : b.value.toString(16).padStart(2, '0'), attrs: { role: 'gridcell' } });
        cell.dataset.offset = String(off);
        const ch = el('span', { className: 'ha', text: b.value === undefined ? ' ' : b.value >= 0x20 && b.value < 0x7f ? String.fromCharCode(b.value) : '.' });
        ch.dataset.offset = cell.dataset.offset;
        if (b.source) {
          cell.classList.add(`src-${b.source.kind}`);
          ch.classList.add(`src-${b.source.kind}`);
          if (b.source.depth && (b.source.kind === 'data' || b.source.kind === 'compressed')) {
            // each backing depth its own colour (--guest-backing-N, the guest map's legend)
            const depthClass = `src-depth-${Math.min(4, b.source.depth)}`;
            cell.classList.add('src-backing', depthClass);
            ch.classList.add('src-backing', depthClass);
          }
        }
        if (this.selected !== undefined && off >= this.selected && off < this.selected + this.selectedLength) {
          cell.classList.add('sel');
          ch.classList.add('sel');
          if (off === this.selected) cell.setAttribute('aria-selected', 'true');
        }
        bytes.append(cell);
        ascii.append(ch);
      }
      const where = rowSource ? describeSource(rowSource, this.space, this.host.imagePath?.()) : '';
      line.append(bytes, ascii, el('span', { className: 'hex-src', text: where }));
      if (where) line.title = where;
      this.rows.append(line);
    }
    const where = this.selected !== undefined ? `selected ${hex(this.selected)}${this.selectedLength > 1 ? ` · ${this.selectedLength} bytes` : ''}` : '';
    this.status.textContent = error ? `Cannot read: ${error}` : loading ? 'Loading bytes…' : `${this.space === 'host' ? 'file' : 'disk'} ${hex(this.topRow * this.rowBytes)} of ${hex(size)}${where ? ' · ' + where : ''}`;
    this.status.classList.toggle('error', !!error);
    if (this.selected !== undefined && !loading) this.notifySelect();
  }

  private lastNotified = '';
  private notifySelect(): void {
    if (this.selected === undefined) return;
    const bytes = this.bytesAt(this.selected, Math.min(64, Math.max(8, this.selectedLength)));
    const key = `${this.space}:${this.selected}:${this.selectedLength}:${Array.from(bytes).join(',')}`;
    if (key === this.lastNotified) return;
    this.lastNotified = key;
    this.host.onSelect(this.space, this.selected, bytes, this.selectedLength);
  }

  private onKey(e: KeyboardEvent): void {
    // Shift+arrows move the selection's far end (the cursor); plain keys move a one-byte selection
    const sel = this.selected === undefined ? this.topRow * this.rowBytes : this.cursor;
    let next: number | undefined;
    switch (e.key) {
      case 'ArrowRight': next = sel + 1; break;
      case 'ArrowLeft': next = sel - 1; break;
      case 'ArrowDown': next = sel + this.rowBytes; break;
      case 'ArrowUp': next = sel - this.rowBytes; break;
      case 'PageDown': next = sel + this.rowBytes * this.visibleRows; break;
      case 'PageUp': next = sel - this.rowBytes * this.visibleRows; break;
      case 'Home': next = e.ctrlKey ? 0 : sel - (sel % this.rowBytes); break;
      case 'End': next = e.ctrlKey ? this.size - 1 : Math.min(this.size - 1, sel - (sel % this.rowBytes) + this.rowBytes - 1); break;
      case 'n': case 'N': case 'p': case 'P':
        if (this.space !== 'guest' || e.ctrlKey || e.metaKey || e.altKey) return;
        e.preventDefault();
        void this.jumpAllocated(e.key.toLowerCase() === 'n' ? 'next' : 'previous');
        return;
      default: return;
    }
    e.preventDefault();
    next = Math.max(0, Math.min(this.size - 1, next));
    if (e.shiftKey && this.selected !== undefined) this.select(this.anchor, next);
    else this.reveal(next, 1);
  }

  focus(): void {
    this.scroller.focus();
  }

  /** For state persistence: restores space, top row and selection. */
  restore(space: Space, topOffset: number, selected?: number): void {
    this.space = space;
    for (const s of ['host', 'guest'] as const) this.spaceButtons[s].setAttribute('aria-pressed', String(s === space));
    this.spaceChanged();
    this.layout();
    this.selected = selected;
    this.anchor = this.cursor = selected ?? 0;
    requestAnimationFrame(() => this.scrollToRow(Math.floor(topOffset / this.rowBytes)));
  }
}

export function describeSource(s: ByteRangeSource, space: Space, imagePath?: string): string {
  if (space === 'host') return s.structure ?? s.role ?? s.kind;
  const layer = s.depth === undefined ? '' : s.depth === 0 ? 'this image' : `backing depth ${s.depth}`;
  const file = s.layerPath ? s.layerPath.split('/').pop() : '';
  // name the file when it is a backing file or this image's external data file
  const named = file && (s.depth || (imagePath !== undefined && s.layerPath !== imagePath));
  switch (s.kind) {
    case 'data': return `${layer}${named ? ` (${file})` : ''}${s.hostOffset !== undefined ? ` @ ${hex(s.hostOffset)}` : ''}`;
    case 'compressed': return `compressed, ${layer}`;
    case 'zero': return `zero (${layer})`;
    case 'unallocated': return 'unallocated (reads as zero)';
    default: return s.kind;
  }
}
