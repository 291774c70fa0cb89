/**
 * The one codec of the editor's tree node ids. The webview treats a NodeId as opaque; the host
 * mints it from a NodeRef here and reads it back here, nowhere else. The text form is stable
 * (ids are persisted in the webview's state across reloads): `l1e:a:3`, `l2e:0:3:31`, and a page
 * of a large table as `<parent>|p:<start>:<end>`.
 */
import { ACTIVE_L1, type ClusterOwnerInfo } from '../engine/check/inspect';
import { TREE_PAGE_SIZE, type NodeId, ROOT_NODE_ID } from '../protocol';

/** The table an L1/L2 node belongs to: 'active' or a snapshot index. */
export type TableRef = 'active' | number;
export type FeatureGroup = 'incompatible' | 'compatible' | 'autoclear';

export type NodeRef =
  | { kind: 'root' }
  | { kind: 'header' }
  | { kind: 'headerField'; index: number }
  | { kind: 'features' }
  | { kind: 'featureGroup'; group: FeatureGroup }
  | { kind: 'featureBit'; group: FeatureGroup; bit: number }
  | { kind: 'extensions' }
  | { kind: 'extension'; index: number }
  | { kind: 'backing' }
  | { kind: 'layer'; depth: number | 'error' }
  | { kind: 'l1'; table: TableRef }
  | { kind: 'l1Entry'; table: TableRef; l1Index: number }
  | { kind: 'l2Entry'; table: TableRef; l1Index: number; l2Index: number }
  | { kind: 'refcount' }
  | { kind: 'reftableEntry'; index: number }
  | { kind: 'refcountEntry'; index: number; entry: number }
  | { kind: 'snapshots' }
  | { kind: 'snapshot'; index: number }
  | { kind: 'snapshotField'; index: number; field: string }
  | { kind: 'bitmaps' }
  | { kind: 'bitmap'; index: number }
  | { kind: 'bitmapInfo'; index: number }
  | { kind: 'bitmapEntry'; index: number; entry: number }
  | { kind: 'encryption' }
  | { kind: 'encryptionField'; name: string };

/** The nodes whose children are a table's entries, paged when there are many. */
export type TableNodeRef = Extract<NodeRef, { kind: 'l1' | 'l1Entry' | 'refcount' | 'reftableEntry' | 'bitmap' | 'snapshots' | 'bitmaps' }>;
export function isTableNode(r: NodeRef): r is TableNodeRef {
  return r.kind === 'l1' || r.kind === 'l1Entry' || r.kind === 'refcount' || r.kind === 'reftableEntry' || r.kind === 'bitmap' || r.kind === 'snapshots' || r.kind === 'bitmaps';
}

/** Children [s, e) of a table node. */
export interface PageRange { s: number; e: number }

const table = (t: TableRef): string => (t === 'active' ? 'a' : String(t));

/** The id of a node (of one page of its children, with `page`). */
export function nodeId(r: NodeRef, page?: PageRange): NodeId {
  const base = baseId(r);
  return page ? `${base}|p:${page.s}:${page.e}` : base;
}

function baseId(r: NodeRef): NodeId {
  switch (r.kind) {
    case 'root': return ROOT_NODE_ID;
    case 'header': case 'features': case 'extensions': case 'backing': case 'refcount': case 'snapshots': case 'bitmaps': case 'encryption': return r.kind;
    case 'headerField': return `hf:${r.index}`;
    case 'featureGroup': return `feat:${r.group}`;
    case 'featureBit': return `fb:${r.group}:${r.bit}`;
    case 'extension': return `ext:${r.index}`;
    case 'layer': return `layer:${r.depth}`;
    case 'l1': return `l1:${table(r.table)}`;
    case 'l1Entry': return `l1e:${table(r.table)}:${r.l1Index}`;
    case 'l2Entry': return `l2e:${table(r.table)}:${r.l1Index}:${r.l2Index}`;
    case 'reftableEntry': return `rte:${r.index}`;
    case 'refcountEntry': return `rbe:${r.index}:${r.entry}`;
    case 'snapshot': return `snap:${r.index}`;
    case 'snapshotField': return `si:${r.index}:${r.field}`;
    case 'bitmap': return `bm:${r.index}`;
    case 'bitmapInfo': return `bmi:${r.index}`;
    case 'bitmapEntry': return `bme:${r.index}:${r.entry}`;
    case 'encryptionField': return `enc:${r.name}`;
  }
}

