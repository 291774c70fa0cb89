/**
 * The structure tree: lazy (children are requested when a node is first expanded), paged by the
 * host, ARIA tree semantics with a roving tabindex and the WAI-ARIA keyboard model
 * (Up/Down, Left/Right, Home/End, Enter, * not needed).
 */
import type { NodeId, Severity, TreeNode } from '../src/protocol';
import { ROOT_NODE_ID } from '../src/protocol';
import { clear, el, errorText } from './dom';

export interface TreeHost {
  getChildren(id: NodeId): Promise<TreeNode[]>;
  /** Selection moved to a node (keyboard or mouse). */
  onSelect(node: TreeNode): void;
  /** Enter / double-click: open the node's bytes. */
  onActivate(node: TreeNode): void;
  onStateChange(): void;
  /** Extra severity for a node (e.g. a finding of the last check lies in its bytes). */
  decorate?(node: TreeNode): Severity | undefined;
}

/** Letters typed within this time form one type-ahead prefix. */
export const TYPE_AHEAD_MS = 500;

const SEVERITY_RANK: Record<Severity, number> = { info: 1, warning: 2, error: 3 };
function worst(a: Severity | undefined, b: Severity | undefined): Severity | undefined {
  if (!a) return b;
  if (!b) return a;
  return SEVERITY_RANK[a] >= SEVERITY_RANK[b] ? a : b;
}

interface Item {
  node: TreeNode;
  li: HTMLLIElement;
  row: HTMLDivElement;
  group?: HTMLUListElement;
  loaded: boolean;
  loading?: Promise<void>;
  level: number;
  parent?: Item;
}

/** How many re-expanded nodes the first screen asks for with the first level. */
const PREFETCH_MAX = 16;

export class StructureTree {
  readonly element: HTMLElement;
  private readonly ul: HTMLUListElement;
  private items = new Map<NodeId, Item>();
  private selected: Item | undefined;
  private expanded = new Set<NodeId>();
  /** Findings inside each node's subtree (not on the node itself), shown while the node is collapsed. */
  private inner = new Map<NodeId, { count: number; severity: Severity }>();

  constructor(private readonly host: TreeHost) {
    this.ul = el('ul', { className: 'tree', attrs: { role: 'tree', 'aria-label': 'Image structure' } });
    this.element = el('div', { className: 'tree-scroll' }, this.ul);
    this.ul.addEventListener('keydown', e => this.onKey(e));
  }

  get expandedIds(): NodeId[] {
    return [...this.expanded];
  }
  get selectedId(): NodeId | undefined {
    return this.selected?.node.id;
  }

  /** Children asked for ahead of load(): the first level, and the nodes it will re-expand. */
  private prefetched = new Map<NodeId, Promise<TreeNode[]>>();

  /**
   * Asks the host now (with the summary) for the first level and the children of the nodes the next
   * load() re-expands (the Header by default), so the first screen waits for one round trip to the
   * host, not one per level. At most PREFETCH_MAX nodes; an id that no longer exists costs one
   * unused error reply.
   */
  prefetch(expand: readonly NodeId[], answer: (id: NodeId, asked: Promise<TreeNode[]>) => Promise<TreeNode[]> = (_, asked) => asked): void {
    for (const id of [ROOT_NODE_ID, ...expand.slice(0, PREFETCH_MAX)]) {
      const p = answer(id, this.host.getChildren(id));
      p.catch(() => undefined); // the load that uses it reports a failure; until then it is not unhandled
      this.prefetched.set(id, p);
    }
    void Promise.allSettled(this.prefetched.values()).then(() => performance.mark('lens:root'));
  }

  /** The prefetched children of `id` (once), or a new request. */
  private children(id: NodeId): Promise<TreeNode[]> {
    const p = this.prefetched.get(id);
    this.prefetched.delete(id);
    return p ?? this.host.getChildren(id);
  }

