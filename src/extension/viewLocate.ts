/**
 * Finding a tree node: the ids to expand, root first, to reach the node of a structure path (a
 * finding's, an error's) or of a host offset (a click in the hex view or the cluster map).
 */
import { ACTIVE_L1, type ClusterRoles, clusterOwner, l1Table } from '../engine/check/inspect';
import type { Qcow2Image } from '../engine/image/image';
import { parsePath, PATH_SEPARATOR, type PathStep, type StructurePath } from '../engine/path';
import type { NodeId } from '../protocol';
import { nodeId, type NodeRef, ownerNode, pagePath } from './nodeId';
import { childCount, tableIndex, tableRef } from './viewTree';

/** The steps at the start of `text` that parse as a structure path (findings may end in free text, e.g. a range). */
function leadingPath(text: string): StructurePath {
  const out: PathStep[] = [];
  for (const part of text.split(PATH_SEPARATOR)) {
    const p = parsePath(part);
    if (!p) break;
    out.push(...p);
  }
  return out;
}

export class NodeLocator {
  constructor(private readonly img: Qcow2Image, private readonly roles: () => Promise<ClusterRoles>) {}

  async locate(structure?: string, hostOffset?: number): Promise<NodeId[]> {
    const img = this.img;
    if (structure) {
      const byPath = this.fromPath(leadingPath(structure), hostOffset);
      if (byPath) return byPath;
    }
    if (hostOffset === undefined || !Number.isSafeInteger(hostOffset) || hostOffset < 0) return [];
    if (hostOffset < img.header.headerLength) return [nodeId({ kind: 'header' })];
    const r = await this.roles();
    const c = Math.floor(hostOffset / img.clusterSize);
    if (c >= r.role.length) return [];
    const o = clusterOwner(img, r, c);
    if (!o) return this.pathToRefcountEntry(c); // free or leaked: what matters is its refcount
    const node = ownerNode(o);
    if (!node) return [];
    return this.fromOwnerByte(node, hostOffset);
  }

  /** A structure path's node; undefined when the path names none (the host offset decides then). */
  private fromPath(p: StructurePath, hostOffset: number | undefined): NodeId[] | undefined {
    const img = this.img;
    const at = (name: PathStep['name']) => p.findIndex(s => s.name === name);
    const l1 = at('L1');
    if (l1 >= 0 && p[l1].index !== undefined) {
      const snap = l1 > 0 && p[l1 - 1].name === 'snapshot' ? p[l1 - 1] : undefined;
      const t = snap ? (snap.index ?? img.snapshots.findIndex(s => s.name === snap.label)) : ACTIVE_L1;
      const l2 = p[l1 + 1]?.name === 'L2' ? p[l1 + 1].index : undefined;
      if (t === ACTIVE_L1 || (t >= 0 && t < img.snapshots.length)) return this.pathTo(t, p[l1].index, l2);
    }
    const bm = at('bitmap');
    if (bm >= 0 && p[bm].index !== undefined && p[bm + 1]?.name === 'bitmap table' && img.bitmaps[p[bm].index]) {
      const k = p[bm].index, entry = p[bm + 1].index;
      const up = this.pathToBitmap(k);
      if (entry === undefined) return up;
      return [...up, ...pagePath({ kind: 'bitmap', index: k }, img.bitmaps[k].bitmapTableSize, entry), nodeId({ kind: 'bitmapEntry', index: k, entry })];
    }
    const rt = at('refcount table');
    if (rt >= 0 && p[rt].index !== undefined) return this.pathToRefcount(p[rt].index);
    const first = p[0]?.name;
    if (first === 'header') return [nodeId({ kind: 'header' })];
    if (hostOffset !== undefined || !first) return undefined;
    if (first.startsWith('refcount')) return [nodeId({ kind: 'refcount' })];
    if (first.startsWith('snapshot')) return [nodeId({ kind: 'snapshots' })];
    if (first.startsWith('bitmap')) return [nodeId({ kind: 'bitmaps' })];
    return undefined;
  }