/** The node an id names (and the page of its children), or undefined for an id this codec never minted. */
export function parseNodeId(id: NodeId): { ref: NodeRef; page?: PageRange } | undefined {
  let base = id, page: PageRange | undefined;
  const bar = id.indexOf('|p:');
  if (bar >= 0) {
    const [s, e] = id.slice(bar + 3).split(':').map(Number);
    if (!Number.isSafeInteger(s) || !Number.isSafeInteger(e)) return undefined;
    base = id.slice(0, bar);
    page = { s, e };
  }
  const ref = parseBase(base);
  return ref ? { ref, page } : undefined;
}

function parseBase(id: string): NodeRef | undefined {
  if (id === ROOT_NODE_ID) return { kind: 'root' };
  const colon = id.indexOf(':');
  const kind = colon < 0 ? id : id.slice(0, colon);
  const rest = colon < 0 ? [] : id.slice(colon + 1).split(':');
  const n = (k: number) => Number(rest[k]);
  const t = (k: number): TableRef => (rest[k] === 'a' ? 'active' : Number(rest[k]));
  switch (kind) {
    case 'header': case 'features': case 'extensions': case 'backing': case 'refcount': case 'snapshots': case 'bitmaps': case 'encryption':
      return rest.length ? undefined : { kind };
    case 'hf': return { kind: 'headerField', index: n(0) };
    case 'feat': return { kind: 'featureGroup', group: rest[0] as FeatureGroup };
    case 'fb': return { kind: 'featureBit', group: rest[0] as FeatureGroup, bit: n(1) };
    case 'ext': return { kind: 'extension', index: n(0) };
    case 'layer': return { kind: 'layer', depth: rest[0] === 'error' ? 'error' : n(0) };
    case 'l1': return { kind: 'l1', table: t(0) };
    case 'l1e': return { kind: 'l1Entry', table: t(0), l1Index: n(1) };
    case 'l2e': return { kind: 'l2Entry', table: t(0), l1Index: n(1), l2Index: n(2) };
    case 'rte': return { kind: 'reftableEntry', index: n(0) };
    case 'rbe': return { kind: 'refcountEntry', index: n(0), entry: n(1) };
    case 'snap': return { kind: 'snapshot', index: n(0) };
    case 'si': return { kind: 'snapshotField', index: n(0), field: rest.slice(1).join(':') };
    case 'bm': return { kind: 'bitmap', index: n(0) };
    case 'bmi': return { kind: 'bitmapInfo', index: n(0) };
    case 'bme': return { kind: 'bitmapEntry', index: n(0), entry: n(1) };
    case 'enc': return { kind: 'encryptionField', name: rest.join(':') };
    default: return undefined;
  }
}

/** Splits children [s, e) into at most TREE_PAGE_SIZE pages (null when they fit on one level). */
export function pageRanges(s: number, e: number): PageRange[] | null {
  const n = e - s;
  if (n <= TREE_PAGE_SIZE) return null;
  let span = TREE_PAGE_SIZE;
  while (Math.ceil(n / span) > TREE_PAGE_SIZE) span *= TREE_PAGE_SIZE;
  const out: PageRange[] = [];
  for (let a = s; a < e; a += span) out.push({ s: a, e: Math.min(e, a + span) });
  return out;
}

/** The page ids from the top level down to the page holding child `index` of a table node with `n` children. */
export function pagePath(parent: NodeRef, n: number, index: number): NodeId[] {
  const out: NodeId[] = [];
  let s = 0, e = n;
  for (;;) {
    const pages = pageRanges(s, e);
    if (!pages) return out;
    const p = pages.find(r => index >= r.s && index < r.e);
    if (!p) return out;
    out.push(nodeId(parent, p));
    s = p.s; e = p.e;
  }
}

/** The tree node of a cluster's owner (the entry pointing at it, or the table it is part of). */
export function ownerNode(o: ClusterOwnerInfo): NodeRef | undefined {
  const t: TableRef = o.table === ACTIVE_L1 ? 'active' : o.table;
  switch (o.role) {
    case 'header': return { kind: 'header' };
    case 'l1': return { kind: 'l1', table: 'active' };
    case 'l2': return { kind: 'l1Entry', table: t, l1Index: o.a };
    case 'data': case 'compressed': return { kind: 'l2Entry', table: t, l1Index: o.a, l2Index: o.b };
    case 'refcountTable': return { kind: 'refcount' };
    case 'refcountBlock': return { kind: 'reftableEntry', index: o.a };
    case 'snapshotTable': return { kind: 'snapshots' };
    case 'snapshotL1': return { kind: 'l1', table: o.table };
    case 'bitmapDirectory': return { kind: 'bitmaps' };
    case 'bitmapTable': return { kind: 'bitmap', index: o.table };
    case 'bitmapData': return { kind: 'bitmapEntry', index: o.table, entry: o.a };
    case 'crypto': return { kind: 'encryption' };
    default: return undefined;
  }
}
