/**
 * The structure tree the editor shows: the children of each node, paged (TREE_PAGE_SIZE children
 * per level, nested pages for larger tables), each page reading only the slice of its table it
 * shows. The entries' meaning and validity come from the engine's inspect module; this file only
 * words them and mints their node ids.
 */
import * as path from 'node:path';
import {
  ACTIVE_L1, bitmapEntries, l1Entries, l1Table, l2Entries, refcountEntries, reftableEntries, reftableLength,
} from '../engine/check/inspect';
import { hex } from '../engine/errors';
import type { Qcow2Image } from '../engine/image/image';
import { featureBits } from '../engine/qcow2/header';
import * as L from '../engine/qcow2/layout';
import { readEncryptInfo } from '../engine/image/encryption';
import { LUKS_KEY_SLOT_BYTES, slotDescriptorOffset } from '../engine/crypto/luksLayout';
import { formatPath, step } from '../engine/path';
import { formatBytes } from '../engine/units';
import { type HeaderField, type NodeId, TREE_PAGE_SIZE, type TreeNode } from '../protocol';
import { guestSectionNode, guestTreeChildren, isGuestNodeId } from './guestTree';
import type { Guest } from '../guest/guest';
import { type FeatureGroup, isTableNode, nodeId, type NodeRef, pageRanges, parseNodeId, type TableNodeRef, type TableRef } from './nodeId';

/** What the tree is built from: the open image and how its backing chain opened. */
export interface TreeSource {
  readonly img: Qcow2Image;
  readonly backingError?: string;
  /** The image has a backing file the settings say not to open (qcow2Lens.followBackingFiles). */
  readonly backingNotFollowed?: string;
  headerFields(): HeaderField[];
  extensionSummary(type: number, data: Buffer): string;
  /** The guest view of the disk (the tree's Guest section), opened at its first use. */
  guest?(): Promise<Guest>;
}

const FEATURE_GROUPS: readonly FeatureGroup[] = ['incompatible', 'compatible', 'autoclear'];
/** Where a feature group's 8-byte field is in the header. */
export function featureField(g: FeatureGroup): { offset: number; size: number } {
  return L.HEADER_FIELD[`${g}_features`];
}

// Snapshot table entry fields the tree points at (spec "Snapshots"): offsets within the entry.
const SNAPSHOT_DATE_SEC = 16;
const SNAPSHOT_VM_STATE_SIZE = 32;
/** disk_size is the second 8-byte field of the extra data. */
const SNAPSHOT_DISK_SIZE = L.SNAPSHOT_HEADER_SIZE + 8;

export function tableRef(t: number): TableRef {
  return t === ACTIVE_L1 ? 'active' : t;
}
export function tableIndex(t: TableRef): number {
  return t === 'active' ? ACTIVE_L1 : t;
}

/** Guest bytes an L1 table maps: the disk size (a snapshot's own, when its entry records one). */
function diskSizeOf(img: Qcow2Image, t: TableRef): number {
  const d = t === 'active' ? undefined : img.snapshots[t]?.diskSize;
  return d === undefined ? img.virtualSize : Number(d);
}

/** Number of children of a table node. L1 and L2 tables list no entry past the end of the disk. */
export function childCount(img: Qcow2Image, r: TableNodeRef): number {
  const perL2 = img.g.l2Size * img.clusterSize;
  switch (r.kind) {
    case 'l1': return Math.min(l1Table(img, tableIndex(r.table)).size, Math.ceil(diskSizeOf(img, r.table) / perL2));
    case 'l1Entry': return Math.max(0, Math.min(img.g.l2Size, Math.ceil((diskSizeOf(img, r.table) - r.l1Index * perL2) / img.clusterSize)));
    case 'refcount': return reftableLength(img);
    case 'reftableEntry': return img.rg.blockEntries;
    case 'bitmap': return img.bitmaps[r.index]?.bitmapTableSize ?? 0;
    case 'snapshots': return img.snapshots.length;
    case 'bitmaps': return img.bitmaps.length;
  }
}

/** The entries of an L1 or L2 table in [s, e) that map something (or are flawed), for "allocated only". */
async function allocatedIndexes(img: Qcow2Image, ref: TableNodeRef, s: number, e: number): Promise<Set<number> | undefined> {
  if (ref.kind === 'l1') return new Set((await l1Entries(img, tableIndex(ref.table), s, e)).filter(x => x.l2Offset !== 0 || x.flaws.length).map(x => x.index));
  if (ref.kind === 'l1Entry') return new Set((await l2Entries(img, tableIndex(ref.table), ref.l1Index, s, e)).filter(x => x.kind !== 'unallocated' || x.flaws.length).map(x => x.index));
  return undefined;
}

