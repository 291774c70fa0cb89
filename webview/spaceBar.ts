/**
 * The space summary at the top of the editor: where the image file's bytes go, as one stacked bar
 * (qcow2 metadata; active data — in use by guest files, outside browsable file systems, in guest
 * free space, all zero; data only snapshots hold; leaked clusters; holes and the tail) with the
 * file's size against the disk's, and what Compact and Sparsify would reclaim. The figures are the
 * engine's space report (the ones `qcow2-lens space --json` prints). Colours are the theme's chart
 * colours (media/webview.css); every figure is also text in the legend, the bar has an accessible
 * name, so nothing is only in the picture. Loading and "cannot be computed" are states of their own.
 */
import type { SpaceInfo, SpacePartInfo } from '../src/protocol';
import { formatBytes } from '../src/engine/units';
import { clear, el } from './dom';

/** One segment of the bar: a leaf part of the report, with its CSS class (its colour). */
interface Segment { key: string; label: string; bytes: number }

export function spaceSegments(r: SpaceInfo): Segment[] {
  const find = (name: string): SpacePartInfo | undefined => r.parts.find(p => p.name === name);
  const sub = (p: SpacePartInfo | undefined, name: string) => p?.parts?.find(q => q.name === name)?.bytes ?? 0;
  const active = find('active');
  const segs: Segment[] = [{ key: 'metadata', label: 'qcow2 metadata', bytes: find('metadata')?.bytes ?? 0 }];
  if (r.guestBrowsable) {
    segs.push(
      { key: 'used', label: 'in use by guest files', bytes: sub(active, 'in use by files') },
      { key: 'outside', label: 'outside browsable file systems', bytes: sub(active, 'outside browsable file systems') },
      { key: 'guestfree', label: 'guest free space', bytes: sub(active, 'guest free space') },
      { key: 'zero', label: 'all zero', bytes: sub(active, 'all zero') });
  } else {
    segs.push(
      { key: 'used', label: 'active data', bytes: (active?.bytes ?? 0) - sub(active, 'all zero') },
      { key: 'zero', label: 'all zero', bytes: sub(active, 'all zero') });
  }
  segs.push(
    { key: 'snapshots', label: 'referenced only by snapshots', bytes: find('snapshots')?.bytes ?? 0 },
    { key: 'leaked', label: 'leaked', bytes: find('leaked')?.bytes ?? 0 },
    { key: 'holes', label: 'holes and tail', bytes: find('holes')?.bytes ?? 0 });
  return segs;
}

function percent(part: number, whole: number): string {
  if (whole <= 0) return '0%';
  const p = (part / whole) * 100;
  return p > 0 && p < 0.1 ? '<0.1%' : `${p < 10 ? p.toFixed(1) : Math.round(p)}%`;
}

export class SpaceBar {
  readonly element: HTMLElement;
  private readonly body: HTMLElement;

  constructor() {
    this.body = el('div', { className: 'space-body', attrs: { 'aria-live': 'polite' } });
    this.element = el('section', { className: 'space-summary', attrs: { 'aria-label': 'Space summary' } }, this.body);
    this.element.hidden = true;
  }

  setLoading(): void {
    this.element.hidden = false;
    this.element.dataset.state = 'loading';
    clear(this.body);
    this.body.append(el('span', { className: 'space-loading', text: 'Working out where the space goes…' }));
  }

  showUnavailable(why: string): void {
    this.element.hidden = false;
    this.element.dataset.state = 'unavailable';
    clear(this.body);
    this.body.append(el('span', { className: 'space-unavailable', text: `Space summary: ${why}` }));
  }

  show(r: SpaceInfo): void {
    this.element.hidden = false;
    this.element.dataset.state = 'ready';
    clear(this.body);
    const segs = spaceSegments(r);
    const F = r.fileSize;
    const name = `Image file ${formatBytes(F)} of a ${formatBytes(r.virtualSize)} disk: ` +
      segs.filter(s => s.bytes > 0).map(s => `${s.label} ${formatBytes(s.bytes)} (${percent(s.bytes, F)})`).join(', ');
    const bar = el('div', { className: 'space-bar', attrs: { role: 'img', 'aria-label': name } });
    for (const s of segs) {
      if (s.bytes <= 0) continue;
      const seg = el('span', { className: `space-seg space-${s.key}`, title: `${s.label}: ${formatBytes(s.bytes)} (${percent(s.bytes, F)})` });
      seg.style.flexGrow = String(s.bytes);
      seg.dataset.key = s.key;
      seg.dataset.bytes = String(s.bytes);
      bar.append(seg);
    }
    // the file against the disk: a thin bar as wide as the file's share of the virtual size
    const ofDisk = el('div', { className: 'space-ofdisk', attrs: { 'aria-hidden': 'true' } }, el('span', { className: 'space-ofdisk-fill' }));
    (ofDisk.firstElementChild as HTMLElement).style.width = `${Math.min(100, r.virtualSize ? (F / r.virtualSize) * 100 : 0)}%`;
    const head = el('div', { className: 'space-head' },
      el('span', { className: 'space-title', text: `File ${formatBytes(F)} of a ${formatBytes(r.virtualSize)} disk (${percent(F, r.virtualSize)})` }),
      el('span', { className: 'space-alloc', text: `${formatBytes(r.allocatedBytes)} allocated on the host` }),
      el('span', { className: 'space-reclaim', text: `Compact would reclaim ${formatBytes(r.reclaim.compact)} · Sparsify ${formatBytes(r.reclaim.sparsify)}` }));
    const legend = el('ul', { className: 'space-legend', attrs: { 'aria-label': 'Where the file\'s bytes go' } });
    for (const s of segs) {
      if (s.bytes <= 0) continue;
      const item = el('li', { className: 'space-item' },
        el('span', { className: `space-swatch space-${s.key}`, attrs: { 'aria-hidden': 'true' } }),
        el('span', { className: 'space-label', text: s.label }),
        el('span', { className: 'space-bytes', text: formatBytes(s.bytes) }),
        el('span', { className: 'space-share', text: percent(s.bytes, F) }));
      item.dataset.key = s.key;
      item.dataset.bytes = String(s.bytes);
      legend.append(item);
    }
    this.body.append(head, bar, ofDisk, legend);
    if (r.notes.length) {
      const notes = el('details', { className: 'space-notes' }, el('summary', { text: `${r.notes.length} note(s)` }));
      for (const n of r.notes) notes.append(el('p', { text: n }));
      this.body.append(notes);
    }
  }
}
