/**
 * The guest's disk usage: the largest folders and files of each browsable guest file system, by
 * allocated bytes (as `du` counts them; src/guest/space/usage.ts), in a collapsible panel under the
 * space summary. Asked of the host only when the panel is first opened (it walks every folder's
 * metadata). Each row has its size and its share of the file system's total; folders expand.
 * A file's name opens it read-only in a tab (the qcow2-guest file system, as the structure tree's
 * guest files do); every row's "Show in tree" expands the structure tree's Guest section down to its
 * node and selects it (a file's clusters are then outlined on the cluster map).
 */
import type { DiskUsageNode, DiskUsageReply, NodeId } from '../src/protocol';
import { formatBytes } from '../src/engine/units';
import { clear, el, errorText } from './dom';

export interface DiskUsageHost {
  load(): Promise<DiskUsageReply>;
  /** Opens a guest file in a tab. */
  open(partition: number, path: string): void;
  /** Expands the structure tree along these ids (root first) and selects the last. */
  reveal(ids: NodeId[]): void;
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
      tree.append(this.row({ ...f.root, name: label }, f.root.bytes, 1, true, { partition: f.partition, above: f.treePath }));
    }
    this.body.append(tree);
  }

  private row(n: DiskUsageNode, total: number, level: number, open: boolean, at: { partition: number; above: NodeId[] }): HTMLElement {
    const kids = n.children ?? [];
    const expandable = kids.length > 0 || !!n.others;
    const li = el('li', { className: 'du-item', attrs: { role: 'treeitem', 'aria-level': String(level) } });
    li.dataset.path = n.path;
    li.dataset.bytes = String(n.bytes);
    const toggle = el('button', { className: 'du-toggle', text: expandable ? (open ? '▾' : '▸') : '', attrs: { type: 'button', tabindex: expandable ? '0' : '-1', 'aria-label': expandable ? `Expand ${n.name}` : n.name } });
    const text = n.type === 'dir' && level > 1 ? `${n.name}/` : n.name;
    const isFile = n.type === 'file' || n.type === 'symlink';
    const name = isFile
      ? el('button', { className: 'du-name du-open', text, title: `Open ${n.path} (read-only)`, attrs: { type: 'button' } })
      : el('span', { className: 'du-name', text, title: n.path });
    if (isFile) name.addEventListener('click', () => this.host.open(at.partition, n.path));
    const chain = [...at.above, n.nodeId];
    const reveal = el('button', { className: 'du-reveal', text: '⌖', title: `Show ${n.path} in the structure tree`, attrs: { type: 'button', 'aria-label': `Show ${n.path} in the structure tree` } });
    reveal.addEventListener('click', () => this.host.reveal(chain));
    const line = el('div', { className: 'du-row' }, toggle, name,
      el('span', { className: 'du-bytes', text: formatBytes(n.bytes) }),
      el('span', { className: 'du-share', text: share(n.bytes, total) }),
      el('span', { className: 'du-bar', attrs: { 'aria-hidden': 'true' } }, el('span', { className: 'du-bar-fill' })), reveal);
    (line.querySelector('.du-bar-fill') as HTMLElement).style.width = `${total > 0 ? Math.min(100, (n.bytes / total) * 100) : 0}%`;
    li.append(line);
    if (!expandable) return li;
    const group = el('ul', { attrs: { role: 'group' } });
    for (const k of kids) group.append(this.row(k, total, level + 1, false, { partition: at.partition, above: chain }));
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