  /** The node of the byte at hostOffset inside the structure that owns its cluster. */
  private fromOwnerByte(node: NodeRef, hostOffset: number): NodeId[] {
    const img = this.img, cs = img.clusterSize;
    switch (node.kind) {
      case 'l1Entry': // a byte of an L2 table: its entry
        return this.pathTo(tableIndex(node.table), node.l1Index, Math.floor((hostOffset % cs) / img.g.l2EntrySize));
      case 'l2Entry': return this.pathTo(tableIndex(node.table), node.l1Index, node.l2Index);
      case 'l1': {
        const t = tableIndex(node.table);
        const i = Math.floor((hostOffset - l1Table(img, t).offset) / 8);
        if (i >= 0 && i < l1Table(img, t).size) return this.pathTo(t, i);
        return this.pathToL1(t);
      }
      case 'reftableEntry': { // a byte of a refcount block: the entry it holds (or starts)
        const k = Math.floor(((hostOffset % cs) * 8) / img.header.refcountBits);
        return [...this.pathToRefcount(node.index), ...pagePath(node, img.rg.blockEntries, k), nodeId({ kind: 'refcountEntry', index: node.index, entry: k })];
      }
      case 'refcount': return this.pathToRefcount(Math.floor((hostOffset - img.header.refcountTableOffset) / 8));
      case 'bitmapEntry':
        return [...this.pathToBitmap(node.index), ...pagePath({ kind: 'bitmap', index: node.index }, img.bitmaps[node.index]?.bitmapTableSize ?? 0, node.entry), nodeId(node)];
      case 'bitmap': {
        const k = node.index, b = img.bitmaps[k];
        const up = this.pathToBitmap(k);
        const idx = b ? Math.floor((hostOffset - b.bitmapTableOffset) / 8) : -1;
        return b && idx >= 0 && idx < b.bitmapTableSize ? [...up, ...pagePath(node, b.bitmapTableSize, idx), nodeId({ kind: 'bitmapEntry', index: k, entry: idx })] : up;
      }
      default: return [nodeId(node)];
    }
  }

  private pathToBitmap(k: number): NodeId[] {
    return [nodeId({ kind: 'bitmaps' }), ...pagePath({ kind: 'bitmaps' }, this.img.bitmaps.length, k), nodeId({ kind: 'bitmap', index: k })];
  }

  private pathToL1(t: number): NodeId[] {
    if (t === ACTIVE_L1) return [nodeId({ kind: 'l1', table: 'active' })];
    return [nodeId({ kind: 'snapshots' }), ...pagePath({ kind: 'snapshots' }, this.img.snapshots.length, t), nodeId({ kind: 'snapshot', index: t }), nodeId({ kind: 'l1', table: t })];
  }

  private pathTo(t: number, l1Index: number, l2Index?: number): NodeId[] {
    const table = tableRef(t);
    const l1Size = childCount(this.img, { kind: 'l1', table });
    if (l1Index < 0 || l1Index >= l1Size) return [];
    const entry: NodeRef = { kind: 'l1Entry', table, l1Index };
    const out = [...this.pathToL1(t), ...pagePath({ kind: 'l1', table }, l1Size, l1Index), nodeId(entry)];
    const l2Size = childCount(this.img, entry);
    if (l2Index !== undefined && l2Index >= 0 && l2Index < l2Size) {
      out.push(...pagePath(entry, l2Size, l2Index), nodeId({ kind: 'l2Entry', table, l1Index, l2Index }));
    }
    return out;
  }

  /** The refcount entry of host cluster c, inside its refcount block. */
  private pathToRefcountEntry(c: number): NodeId[] {
    const be = this.img.rg.blockEntries;
    const i = Math.floor(c / be), k = c % be;
    if (!this.img.refcountTable[i]) return [];
    return [...this.pathToRefcount(i), ...pagePath({ kind: 'reftableEntry', index: i }, be, k), nodeId({ kind: 'refcountEntry', index: i, entry: k })];
  }

  private pathToRefcount(i: number): NodeId[] {
    const n = childCount(this.img, { kind: 'refcount' });
    if (i < 0 || i >= n) return [nodeId({ kind: 'refcount' })];
    return [nodeId({ kind: 'refcount' }), ...pagePath({ kind: 'refcount' }, n, i), nodeId({ kind: 'reftableEntry', index: i })];
  }
}