export async function treeChildren(src: TreeSource, id: NodeId, opts: { allocatedOnly?: boolean } = {}): Promise<TreeNode[]> {
  if (src.guest && isGuestNodeId(id)) return guestTreeChildren(() => src.guest!(), id);
  const parsed = parseNodeId(id);
  if (!parsed) return [];
  const { ref, page } = parsed;
  if (ref.kind === 'root') return rootChildren(src);
  if (isTableNode(ref)) {
    const n = childCount(src.img, ref);
    const r = page ?? { s: 0, e: n };
    const pages = pageRanges(r.s, r.e);
    const head = ref.kind === 'bitmap' && !page ? bitmapInfoLeaves(src.img, ref.index) : [];
    const keep = opts.allocatedOnly ? await allocatedIndexes(src.img, ref, r.s, r.e) : undefined;
    if (keep) {
      // a short list of what is used in place of pages; pages only when that list is long, and only those holding something
      if (!pages || keep.size <= TREE_PAGE_SIZE) return leaves(src.img, ref, r.s, r.e, keep);
      const used = [...keep];
      return pages.flatMap(p => {
        const k = used.filter(i => i >= p.s && i < p.e).length;
        return k ? [{ id: nodeId(ref, p), kind: 'page' as const, label: `[${p.s} … ${p.e - 1}]`, description: k === 1 ? '1 allocated' : `${k} allocated`, hasChildren: true }] : [];
      });
    }
    if (pages) {
      return [...head, ...pages.map(p => ({ id: nodeId(ref, p), kind: 'page' as const, label: `[${p.s} … ${p.e - 1}]`, hasChildren: true }))];
    }
    return [...head, ...(await leaves(src.img, ref, r.s, r.e))];
  }
  return fixedChildren(src, ref);
}

function setFeatureNames(img: Qcow2Image): string {
  return FEATURE_GROUPS.flatMap(k => featureBits(img.header, k).filter(b => b.set).map(b => b.name)).join(', ');
}

function rootChildren(src: TreeSource): TreeNode[] {
  const img = src.img, h = img.header;
  const cs = h.clusterSize;
  const features = featureField('incompatible');
  const out: TreeNode[] = [
    { id: nodeId({ kind: 'header' }), kind: 'header', label: 'Header', description: `qcow2 v${h.version}, ${formatBytes(h.size)}, ${formatBytes(cs)} clusters`, hasChildren: true, hostOffset: 0, hostLength: h.headerLength },
    { id: nodeId({ kind: 'features' }), kind: 'group', label: 'Feature bits', description: setFeatureNames(img) || 'none set', hasChildren: true, hostOffset: features.offset, hostLength: h.version >= 3 ? FEATURE_GROUPS.reduce((n, g) => n + featureField(g).size, 0) : undefined },
    { id: nodeId({ kind: 'extensions' }), kind: 'group', label: 'Header extensions', description: `${h.extensions.length}`, hasChildren: h.extensions.length > 0 },
    { id: nodeId({ kind: 'backing' }), kind: 'group', label: 'Backing chain', description: h.backingFile ? (src.backingNotFollowed ? 'not followed (settings)' : `${img.chain().length - 1} layer(s) below${src.backingError ? ' (broken)' : ''}`) : 'none', hasChildren: !!h.backingFile, severity: src.backingError ? 'error' : undefined },
    ...(src.guest ? [guestSectionNode()] : []),
    { id: nodeId({ kind: 'l1', table: 'active' }), kind: 'l1Table', label: 'L1 table', description: `${h.l1Size} entries at ${hex(h.l1TableOffset)}`, hasChildren: h.l1Size > 0, hostOffset: h.l1TableOffset, hostLength: h.l1Size * 8 },
    { id: nodeId({ kind: 'refcount' }), kind: 'refcountTable', label: 'Refcount table', description: `${h.refcountTableClusters} cluster(s) at ${hex(h.refcountTableOffset)}, ${h.refcountBits}-bit refcounts`, hasChildren: true, hostOffset: h.refcountTableOffset, hostLength: h.refcountTableClusters * cs },
    { id: nodeId({ kind: 'snapshots' }), kind: 'snapshotTable', label: 'Snapshots', description: `${img.snapshots.length}`, hasChildren: img.snapshots.length > 0, hostOffset: h.nbSnapshots ? h.snapshotsOffset : undefined },
    { id: nodeId({ kind: 'bitmaps' }), kind: 'bitmapDirectory', label: 'Bitmaps', description: `${img.bitmaps.length}`, hasChildren: img.bitmaps.length > 0, hostOffset: h.bitmaps?.bitmapDirectoryOffset, hostLength: h.bitmaps?.bitmapDirectorySize },
  ];
  if (img.encrypted) out.push({ id: nodeId({ kind: 'encryption' }), kind: 'encryption', label: 'Encryption', description: h.cryptMethod === L.CRYPT_AES ? 'AES (legacy)' : 'LUKS', hasChildren: true, hostOffset: h.crypto?.offset, hostLength: h.crypto?.length });
  return out;
}