  /** (Re)loads the top level and re-expands `expand` (ids in any order: parents load first). */
  async load(expand: NodeId[] = [], select?: NodeId): Promise<void> {
    this.items.clear();
    this.selected = undefined;
    this.expanded = new Set();
    clear(this.ul);
    this.ul.setAttribute('aria-busy', 'true');
    const loading = el('li', { className: 'tree-loading', text: 'Loading…', attrs: { role: 'none' } });
    this.ul.append(loading);
    let nodes: TreeNode[];
    try {
      nodes = await this.children(ROOT_NODE_ID);
    } catch (e) {
      loading.textContent = `Cannot read the structure: ${errorText(e)}`;
      loading.className = 'tree-error';
      this.ul.removeAttribute('aria-busy');
      this.prefetched.clear();
      return;
    }
    loading.remove();
    this.ul.removeAttribute('aria-busy');
    this.renderChildren(this.ul, nodes, 1, undefined);
    const want = new Set(expand);
    // expand breadth-first so parents exist before their children
    for (let round = 0; round < 32 && want.size; round++) {
      const ready = [...want].filter(id => this.items.has(id));
      if (!ready.length) break;
      for (const id of ready) want.delete(id);
      await Promise.all(ready.map(id => this.expand(this.items.get(id)!, false)));
    }
    this.prefetched.clear(); // what was not re-expanded is not kept for a later load (the file may change)
    const first = this.items.get(select ?? '') ?? this.firstVisible();
    if (first) this.select(first, false, select !== undefined);
  }

  private renderChildren(container: HTMLUListElement, nodes: TreeNode[], level: number, parent: Item | undefined): void {
    nodes.forEach((node, i) => {
      const row = el('div', { className: 'tree-row' });
      const twisty = el('span', { className: 'twisty', attrs: { 'aria-hidden': 'true' } });
      const label = el('span', { className: 'tree-label', text: node.label });
      row.append(twisty, label);
      if (node.description) row.append(el('span', { className: 'tree-desc', text: node.description }));
      row.append(el('span', { className: 'sev-slot' }));
      row.classList.add(`indent-${Math.min(level, 16)}`);
      row.dataset.level = String(level);
      const li = el('li', {
        attrs: {
          role: 'treeitem', 'aria-level': String(level), 'aria-setsize': String(nodes.length), 'aria-posinset': String(i + 1),
          'aria-selected': 'false', tabindex: '-1', 'aria-label': node.description ? `${node.label}, ${node.description}` : node.label,
        },
      }, row);
      li.dataset.nodeId = node.id;
      // the description is cut with an ellipsis in a narrow pane: the whole text is the row's tooltip
      row.title = node.tooltip ?? (node.description ? `${node.label} — ${node.description}` : node.label);
      const item: Item = { node, li, row, loaded: false, level, parent };
      this.decorate(item);
      if (node.hasChildren) {
        li.setAttribute('aria-expanded', 'false');
        twisty.textContent = '▸';
      }
      row.addEventListener('click', ev => {
        this.select(item, true);
        if (node.hasChildren && (ev.target === twisty)) void this.toggle(item);
        else this.host.onActivate(node);
      });
      row.addEventListener('dblclick', () => { if (node.hasChildren) void this.toggle(item); });
      this.items.set(node.id, item);
      container.append(li);
    });
  }

  /** Shows the node's own severity or the one the host's decorator gives it (from the last check). */
  private decorate(item: Item): void {
    const slot = item.row.querySelector('.sev-slot')!;
    clear(slot);
    const sev = worst(item.node.severity, this.host.decorate?.(item.node));
    if (sev) slot.append(el('span', { className: `sev sev-${sev}`, text: sev === 'error' ? '✖' : sev === 'warning' ? '⚠' : 'ℹ', attrs: { 'aria-label': sev, role: 'img' } }));
    const inside = this.inner.get(item.node.id);
    const collapsed = item.li.getAttribute('aria-expanded') !== 'true';
    let innerText = '';
    if (inside && collapsed) {
      innerText = inside.count === 1 ? '1 finding inside' : `${inside.count} findings inside`;
      slot.append(el('span', { className: `inner-findings sev-${inside.severity}`, text: `${inside.severity === 'error' ? '✖' : inside.severity === 'warning' ? '⚠' : 'ℹ'} ${inside.count}`, title: innerText }));
    }
    const base = item.node.description ? `${item.node.label}, ${item.node.description}` : item.node.label;
    item.li.setAttribute('aria-label', [base, sev, innerText].filter(Boolean).join(', '));
  }

