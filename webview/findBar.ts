/**
 * Find (Ctrl+F in the bytes pane): hex bytes or text over the image file (File view) or the guest
 * disk (Disk view), forward or backward.
 * The host searches one bounded window per request (src/extension/findBytes.ts); this bar loops
 * over windows, shows how far it got between them and cancels by not asking again.
 */
import { parseHexPattern, textPattern } from './copyFormat';
import { button, el, errorText, hex } from './dom';

export interface FindHost {
  find(pattern: Uint8Array, from: number, direction: 'next' | 'previous', window: number): Promise<{ offset?: number; scannedTo: number }>;
  /** Bytes in the space searched (the image file or the guest disk). */
  size(): number;
  /** Where a search starts: the selection (next: after its first byte; previous: before it). */
  selection(): number | undefined;
  onFound(offset: number, length: number): void;
}

/** Bytes per request: small enough that progress moves and a cancel is prompt. */
export const FIND_WINDOW = 16 * 1024 * 1024;

export class FindBar {
  readonly element: HTMLElement;
  private readonly input: HTMLInputElement;
  private readonly mode: HTMLSelectElement;
  private readonly status: HTMLElement;
  private readonly cancelButton: HTMLButtonElement;
  private generation = 0;
  private running = false;

  constructor(private readonly host: FindHost) {
    this.input = el('input', { className: 'find-input', attrs: { type: 'text', placeholder: 'Find: hex bytes (4d 5a) or text', 'aria-label': 'Find in the image file', spellcheck: 'false' } });
    this.mode = el('select', { className: 'find-mode', attrs: { 'aria-label': 'Find as' } },
      el('option', { text: 'Hex', attrs: { value: 'hex' } }), el('option', { text: 'Text', attrs: { value: 'text' } }));
    this.status = el('span', { className: 'find-status', attrs: { role: 'status', 'aria-live': 'polite' } });
    this.cancelButton = button('Cancel', () => this.cancel(), { className: 'find-cancel', title: 'Stop searching' });
    this.cancelButton.disabled = true;
    this.element = el('div', { className: 'find-bar', attrs: { role: 'search', 'aria-label': 'Find in the image file' } },
      this.input, this.mode,
      button('↑', () => void this.run('previous'), { title: 'Find previous (Shift+Enter)', attrs: { 'aria-label': 'Find previous' } }),
      button('↓', () => void this.run('next'), { title: 'Find next (Enter)', attrs: { 'aria-label': 'Find next' } }),
      this.cancelButton, this.status,
      button('×', () => this.close(), { className: 'find-close', title: 'Close (Escape)', attrs: { 'aria-label': 'Close find' } }));
    this.element.hidden = true;
    this.element.addEventListener('keydown', e => {
      if (e.key === 'Enter') { e.preventDefault(); void this.run(e.shiftKey ? 'previous' : 'next'); }
      else if (e.key === 'Escape') { e.preventDefault(); if (this.running) this.cancel(); else this.close(); }
      e.stopPropagation();
    });
  }

  /** The space searched changed (File or Disk view): the labels say which; a running search stops. */
  setSpace(space: 'host' | 'guest'): void {
    const label = space === 'guest' ? 'Find in the guest disk' : 'Find in the image file';
    if (this.input.getAttribute('aria-label') === label) return;
    this.cancel();
    this.input.setAttribute('aria-label', label);
    this.element.setAttribute('aria-label', label);
  }

  open(): void {
    this.element.hidden = false;
    this.input.focus();
    this.input.select();
  }

  close(): void {
    this.cancel();
    this.element.hidden = true;
  }

  cancel(): void {
    if (!this.running) return;
    this.generation++;
    this.running = false;
    this.cancelButton.disabled = true;
    this.status.textContent = `Cancelled at ${hex(this.at)}.`;
  }

  private at = 0;

  private pattern(): Uint8Array | undefined {
    const text = this.input.value;
    if (this.mode.value === 'text') return text ? textPattern(text) : undefined;
    return parseHexPattern(text);
  }

  async run(direction: 'next' | 'previous'): Promise<void> {
    const pattern = this.pattern();
    if (!pattern?.length) {
      this.status.textContent = this.mode.value === 'hex' ? 'Enter whole hex bytes, e.g. 51 46 49 fb.' : 'Enter the text to find.';
      return;
    }
    const gen = ++this.generation;
    this.running = true;
    this.cancelButton.disabled = false;
    const size = this.host.size(), sel = this.host.selection();
    let pos = direction === 'next' ? (sel === undefined ? 0 : sel + 1) : (sel ?? size);
    const startPos = pos, total = Math.max(1, direction === 'next' ? size - pos : pos);
    try {
      for (;;) {
        this.at = pos;
        const r = await this.host.find(pattern, pos, direction, FIND_WINDOW);
        if (gen !== this.generation) return; // cancelled, or a newer search started
        if (r.offset !== undefined) {
          this.status.textContent = `Found at ${hex(r.offset)} (${pattern.length === 1 ? '1 byte' : `${pattern.length} bytes`}).`;
          this.host.onFound(r.offset, pattern.length);
          return;
        }
        pos = r.scannedTo;
        if (direction === 'next' ? pos >= size : pos <= 0) {
          this.status.textContent = `Not found ${direction === 'next' ? `after ${hex(startPos)}` : `before ${hex(startPos)}`}.`;
          return;
        }
        const done = Math.abs(pos - startPos);
        this.status.textContent = `Searching… ${Math.floor((done * 100) / total)}% (at ${hex(pos)})`;
      }
    } catch (e) {
      if (gen === this.generation) this.status.textContent = `Cannot search: ${errorText(e)}`;
    } finally {
      if (gen === this.generation) { this.running = false; this.cancelButton.disabled = true; }
    }
  }
}