async function fixedChildren(src: TreeSource, ref: NodeRef): Promise<TreeNode[]> {
  const img = src.img, h = img.header;
  switch (ref.kind) {
    case 'header':
      return src.headerFields().map((f, i) => ({ id: nodeId({ kind: 'headerField', index: i }), kind: 'headerField', label: f.name, description: `${f.value} — ${f.meaning}`, hasChildren: false, hostOffset: f.hostOffset, hostLength: f.size }));
    case 'features':
      return FEATURE_GROUPS.map(k => ({ id: nodeId({ kind: 'featureGroup', group: k }), kind: 'group', label: `${k[0].toUpperCase()}${k.slice(1)}`, description: featureBits(h, k).filter(b => b.set).map(b => b.name).join(', ') || 'none set', hasChildren: true, hostOffset: featureField(k).offset, hostLength: featureField(k).size }));
    case 'featureGroup': {
      const k = ref.group, f = featureField(k);
      // bit 0 is in the field's last byte (big-endian)
      return featureBits(h, k).map(b => ({ id: nodeId({ kind: 'featureBit', group: k, bit: b.bit }), kind: 'featureBit', label: `bit ${b.bit}: ${b.name}`, description: b.set ? 'set' : 'clear', hasChildren: false, hostOffset: f.offset + f.size - 1 - Math.floor(b.bit / 8), hostLength: 1, severity: b.set && !b.known ? 'warning' : undefined }));
    }
    case 'extensions':
      return h.extensions.map((e, i) => ({ id: nodeId({ kind: 'extension', index: i }), kind: 'extension', label: e.typeName, description: src.extensionSummary(e.type, e.data), hasChildren: false, hostOffset: e.hostOffset, hostLength: 8 + e.length, tooltip: `type ${hex(e.type)}, ${e.length} bytes` }));
    case 'backing': {
      const out: TreeNode[] = img.chain().slice(1).map((l, i) => ({ id: nodeId({ kind: 'layer', depth: i + 1 }), kind: 'backing', label: `depth ${i + 1}: ${path.basename(l.path)}`, description: `${l.format}, ${formatBytes(l.virtualSize)}`, tooltip: l.path, hasChildren: false }));
      if (src.backingNotFollowed) out.push({ id: nodeId({ kind: 'layer', depth: 'error' }), kind: 'backing', label: h.backingFile ?? 'backing file', description: 'not opened', tooltip: src.backingNotFollowed, hasChildren: false });
      if (src.backingError) out.push({ id: nodeId({ kind: 'layer', depth: 'error' }), kind: 'backing', label: h.backingFile ?? 'backing file', description: 'cannot be opened', tooltip: src.backingError, hasChildren: false, severity: 'error' });
      return out;
    }
    case 'snapshot': {
      const k = ref.index, s = img.snapshots[k];
      if (!s) return [];
      const info = (name: string, value: string, off: number, len: number): TreeNode => ({ id: nodeId({ kind: 'snapshotField', index: k, field: name }), kind: 'info', label: name, description: value, hasChildren: false, hostOffset: s.hostOffset + off, hostLength: len });
      const idAt = L.SNAPSHOT_HEADER_SIZE + s.extraDataSize;
      const out: TreeNode[] = [
        { id: nodeId({ kind: 'l1', table: k }), kind: 'l1Table', label: 'L1 table', description: `${s.l1Size} entries at ${hex(s.l1TableOffset)}`, hasChildren: s.l1Size > 0, hostOffset: s.l1TableOffset, hostLength: s.l1Size * 8 },
        info('id', s.id, idAt, Buffer.byteLength(s.id)),
        info('name', s.name, idAt + Buffer.byteLength(s.id), Buffer.byteLength(s.name)),
        info('date', new Date(s.dateSec * 1000).toISOString(), SNAPSHOT_DATE_SEC, 8),
        info('vm state size', formatBytes(Number(s.vmStateSizeLarge ?? s.vmStateSize)), SNAPSHOT_VM_STATE_SIZE, 4),
      ];
      if (s.diskSize !== undefined) out.push(info('disk size', formatBytes(Number(s.diskSize)), SNAPSHOT_DISK_SIZE, 8));
      return out;
    }
    case 'encryption': {
      const e = await readEncryptInfo(img.file, h).catch(() => undefined);
      const fields: TreeNode[] = Object.entries(e ?? {}).filter(([k]) => k !== 'slots').map(([k, v]) => ({ id: nodeId({ kind: 'encryptionField', name: k }), kind: 'info', label: k, description: String(v), hasChildren: false }));
      // LUKS key slots: each slot's 48-byte record in the header, its key material the target
      const algs = [e?.['cipher-alg'], e?.['cipher-mode'], e?.['hash-alg']].filter(Boolean).join(', ');
      const slots: TreeNode[] = (e?.slots ?? []).map((sl, i) => ({
        id: nodeId({ kind: 'encryptionField', name: `key_slot[${i}]` }), kind: 'info', label: `key slot ${i}`,
        description: sl.active ? `active, ${(sl.iters ?? 0).toLocaleString('en-US')} PBKDF2 iterations (${algs})` : 'inactive',
        tooltip: `key material at ${hex(sl['key-offset'])} in the LUKS area`, hasChildren: false,
        hostOffset: h.crypto ? h.crypto.offset + slotDescriptorOffset(i) : undefined, hostLength: LUKS_KEY_SLOT_BYTES,
        targetHostOffset: h.crypto ? h.crypto.offset + sl['key-offset'] : undefined,
      }));
      return [...fields, ...slots];
    }
    default:
      return [];
  }
}