  /** Sets the findings inside collapsed nodes (ancestor id → how many and how bad) and redraws the markers. */
  setInnerFindings(inner: Map<NodeId, { count: number; severity: Severity }>): void {
    this.inner = inner;
    this.redecorate();
  }

  /** Re-applies decorations (after a new check result). */
  redecorate(): void {
    for (const it of this.items.values()) this.decorate(it);
  }

  private async loadChildren(item: Item): Promise<void> {
    if (item.loaded) return;
    item.loading ??= (async () => {
      const group = el('ul', { attrs: { role: 'group' } });
      const loading = el('li', { className: 'tree-loading', text: 'Loading…', attrs: { role: 'none' } });
      group.append(loading);
      item.group = group;
      item.li.append(group);
      item.li.setAttribute('aria-busy', 'true');
      try {
        const kids = await this.children(item.node.id);
        loading.remove();
        if (!kids.length) group.append(el('li', { className: 'tree-empty', text: '(empty)', attrs: { role: 'none' } }));
        this.renderChildren(group, kids, item.level + 1, item);
        item.loaded = true;
      } catch (e) {
        loading.textContent = `Error: ${errorText(e)}`;
        loading.className = 'tree-error';
        item.loading = undefined;
        item.loaded = true; // show the error; collapse + expand retries
        item.li.addEventListener('focus', () => undefined, { once: true });
      } finally {
        item.li.removeAttribute('aria-busy');
      }
    })();
    await item.loading;
  }

  async expand(item: Item, notify = true): Promise<void> {
    if (!item.node.hasChildren) return;
    item.li.setAttribute('aria-expanded', 'true');
    item.row.querySelector('.twisty')!.textContent = '▾';
    this.expanded.add(item.node.id);
    this.decorate(item);
    if (item.group) item.group.hidden = false;
    await this.loadChildren(item);
    if (notify) this.host.onStateChange();
  }

  collapse(item: Item): void {
    if (!item.node.hasChildren) return;
    item.li.setAttribute('aria-expanded', 'false');
    item.row.querySelector('.twisty')!.textContent = '▸';
    this.expanded.delete(item.node.id);
    this.decorate(item);
    if (item.group) item.group.hidden = true;
    if (item.group?.querySelector('.tree-error')) {
      // let a failed load retry on the next expand
      item.group.remove();
      item.group = undefined;
      item.loaded = false;
    }
    this.host.onStateChange();
  }

  private async toggle(item: Item): Promise<void> {
    if (item.li.getAttribute('aria-expanded') === 'true') this.collapse(item);
    else await this.expand(item);
  }

  private select(item: Item, focus: boolean, scroll = true): void {
    if (this.selected) {
      this.selected.li.setAttribute('aria-selected', 'false');
      this.selected.li.tabIndex = -1;
      this.selected.row.classList.remove('selected');
    }
    this.selected = item;
    item.li.setAttribute('aria-selected', 'true');
    item.li.tabIndex = 0;
    item.row.classList.add('selected');
    if (focus) item.li.focus({ preventScroll: true });
    if (scroll) item.row.scrollIntoView({ block: 'nearest' });
    this.host.onSelect(item.node);
    this.host.onStateChange();
  }

  private visibleItems(): Item[] {
    const out: Item[] = [];
    for (const li of Array.from(this.ul.querySelectorAll<HTMLLIElement>('li[role=treeitem]'))) {
      if (li.parentElement?.closest('ul[role=group][hidden]')) continue;
      const it = this.items.get(li.dataset.nodeId!);
      if (it) out.push(it);
    }
    return out;
  }

