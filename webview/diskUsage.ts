/**
 * The guest's disk usage: the largest folders and files of each browsable guest file system, by
 * allocated bytes (as `du` counts them; src/guest/space/usage.ts), in a collapsible panel under the
 * space summary. Asked of the host only when the panel is first opened (it walks every folder's
 * metadata). Each row has its size and its share of the file system's total; folders expand.
 */
import type { DiskUsageNode, DiskUsageReply } from '../src/protocol';
import { formatBytes } from '../src/engine/units';
import { clear, el, errorText } from './dom';

export interface DiskUsageHost {
  load(): Promise<DiskUsageReply>;
}

function share(part: number, whole: number): string {
  if (whole <= 0) return '0%';
  const p = (part / whole) * 100;
  return p > 0 && p < 0.1 ? '<0.1%' : `${p < 10 ? p.toFixed(1) : Math.round(p)}%`;
}

export class DiskUsagePanel {
  readonly element: HTMLDetailsElement;
  private readonly body: HTMLElement;
  private loaded = false;
  /** The latest load: an answer to an older one (the settings changed meanwhile) is dropped. */
  private seq = 0;

  constructor(private readonly host: DiskUsageHost) {
    this.body = el('div', { className: 'du-body', attrs: { 'aria-live': 'polite' } });
    this.element = el('details', { className: 'disk-usage' }, el('summary', { text: 'Guest disk usage (largest folders and files)' }), this.body);
    this.element.hidden = true; // shown once the image has opened (main.ts)
    this.element.addEventListener('toggle', () => { if (this.element.open && !this.loaded) void this.load(); });
  }

  /** Forgets what was shown (the file changed): asked again when open. */
  reset(): void {
    this.loaded = false;
    this.seq++;
    clear(this.body);
    if (this.element.open) void this.load();
  }

  async load(): Promise<void> {
    this.loaded = true;
    const mine = ++this.seq;
    this.element.dataset.state = 'loading';
    clear(this.body);
    this.body.append(el('span', { className: 'du-loading', text: 'Adding up the guest\'s folders…' }));
    let r: DiskUsageReply;
    try {
      r = await this.host.load();
    } catch (e) {
      if (mine !== this.seq) return;
      this.loaded = false;
      this.element.dataset.state = 'unavailable';
      clear(this.body);
      this.body.append(el('span', { className: 'du-unavailable', text: `Disk usage cannot be shown: ${errorText(e)}` }));
      return;
    }
    if (mine !== this.seq) return;
    clear(this.body);
    if (r.unavailable || !r.fileSystems.length) {
      this.element.dataset.state = 'unavailable';
      this.body.append(el('span', { className: 'du-unavailable', text: `Disk usage cannot be shown: ${r.unavailable ?? 'no browsable guest file system'}` }));
      return;
    }
    this.element.dataset.state = 'ready';
    const tree = el('ul', { className: 'du-tree', attrs: { role: 'tree', 'aria-label': 'Guest disk usage' } });
    for (const f of r.fileSystems) {
      const label = `${f.partition === 0 ? 'whole disk' : `partition ${f.partition}`} (${f.fs})${f.partial ? ' — partial' : ''}`;
      tree.append(this.row({ ...f.root, name: label }, f.root.bytes, 1, true));
    }
    this.body.append(tree);
  }

  private row(n: DiskUsageNode, total: number, level: number, open: boolean): HTMLElement {
    const kids = n.children ?? [];
    const expandable = kids.length > 0 || !!n.others;
    const li = el('li', { className: 'du-item', attrs: { role: 'treeitem', 'aria-level': String(level) } });
    li.dataset.path = n.path;
    li.dataset.bytes = String(n.bytes);
    const toggle = el('button', { className: 'du-toggle', text: expandable ? (open ? '▾' : '▸') : '', attrs: { type: 'button', tabindex: expandable ? '0' : '-1', 'aria-label': expandable ? `Expand ${n.name}` : n.name } });
    const line = el('div', { className: 'du-row' }, toggle,
      el('span', { className: 'du-name', text: n.type === 'dir' && level > 1 ? `${n.name}/` : n.name, title: n.path }),
      el('span', { className: 'du-bytes', text: formatBytes(n.bytes) }),
      el('span', { className: 'du-share', text: share(n.bytes, total) }),
      el('span', { className: 'du-bar', attrs: { 'aria-hidden': 'true' } }, el('span', { className: 'du-bar-fill' })));
    (line.lastElementChild!.firstElementChild as HTMLElement).style.width = `${total > 0 ? Math.min(100, (n.bytes / total) * 100) : 0}%`;
    li.append(line);
    if (!expandable) return li;
    const group = el('ul', { attrs: { role: 'group' } });
    for (const k of kids) group.append(this.row(k, total, level + 1, false));
    if (n.others) {
      const o = el('li', { className: 'du-item du-others', attrs: { role: 'treeitem', 'aria-level': String(level + 1) } },
        el('div', { className: 'du-row' }, el('span', { className: 'du-toggle' }),
          el('span', { className: 'du-name', text: `${n.others.entries} other entr${n.others.entries === 1 ? 'y' : 'ies'}` }),
          el('span', { className: 'du-bytes', text: formatBytes(n.others.bytes) }),
          el('span', { className: 'du-share', text: share(n.others.bytes, total) })));
      group.append(o);
    }
    group.hidden = !open;
    li.setAttribute('aria-expanded', String(open));
    toggle.addEventListener('click', () => {
      group.hidden = !group.hidden;
      li.setAttribute('aria-expanded', String(!group.hidden));
      toggle.textContent = group.hidden ? '▸' : '▾';
      toggle.setAttribute('aria-label', `${group.hidden ? 'Expand' : 'Collapse'} ${n.name}`);
    });
    li.append(group);
    return li;
  }
}