function bitmapInfoLeaves(img: Qcow2Image, k: number): TreeNode[] {
  const b = img.bitmaps[k];
  if (!b) return [];
  return [{ id: nodeId({ kind: 'bitmapInfo', index: k }), kind: 'info', label: 'bitmap table', description: `${b.bitmapTableSize} entries at ${hex(b.bitmapTableOffset)}`, hasChildren: false, hostOffset: b.bitmapTableOffset, hostLength: b.bitmapTableSize * 8 }];
}

const severityOf = (flaws: readonly string[]) => (flaws.length ? 'error' as const : undefined);

async function leaves(img: Qcow2Image, ref: TableNodeRef, s: number, e: number, keep?: Set<number>): Promise<TreeNode[]> {
  const kept = <T extends { index: number }>(xs: T[]) => (keep ? xs.filter(x => keep.has(x.index)) : xs);
  const g = img.g, cs = img.clusterSize;
  switch (ref.kind) {
    case 'l1': {
      const perL2 = g.l2Size * cs;
      return kept(await l1Entries(img, tableIndex(ref.table), s, e)).map(ent => ({
        id: nodeId({ kind: 'l1Entry', table: ref.table, l1Index: ent.index }), kind: 'l1Entry', label: formatPath([step('L1', ent.index)]),
        description: ent.l2Offset ? `→ L2 table at ${hex(ent.l2Offset)}${ent.copied ? '' : ' (shared)'}` : 'unallocated',
        tooltip: `guest ${hex(ent.index * perL2)} … ${hex((ent.index + 1) * perL2 - 1)}`,
        hasChildren: ent.l2Offset !== 0, hostOffset: ent.hostOffset, hostLength: 8,
        guestOffset: ent.index * perL2, guestLength: perL2, targetHostOffset: ent.l2Offset || undefined,
        severity: severityOf(ent.flaws),
      }));
    }
    case 'l1Entry':
      return kept(await l2Entries(img, tableIndex(ref.table), ref.l1Index, s, e)).map(d => {
        let desc: string, target: number | undefined;
        if (d.kind === 'compressed') { desc = `compressed at ${hex(d.dataOffset)} (${d.compressedSize} bytes)`; target = d.dataOffset; }
        else if (d.inDataFile) desc = `data at ${hex(d.dataOffset)} in ${path.basename(img.dataFilePath ?? 'the data file')}${d.readsAsZero ? ', reads as zero' : ''}`;
        else if (d.kind === 'data') { desc = `data at ${hex(d.dataOffset)}${d.readsAsZero ? ', reads as zero' : ''}`; target = d.dataOffset; }
        else desc = d.kind;
        if (d.subclusters !== undefined && d.subclusters !== 0n) desc += `, subclusters ${hex(d.subclusters)}`;
        return {
          id: nodeId({ kind: 'l2Entry', table: ref.table, l1Index: ref.l1Index, l2Index: d.index }), kind: 'l2Entry' as const, label: formatPath([step('L2', d.index)]), description: desc,
          tooltip: `guest ${hex(d.guestOffset)}`, hasChildren: false, hostOffset: d.hostOffset, hostLength: g.l2EntrySize,
          guestOffset: d.guestOffset, guestLength: cs, targetHostOffset: target,
          severity: severityOf(d.flaws),
        };
      });
    case 'refcount':
      return (await reftableEntries(img, s, e)).map(ent => ({
        id: nodeId({ kind: 'reftableEntry', index: ent.index }), kind: 'refcountBlock', label: formatPath([step('refcount table', ent.index)]),
        description: ent.blockOffset ? `→ block at ${hex(ent.blockOffset)} (clusters ${hex(ent.index * img.rg.blockEntries)}…)` : 'no block',
        hasChildren: ent.blockOffset !== 0, hostOffset: ent.hostOffset, hostLength: 8, targetHostOffset: ent.blockOffset || undefined,
        severity: severityOf(ent.flaws),
      }));
    case 'reftableEntry':
      return (await refcountEntries(img, ref.index, s, e)).map((ent, i) => ({
        id: nodeId({ kind: 'refcountEntry', index: ref.index, entry: s + i }), kind: 'refcountEntry', label: `cluster ${hex(ent.cluster)}`, description: `refcount ${ent.refcount}`,
        tooltip: `host ${hex(ent.cluster * cs)}`, hasChildren: false, hostOffset: ent.hostOffset, hostLength: ent.length,
        targetHostOffset: ent.cluster * cs,
      }));
    case 'bitmap': {
      const b = img.bitmaps[ref.index];
      if (!b) return [];
      const perEntry = cs * 8 * 2 ** b.granularityBits;
      return (await bitmapEntries(img, ref.index, s, e)).map(ent => ({
        id: nodeId({ kind: 'bitmapEntry', index: ref.index, entry: ent.index }), kind: 'bitmapTableEntry', label: `table[${ent.index}]`,
        description: ent.dataOffset ? `data at ${hex(ent.dataOffset)}` : ent.allOnes ? 'all ones' : 'all zeros',
        tooltip: `guest ${hex(ent.index * perEntry)} …`, hasChildren: false, hostOffset: ent.hostOffset, hostLength: 8,
        guestOffset: ent.index * perEntry, guestLength: perEntry, targetHostOffset: ent.dataOffset || undefined,
        severity: severityOf(ent.flaws),
      }));
    }
    case 'snapshots': {
      const out: TreeNode[] = [];
      for (let k = s; k < e; k++) {
        const sn = img.snapshots[k];
        out.push({ id: nodeId({ kind: 'snapshot', index: k }), kind: 'snapshot', label: `${sn.id}: ${sn.name}`, description: new Date(sn.dateSec * 1000).toISOString().replace('T', ' ').slice(0, 19), hasChildren: true, hostOffset: sn.hostOffset, hostLength: sn.entrySize });
      }
      return out;
    }
    case 'bitmaps': {
      const out: TreeNode[] = [];
      for (let k = s; k < e; k++) {
        const b = img.bitmaps[k];
        out.push({ id: nodeId({ kind: 'bitmap', index: k }), kind: 'bitmap', label: b.name, description: `granularity ${formatBytes(2 ** b.granularityBits)}${b.inUse ? ', in use' : ''}${b.auto ? ', auto' : ''}`, hasChildren: true, hostOffset: b.hostOffset, hostLength: b.entrySize, targetHostOffset: b.bitmapTableOffset });
      }
      return out;
    }
  }
}