  private firstVisible(): Item | undefined {
    return this.visibleItems()[0];
  }

  private onKey(e: KeyboardEvent): void {
    const cur = this.selected;
    if (!cur) return;
    const vis = this.visibleItems();
    const i = vis.indexOf(cur);
    const go = (it: Item | undefined) => { if (it) this.select(it, true); };
    switch (e.key) {
      case 'ArrowDown': go(vis[i + 1]); break;
      case 'ArrowUp': go(vis[i - 1]); break;
      case 'Home': go(vis[0]); break;
      case 'End': go(vis[vis.length - 1]); break;
      case 'ArrowRight':
        if (cur.node.hasChildren) {
          if (cur.li.getAttribute('aria-expanded') !== 'true') void this.expand(cur);
          else if (cur.loaded) go(this.visibleItems()[i + 1]?.parent === cur ? this.visibleItems()[i + 1] : undefined);
        }
        break;
      case 'ArrowLeft':
        if (cur.node.hasChildren && cur.li.getAttribute('aria-expanded') === 'true') this.collapse(cur);
        else go(cur.parent);
        break;
      case ' ':
      case 'Enter':
        if (e.key === ' ' && this.typed) { this.typeAhead(e, vis, i); break; } // a space inside a type-ahead prefix
        this.host.onActivate(cur.node);
        if (e.key === 'Enter' && cur.node.hasChildren) void this.toggle(cur);
        break;
      default:
        if (!this.typeAhead(e, vis, i)) return;
        break;
    }
    e.preventDefault();
    e.stopPropagation();
  }

  private typed = '';
  private typedTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * Type-ahead, as VS Code's trees do: letters typed within TYPE_AHEAD_MS of each other move to the
   * next visible row whose label starts with them (one letter typed again cycles through the rows
   * starting with it). Returns whether the key was taken.
   */
  private typeAhead(e: KeyboardEvent, vis: Item[], i: number): boolean {
    if (e.key.length !== 1 || e.ctrlKey || e.metaKey || e.altKey || (e.key === ' ' && !this.typed)) return false;
    clearTimeout(this.typedTimer);
    this.typedTimer = setTimeout(() => { this.typed = ''; }, TYPE_AHEAD_MS);
    this.typed += e.key.toLowerCase();
    const repeated = [...this.typed].every(c => c === this.typed[0]);
    const find = (prefix: string, from: number) => {
      for (let k = 0; k < vis.length; k++) {
        const it = vis[(from + k) % vis.length];
        if (it.node.label.toLowerCase().startsWith(prefix)) return it;
      }
      return undefined;
    };
    // a longer prefix may still match the current row; one letter (or the same one again) moves on
    const hit = (this.typed.length > 1 ? find(this.typed, Math.max(0, i)) : undefined) ?? (repeated ? find(this.typed[0], i + 1) : undefined);
    if (hit && hit !== this.selected) this.select(hit, true);
    return true;
  }

  /** Expands the chain of ids (root first) and selects the last one that exists. */
  async reveal(path: NodeId[]): Promise<boolean> {
    let last: Item | undefined;
    for (let k = 0; k < path.length; k++) {
      const it = this.items.get(path[k]);
      // a page the "allocated only" list does not have (its entries are listed flat) is stepped over
      if (!it) { if (last?.loaded) continue; break; }
      last = it;
      if (k < path.length - 1) await this.expand(it, false);
    }
    if (last) {
      this.select(last, false);
      this.selected?.row.classList.add('flash');
      setTimeout(() => last?.row.classList.remove('flash'), 1200);
    }
    this.host.onStateChange();
    return last !== undefined && last.node.id === path[path.length - 1];
  }

  focus(): void {
    (this.selected?.li ?? this.firstVisible()?.li)?.focus();
  }
}
