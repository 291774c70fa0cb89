/**
 * A resizable split between the structure tree and the views: a focusable separator
 * (role="separator", aria-valuenow in pixels) dragged with the mouse or moved with the arrow keys
 * (Shift: larger steps; Home/End: narrowest/widest). The width is reported through `onChange` so
 * the webview keeps it in its saved state.
 */
import { el } from './dom';

export const SPLIT_MIN = 160;
const STEP = 16;
const BIG_STEP = 64;
/** Room the views keep on the right, whatever the split. */
const RIGHT_MIN = 320;

export class Splitter {
  readonly element: HTMLDivElement;
  width: number | undefined;

  constructor(private readonly pane: HTMLElement, private readonly onChange: (width: number) => void) {
    this.element = el('div', {
      className: 'splitter',
      attrs: { role: 'separator', tabindex: '0', 'aria-orientation': 'vertical', 'aria-label': 'Resize the structure pane', 'aria-valuemin': String(SPLIT_MIN), title: 'Drag, or use the arrow keys, to resize the structure pane' },
    });
    this.element.addEventListener('pointerdown', e => this.onPointerDown(e));
    this.element.addEventListener('keydown', e => this.onKey(e));
    this.element.addEventListener('dblclick', () => this.set(undefined, true));
    new ResizeObserver(() => this.sync()).observe(this.pane);
  }

  private get max(): number {
    const total = this.pane.parentElement?.clientWidth || window.innerWidth;
    return Math.max(SPLIT_MIN, total - RIGHT_MIN);
  }

  /** Sets the pane's width in CSS pixels (undefined: the stylesheet's default). */
  set(width: number | undefined, notify = false): void {
    if (width === undefined) {
      this.width = undefined;
      this.pane.style.width = '';
      this.pane.style.maxWidth = '';
      this.pane.style.minWidth = '';
    } else {
      this.width = Math.round(Math.max(SPLIT_MIN, Math.min(this.max, width)));
      this.pane.style.width = `${this.width}px`;
      this.pane.style.maxWidth = 'none';
      this.pane.style.minWidth = `${SPLIT_MIN}px`;
      this.pane.style.flex = 'none';
    }
    this.sync();
    if (notify && this.width !== undefined) this.onChange(this.width);
  }

  private sync(): void {
    const now = Math.round(this.pane.getBoundingClientRect().width);
    this.element.setAttribute('aria-valuenow', String(now));
    this.element.setAttribute('aria-valuemax', String(Math.round(this.max)));
    this.element.setAttribute('aria-valuetext', `structure pane ${now} pixels wide`);
  }

  private current(): number {
    return this.width ?? this.pane.getBoundingClientRect().width;
  }

  private onPointerDown(e: PointerEvent): void {
    if (e.button !== 0) return;
    e.preventDefault();
    this.element.setPointerCapture?.(e.pointerId);
    this.element.classList.add('dragging');
    const left = this.pane.getBoundingClientRect().left;
    const move = (ev: PointerEvent) => this.set(ev.clientX - left);
    const up = (ev: PointerEvent) => {
      this.element.removeEventListener('pointermove', move);
      this.element.removeEventListener('pointerup', up);
      this.element.removeEventListener('pointercancel', up);
      this.element.classList.remove('dragging');
      this.set(ev.clientX - left, true);
    };
    this.element.addEventListener('pointermove', move);
    this.element.addEventListener('pointerup', up);
    this.element.addEventListener('pointercancel', up);
  }

  private onKey(e: KeyboardEvent): void {
    const step = e.shiftKey ? BIG_STEP : STEP;
    switch (e.key) {
      case 'ArrowLeft': this.set(this.current() - step, true); break;
      case 'ArrowRight': this.set(this.current() + step, true); break;
      case 'Home': this.set(SPLIT_MIN, true); break;
      case 'End': this.set(this.max, true); break;
      default: return;
    }
    e.preventDefault();
  }
}
