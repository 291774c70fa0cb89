/**
 * The editor's host-side model: answers the webview's requests (src/protocol.ts) from the real
 * engine. It never imports `vscode`, so it is tested with a file, Node and a real browser.
 *
 * Every answer is bounded: the tree is paged (TREE_PAGE_SIZE children per level, nested pages for
 * larger tables) and reads only the slice of a table a page shows; hex reads are capped at
 * MAX_READ_LENGTH; cluster map strips at MAX_MAP_CELLS. The per-cluster role table is built once,
 * on the first cluster map request, from one walk of the metadata (like `qemu-img check`).
 */
import * as path from 'node:path';
import { decodeL2Entry } from '../engine/qcow2/cluster';
import { Qcow2Error, hex } from '../engine/errors';
import { featureBits } from '../engine/qcow2/header';
import { Qcow2Image } from '../engine/image/image';
import * as L from '../engine/qcow2/layout';
import { isLockedByQemu } from '../engine/io/lock';
import { mapImage } from '../engine/image/map';
import { refcountAt } from '../engine/qcow2/refcount';
import { readEncryptInfo } from '../engine/qcow2/encryption';
import { formatBytes } from '../engine/units';
import { readStoredRefcounts } from '../engine/check/check';
import {
  ClusterUsage, clusterUsage, ROLE_BITMAP, ROLE_BITMAP_DIRECTORY, ROLE_BITMAP_TABLE, ROLE_COMPRESSED, ROLE_CONFLICT, ROLE_CRYPTO, ROLE_DATA,
  ROLE_FREE, ROLE_HEADER, ROLE_L1, ROLE_L2, ROLE_MASK, ROLE_REFCOUNT_BLOCK, ROLE_REFCOUNT_TABLE, ROLE_SNAPSHOT_L1, ROLE_SNAPSHOT_L2,
  ROLE_SNAPSHOT_ONLY, ROLE_SNAPSHOT_TABLE,
} from '../engine/check/usage';
import {
  ByteRangeSource, CLUSTER_ROLES, ClusterDescription, ClusterOwner, ClusterRole, FromWebviewMessage, HeaderField,
  ImageSummary, MAX_MAP_CELLS, MAX_READ_LENGTH, NodeId, ROOT_NODE_ID, ToWebviewMessage, TREE_PAGE_SIZE, TreeNode,
} from '../protocol';

const ROLE: Record<ClusterRole, number> = Object.fromEntries(CLUSTER_ROLES.map((r, i) => [r, i])) as Record<ClusterRole, number>;
/** Refuse to build a role table for files with more clusters than this (about 200 MiB of tables). */
const MAX_ROLE_CLUSTERS = 16 * 1024 * 1024;
const ACTIVE = -1;

/** Per-host-cluster roles and first owners, built from one walk of every structure. */
interface ClusterRoles {
  /** Role shown in the map (leaked/conflict override the owner's role). */
  role: Uint8Array;
  /** The owner's role, before refcount comparison. */
  ownerRole: Uint8Array;
  /** Owner identification: table (-1 active L1, k snapshot/bitmap index), a, b (indexes). */
  ownerT: Int32Array;
  ownerA: Int32Array;
  ownerB: Int32Array;
  users: Uint8Array;
  refcounts: Float64Array;
  usage: ClusterUsage;
}

/** The engine's usage roles (ROLE_* in usage.ts) as protocol roles. */
const USAGE_ROLE: Record<number, number> = {
  [ROLE_FREE]: ROLE.free, [ROLE_HEADER]: ROLE.header, [ROLE_L1]: ROLE.l1, [ROLE_L2]: ROLE.l2, [ROLE_SNAPSHOT_L2]: ROLE.l2,
  [ROLE_REFCOUNT_TABLE]: ROLE.refcountTable, [ROLE_REFCOUNT_BLOCK]: ROLE.refcountBlock, [ROLE_SNAPSHOT_TABLE]: ROLE.snapshotTable,
  [ROLE_SNAPSHOT_L1]: ROLE.snapshotL1, [ROLE_DATA]: ROLE.data, [ROLE_COMPRESSED]: ROLE.compressed, [ROLE_SNAPSHOT_ONLY]: ROLE.data,
  [ROLE_BITMAP_DIRECTORY]: ROLE.bitmapDirectory, [ROLE_BITMAP_TABLE]: ROLE.bitmapTable, [ROLE_BITMAP]: ROLE.bitmapData, [ROLE_CRYPTO]: ROLE.crypto,
};

interface PageRange { s: number; e: number }

/** Splits [s, e) into at most TREE_PAGE_SIZE chunks (null when it fits on one level). */
function pageRanges(s: number, e: number): PageRange[] | null {
  const n = e - s;
  if (n <= TREE_PAGE_SIZE) return null;
  let span = TREE_PAGE_SIZE;
  while (Math.ceil(n / span) > TREE_PAGE_SIZE) span *= TREE_PAGE_SIZE;
  const out: PageRange[] = [];
  for (let a = s; a < e; a += span) out.push({ s: a, e: Math.min(e, a + span) });
  return out;
}

function pageId(base: string, r: PageRange): NodeId {
  return `${base}|p:${r.s}:${r.e}`;
}

/** The page ids from the top level down to the page holding `index` in a table of `n` children. */
function pagePath(base: string, n: number, index: number): NodeId[] {
  const out: NodeId[] = [];
  let s = 0, e = n;
  for (;;) {
    const pages = pageRanges(s, e);
    if (!pages) return out;
    const p = pages.find(r => index >= r.s && index < r.e);
    if (!p) return out;
    out.push(pageId(base, p));
    s = p.s; e = p.e;
  }
}

function parseId(id: NodeId): { base: string; page?: PageRange } {
  const bar = id.indexOf('|p:');
  if (bar < 0) return { base: id };
  const [s, e] = id.slice(bar + 3).split(':').map(Number);
  return { base: id.slice(0, bar), page: { s, e } };
}

function b64(buf: Buffer): string {
  return buf.toString('base64');
}

export class ViewModel {
  private roles: ClusterRoles | null = null;
  private rolesPromise: Promise<ClusterRoles> | null = null;
  private backingError?: string;

  private constructor(public img: Qcow2Image, readonly readOnly: boolean) {}

  /** Opens the image read-only with its backing chain (without it when the chain is broken). */
  static async open(imagePath: string, opts: { readOnly?: boolean } = {}): Promise<ViewModel> {
    try {
      return new ViewModel(await Qcow2Image.open(imagePath), opts.readOnly ?? false);
    } catch (e) {
      if (e instanceof Qcow2Error && e.code === 'missing-backing') {
        const vm = new ViewModel(await Qcow2Image.open(imagePath, { openBacking: false }), opts.readOnly ?? false);
        vm.backingError = e.message;
        return vm;
      }
      throw e;
    }
  }

  /** Re-opens the image (the file changed on disk or was written). */
  async reload(): Promise<void> {
    const fresh = await ViewModel.open(this.img.path, { readOnly: this.readOnly });
    await this.img.close().catch(() => undefined);
    this.img = fresh.img;
    this.backingError = fresh.backingError;
    this.roles = null;
    this.rolesPromise = null;
  }

  async close(): Promise<void> {
    await this.img.close();
  }

  /** Answers one webview message: a reply for requests, undefined for notifications. */
  async handle(msg: FromWebviewMessage): Promise<ToWebviewMessage | undefined> {
    const requestId = 'requestId' in msg ? msg.requestId : undefined;
    try {
      switch (msg.type) {
        case 'ready':
        case 'runCommand':
        case 'selectionChanged':
          return undefined;
        case 'getSummary':
          return { type: 'summary', requestId: msg.requestId, summary: await this.summary() };
        case 'getTreeChildren':
          return { type: 'treeChildren', requestId: msg.requestId, nodeId: msg.nodeId, children: await this.children(msg.nodeId) };
        case 'getClusterMap':
          return { type: 'clusterMap', requestId: msg.requestId, ...(await this.clusterMap(msg.startCluster, msg.count, msg.zoom)) };
        case 'describeCluster':
          return { type: 'clusterDescription', requestId: msg.requestId, description: await this.describeCluster(msg.hostCluster) };
        case 'readHost':
          return { type: 'bytes', requestId: msg.requestId, space: 'host', ...(await this.readHost(msg.hostOffset, msg.length)) };
        case 'readGuest':
          return { type: 'bytes', requestId: msg.requestId, space: 'guest', ...(await this.readGuest(msg.guestOffset, msg.length)) };
        case 'locateNode':
          return { type: 'nodePath', requestId: msg.requestId, path: await this.locate(msg.structure, msg.hostOffset) };
        default: {
          const never: never = msg;
          throw new Error(`unknown message ${(never as { type: string }).type}`);
        }
      }
    } catch (e) {
      const err: ToWebviewMessage = { type: 'error', requestId, message: e instanceof Error ? e.message : String(e) };
      if (e instanceof Qcow2Error) {
        err.structure = e.structure;
        err.hostOffset = e.hostOffset;
        err.code = e.code;
      }
      return err;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Summary
  // -------------------------------------------------------------------------------------------

  headerFields(): HeaderField[] {
    const h = this.img.header;
    const f = (name: string, hostOffset: number, size: number, value: number | bigint, meaning: string, asHex = false): HeaderField =>
      ({ name, hostOffset, size, value: asHex || typeof value === 'bigint' ? hex(value) : String(value), meaning });
    const crypt = ['none', 'AES (legacy)', 'LUKS'][h.cryptMethod] ?? `unknown (${h.cryptMethod})`;
    const out: HeaderField[] = [
      f('magic', 0, 4, h.magic, h.magic === L.QCOW_MAGIC ? 'QFI\\xfb' : 'not a qcow2 magic', true),
      f('version', 4, 4, h.version, `qcow2 v${h.version}${h.version === 2 ? ' (compat=0.10)' : ' (compat=1.1)'}`),
      f('backing_file_offset', 8, 8, h.backingFileOffset, h.backingFileOffset ? `backing file name at ${hex(h.backingFileOffset)}` : 'no backing file', true),
      f('backing_file_size', 16, 4, h.backingFileSize, h.backingFile ? `"${h.backingFile}"` : 'no backing file'),
      f('cluster_bits', 20, 4, h.clusterBits, `${formatBytes(h.clusterSize)} clusters`),
      f('size', 24, 8, h.size, `${formatBytes(h.size)} virtual disk`),
      f('crypt_method', 32, 4, h.cryptMethod, crypt),
      f('l1_size', 36, 4, h.l1Size, `${h.l1Size} L1 entries, each mapping ${formatBytes(this.img.g.l2Size * h.clusterSize)}`),
      f('l1_table_offset', 40, 8, h.l1TableOffset, `active L1 table at cluster ${Math.floor(h.l1TableOffset / h.clusterSize)}`, true),
      f('refcount_table_offset', 48, 8, h.refcountTableOffset, `refcount table at cluster ${Math.floor(h.refcountTableOffset / h.clusterSize)}`, true),
      f('refcount_table_clusters', 56, 4, h.refcountTableClusters, `${h.refcountTableClusters * h.clusterSize / 8} refcount table entries`),
      f('nb_snapshots', 60, 4, h.nbSnapshots, h.nbSnapshots ? `${h.nbSnapshots} internal snapshot(s)` : 'no snapshots'),
      f('snapshots_offset', 64, 8, h.snapshotsOffset, h.nbSnapshots ? 'snapshot table' : 'unused', true),
    ];
    if (h.version >= 3) {
      const names = (kind: 'incompatible' | 'compatible' | 'autoclear') => featureBits(h, kind).filter(b => b.set).map(b => b.name).join(', ') || 'none';
      out.push(
        f('incompatible_features', 72, 8, h.incompatibleFeatures, names('incompatible')),
        f('compatible_features', 80, 8, h.compatibleFeatures, names('compatible')),
        f('autoclear_features', 88, 8, h.autoclearFeatures, names('autoclear')),
        f('refcount_order', 96, 4, h.refcountOrder, `${h.refcountBits}-bit refcounts`),
        f('header_length', 100, 4, h.headerLength, `${h.headerLength}-byte header`),
      );
      if (h.headerLength > 104) out.push(f('compression_type', 104, 1, h.compressionType, h.compressionType === L.COMPRESSION_ZSTD ? 'zstd' : 'zlib'));
    }
    return out;
  }

  async summary(): Promise<ImageSummary> {
    const img = this.img, h = img.header;
    const chain: ImageSummary['backingChain'] = img.chain().map((l, depth) => ({ depth, path: l.path, format: l.format, virtualSize: l.virtualSize }));
    if (this.backingError) chain.push({ depth: chain.length, path: img.header.backingFile ?? '', format: 'raw', virtualSize: 0, error: this.backingError });
    let encryption: ImageSummary['encryption'];
    if (img.encrypted) {
      const e = await readEncryptInfo(img.file, h).catch(() => undefined);
      const fields: Array<[string, string]> = [];
      for (const [k, v] of Object.entries(e ?? {})) {
        if (k === 'format' || k === 'slots') continue;
        fields.push([k, String(v)]);
      }
      if (e?.slots) fields.push(['active key slots', String(e.slots.filter(s => s.active).length)]);
      encryption = { format: e?.format ?? (h.cryptMethod === L.CRYPT_AES ? 'aes' : 'luks'), fields };
    }
    let locked = false;
    try { locked = isLockedByQemu(img.path); } catch { /* no /proc/locks */ }
    return {
      path: img.path,
      fileName: path.basename(img.path),
      fileSize: img.file.size,
      virtualSize: img.virtualSize,
      version: h.version,
      clusterSize: h.clusterSize,
      clusterBits: h.clusterBits,
      hostClusters: Math.ceil(img.file.size / h.clusterSize),
      refcountBits: h.refcountBits,
      extendedL2: h.extendedL2,
      compressionType: h.compressionType === L.COMPRESSION_ZSTD ? 'zstd' : 'zlib',
      dirty: (h.incompatibleFeatures & L.INCOMPAT_DIRTY) !== 0n,
      corrupt: (h.incompatibleFeatures & L.INCOMPAT_CORRUPT) !== 0n,
      readOnly: this.readOnly,
      lockedByQemu: locked,
      dataFile: img.dataFilePath,
      header: this.headerFields(),
      features: { incompatible: featureBits(h, 'incompatible'), compatible: featureBits(h, 'compatible'), autoclear: featureBits(h, 'autoclear') },
      extensions: h.extensions.map(x => ({ type: x.type, typeName: x.typeName, hostOffset: x.hostOffset, length: x.length, summary: this.extensionSummary(x.type, x.data) })),
      backingChain: chain,
      snapshots: img.snapshots.map((s, k) => ({
        index: k, id: s.id, name: s.name, date: s.dateSec * 1000 + Math.floor(s.dateNsec / 1e6), vmClockNsec: s.vmClockNsec.toString(),
        vmStateSize: s.vmStateSizeLarge ?? s.vmStateSize, diskSize: s.diskSize, l1TableOffset: s.l1TableOffset, l1Size: s.l1Size,
        hostOffset: s.hostOffset, nodeId: `snap:${k}`,
      })),
      bitmaps: img.bitmaps.map((b, k) => ({
        index: k, name: b.name, granularity: 2 ** b.granularityBits, inUse: b.inUse, auto: b.auto, flags: b.flags,
        bitmapTableOffset: b.bitmapTableOffset, bitmapTableSize: b.bitmapTableSize, hostOffset: b.hostOffset, nodeId: `bm:${k}`,
      })),
      encryption,
    };
  }

  private extensionSummary(type: number, data: Buffer): string {
    const h = this.img.header;
    switch (type) {
      case L.EXT_BACKING_FORMAT: return `format "${data.toString('latin1').replace(/\0+$/, '')}"`;
      case L.EXT_DATA_FILE: return `"${data.toString('latin1').replace(/\0+$/, '')}"`;
      case L.EXT_FEATURE_TABLE: return `${Math.floor(data.length / 48)} feature names`;
      case L.EXT_BITMAPS: return h.bitmaps ? `${h.bitmaps.nbBitmaps} bitmap(s), directory at ${hex(h.bitmaps.bitmapDirectoryOffset)} (${h.bitmaps.bitmapDirectorySize} bytes)` : '';
      case L.EXT_CRYPTO: return h.crypto ? `encryption header at ${hex(h.crypto.offset)} (${h.crypto.length} bytes)` : '';
      default: return `${data.length} bytes`;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Tree
  // -------------------------------------------------------------------------------------------

  private l1Of(t: number): { offset: number; size: number; label: string } {
    if (t === ACTIVE) return { offset: this.img.header.l1TableOffset, size: this.img.l1Size, label: 'L1' };
    const s = this.img.snapshots[t];
    if (!s) throw new Error(`no snapshot ${t}`);
    return { offset: s.l1TableOffset, size: s.l1Size, label: `snapshot "${s.name}" L1` };
  }

  /** L1 entries [s, e) of table t, read as a slice (the active table is in memory). */
  private async l1Slice(t: number, s: number, e: number): Promise<Buffer> {
    if (t === ACTIVE) return this.img.l1.subarray(s * 8, e * 8);
    const l1 = this.l1Of(t);
    return this.img.file.read(l1.offset + s * 8, (e - s) * 8, `${l1.label} table`);
  }

  private tableId(t: number): string {
    return t === ACTIVE ? 'a' : String(t);
  }
  private parseTable(s: string): number {
    return s === 'a' ? ACTIVE : Number(s);
  }

  /** Number of children of a base node (paged kinds only). */
  private async childCount(base: string): Promise<number> {
    const [kind, x, y] = base.split(':');
    const img = this.img;
    switch (kind) {
      case 'l1': return this.l1Of(this.parseTable(x)).size;
      case 'l1e': return img.g.l2Size;
      case 'refcount': {
        let last = -1;
        for (let i = 0; i < img.refcountTable.length; i++) if (img.refcountTable[i] !== 0) last = i;
        return last + 1;
      }
      case 'rte': return img.rg.blockEntries;
      case 'bm': return img.bitmaps[Number(x)]?.bitmapTableSize ?? 0;
      case 'snapshots': return img.snapshots.length;
      case 'bitmaps': return img.bitmaps.length;
      default: void y; return 0;
    }
  }

  async children(id: NodeId): Promise<TreeNode[]> {
    if (id === ROOT_NODE_ID) return this.rootChildren();
    const { base, page } = parseId(id);
    const [kind] = base.split(':');
    if (['l1', 'l1e', 'refcount', 'rte', 'bm', 'snapshots', 'bitmaps'].includes(kind)) {
      const n = await this.childCount(base);
      const r = page ?? { s: 0, e: n };
      const pages = pageRanges(r.s, r.e);
      const head = kind === 'bm' && !page ? this.bitmapInfoLeaves(base) : [];
      if (pages) {
        return [...head, ...pages.map(p => ({ id: pageId(base, p), kind: 'page' as const, label: `[${p.s} … ${p.e - 1}]`, hasChildren: true }))];
      }
      return [...head, ...(await this.leaves(base, r.s, r.e))];
    }
    return this.fixedChildren(base);
  }

  private rootChildren(): TreeNode[] {
    const img = this.img, h = img.header;
    const cs = h.clusterSize;
    const out: TreeNode[] = [
      { id: 'header', kind: 'header', label: 'Header', description: `qcow2 v${h.version}, ${formatBytes(h.size)}, ${formatBytes(cs)} clusters`, hasChildren: true, hostOffset: 0, hostLength: h.headerLength },
      { id: 'features', kind: 'group', label: 'Feature bits', description: this.setFeatureNames() || 'none set', hasChildren: true, hostOffset: 72, hostLength: h.version >= 3 ? 24 : undefined },
      { id: 'extensions', kind: 'group', label: 'Header extensions', description: `${h.extensions.length}`, hasChildren: h.extensions.length > 0 },
      { id: 'backing', kind: 'group', label: 'Backing chain', description: h.backingFile ? `${img.chain().length - 1} layer(s) below${this.backingError ? ' (broken)' : ''}` : 'none', hasChildren: !!h.backingFile, severity: this.backingError ? 'error' : undefined },
      { id: 'l1:a', kind: 'l1Table', label: 'L1 table', description: `${h.l1Size} entries at ${hex(h.l1TableOffset)}`, hasChildren: h.l1Size > 0, hostOffset: h.l1TableOffset, hostLength: h.l1Size * 8 },
      { id: 'refcount', kind: 'refcountTable', label: 'Refcount table', description: `${h.refcountTableClusters} cluster(s) at ${hex(h.refcountTableOffset)}, ${h.refcountBits}-bit refcounts`, hasChildren: true, hostOffset: h.refcountTableOffset, hostLength: h.refcountTableClusters * cs },
      { id: 'snapshots', kind: 'snapshotTable', label: 'Snapshots', description: `${img.snapshots.length}`, hasChildren: img.snapshots.length > 0, hostOffset: h.nbSnapshots ? h.snapshotsOffset : undefined },
      { id: 'bitmaps', kind: 'bitmapDirectory', label: 'Bitmaps', description: `${img.bitmaps.length}`, hasChildren: img.bitmaps.length > 0, hostOffset: h.bitmaps?.bitmapDirectoryOffset, hostLength: h.bitmaps?.bitmapDirectorySize },
    ];
    if (img.encrypted) out.push({ id: 'encryption', kind: 'encryption', label: 'Encryption', description: h.cryptMethod === L.CRYPT_AES ? 'AES (legacy)' : 'LUKS', hasChildren: true, hostOffset: h.crypto?.offset, hostLength: h.crypto?.length });
    return out;
  }

  private setFeatureNames(): string {
    const h = this.img.header;
    return (['incompatible', 'compatible', 'autoclear'] as const).flatMap(k => featureBits(h, k).filter(b => b.set).map(b => b.name)).join(', ');
  }

  private async fixedChildren(base: string): Promise<TreeNode[]> {
    const img = this.img, h = img.header;
    const [kind, x] = base.split(':');
    switch (kind) {
      case 'header':
        return this.headerFields().map((f, i) => ({ id: `hf:${i}`, kind: 'headerField', label: f.name, description: `${f.value} — ${f.meaning}`, hasChildren: false, hostOffset: f.hostOffset, hostLength: f.size }));
      case 'features':
        return (['incompatible', 'compatible', 'autoclear'] as const).map((k, i) => ({ id: `feat:${k}`, kind: 'group', label: `${k[0].toUpperCase()}${k.slice(1)}`, description: featureBits(h, k).filter(b => b.set).map(b => b.name).join(', ') || 'none set', hasChildren: true, hostOffset: 72 + 8 * i, hostLength: 8 }));
      case 'feat': {
        const k = x as 'incompatible' | 'compatible' | 'autoclear';
        const at = 72 + 8 * ['incompatible', 'compatible', 'autoclear'].indexOf(k);
        return featureBits(h, k).map(b => ({ id: `fb:${k}:${b.bit}`, kind: 'featureBit', label: `bit ${b.bit}: ${b.name}`, description: b.set ? 'set' : 'clear', hasChildren: false, hostOffset: at + 7 - Math.floor(b.bit / 8), hostLength: 1, severity: b.set && !b.known ? 'warning' : undefined }));
      }
      case 'extensions':
        return h.extensions.map((e, i) => ({ id: `ext:${i}`, kind: 'extension', label: e.typeName, description: this.extensionSummary(e.type, e.data), hasChildren: false, hostOffset: e.hostOffset, hostLength: 8 + e.length, tooltip: `type ${hex(e.type)}, ${e.length} bytes` }));
      case 'backing': {
        const out: TreeNode[] = img.chain().slice(1).map((l, i) => ({ id: `layer:${i + 1}`, kind: 'backing', label: `depth ${i + 1}: ${path.basename(l.path)}`, description: `${l.format}, ${formatBytes(l.virtualSize)}`, tooltip: l.path, hasChildren: false }));
        if (this.backingError) out.push({ id: 'layer:error', kind: 'backing', label: h.backingFile ?? 'backing file', description: 'cannot be opened', tooltip: this.backingError, hasChildren: false, severity: 'error' });
        return out;
      }
      case 'snap': {
        const k = Number(x), s = img.snapshots[k];
        if (!s) return [];
        const info = (name: string, value: string, off: number, len: number): TreeNode => ({ id: `si:${k}:${name}`, kind: 'info', label: name, description: value, hasChildren: false, hostOffset: s.hostOffset + off, hostLength: len });
        const out: TreeNode[] = [
          { id: `l1:${k}`, kind: 'l1Table', label: 'L1 table', description: `${s.l1Size} entries at ${hex(s.l1TableOffset)}`, hasChildren: s.l1Size > 0, hostOffset: s.l1TableOffset, hostLength: s.l1Size * 8 },
          info('id', s.id, 40 + s.extraDataSize, Buffer.byteLength(s.id)),
          info('name', s.name, 40 + s.extraDataSize + Buffer.byteLength(s.id), Buffer.byteLength(s.name)),
          info('date', new Date(s.dateSec * 1000).toISOString(), 16, 8),
          info('vm state size', formatBytes(s.vmStateSizeLarge ?? s.vmStateSize), 32, 4),
        ];
        if (s.diskSize !== undefined) out.push(info('disk size', formatBytes(s.diskSize), 48, 8));
        return out;
      }
      case 'encryption': {
        const e = await readEncryptInfo(img.file, h).catch(() => undefined);
        return Object.entries(e ?? {}).filter(([k]) => k !== 'slots').map(([k, v]) => ({ id: `enc:${k}`, kind: 'info', label: k, description: String(v), hasChildren: false }));
      }
      default:
        return [];
    }
  }

  private bitmapInfoLeaves(base: string): TreeNode[] {
    const k = Number(base.split(':')[1]), b = this.img.bitmaps[k];
    if (!b) return [];
    return [{ id: `bmi:${k}`, kind: 'info', label: 'bitmap table', description: `${b.bitmapTableSize} entries at ${hex(b.bitmapTableOffset)}`, hasChildren: false, hostOffset: b.bitmapTableOffset, hostLength: b.bitmapTableSize * 8 }];
  }

  private async leaves(base: string, s: number, e: number): Promise<TreeNode[]> {
    const img = this.img, g = img.g, cs = img.clusterSize;
    const [kind, x, y] = base.split(':');
    const out: TreeNode[] = [];
    switch (kind) {
      case 'l1': {
        const t = this.parseTable(x), l1 = this.l1Of(t);
        const slice = await this.l1Slice(t, s, e);
        const perL2 = g.l2Size * cs;
        for (let i = s; i < e; i++) {
          const ent = img.l1Entry(i - s, slice);
          out.push({
            id: `l1e:${this.tableId(t)}:${i}`, kind: 'l1Entry', label: `L1[${i}]`,
            description: ent.l2Offset ? `→ L2 table at ${hex(ent.l2Offset)}${ent.copied ? '' : ' (shared)'}` : 'unallocated',
            tooltip: `guest ${hex(i * perL2)} … ${hex((i + 1) * perL2 - 1)}`,
            hasChildren: ent.l2Offset !== 0, hostOffset: l1.offset + i * 8, hostLength: 8,
            guestOffset: i * perL2, guestLength: perL2, targetHostOffset: ent.l2Offset || undefined,
            severity: ent.reservedBitsSet || (ent.l2Offset !== 0 && ent.l2Offset % cs !== 0) ? 'error' : undefined,
          });
        }
        return out;
      }
      case 'l1e': {
        const t = this.parseTable(x), i = Number(y), l1 = this.l1Of(t);
        const ent = img.l1Entry(0, await this.l1Slice(t, i, i + 1));
        if (!ent.l2Offset) return [];
        img.checkL2Offset(ent.l2Offset, i, l1.label);
        const table = await img.file.read(ent.l2Offset, cs, `${l1.label}[${i}] → L2 table`);
        const tid = this.tableId(t);
        for (let j = s; j < e; j++) {
          const d = decodeL2Entry(g, table, j);
          const guest = (i * g.l2Size + j) * cs;
          let desc: string, target: number | undefined;
          if (d.compressed) { desc = `compressed at ${hex(d.hostOffset)} (${d.compressedSize} bytes)`; target = d.hostOffset; }
          else if (g.externalData && (d.hostOffset || d.copied)) desc = `data at ${hex(d.hostOffset)} in ${path.basename(img.dataFilePath ?? 'the data file')}${d.zeroFlag ? ', reads as zero' : ''}`;
          else if (d.hostOffset) { desc = `data at ${hex(d.hostOffset)}${d.zeroFlag ? ', reads as zero' : ''}`; target = d.hostOffset; }
          else if (d.zeroFlag) desc = 'zero';
          else desc = 'unallocated';
          if (d.bitmap !== undefined && d.bitmap !== 0n) desc += `, subclusters ${hex(d.bitmap)}`;
          out.push({
            id: `l2e:${tid}:${i}:${j}`, kind: 'l2Entry', label: `L2[${hex(j)}]`, description: desc,
            tooltip: `guest ${hex(guest)}`, hasChildren: false, hostOffset: ent.l2Offset + j * g.l2EntrySize, hostLength: g.l2EntrySize,
            guestOffset: guest, guestLength: cs, targetHostOffset: target,
            severity: d.reservedBitsSet || (!d.compressed && d.hostOffset % cs !== 0) ? 'error' : undefined,
          });
        }
        return out;
      }
      case 'refcount': {
        const h = img.header;
        for (let i = s; i < e; i++) {
          const off = img.refcountTable[i];
          out.push({
            id: `rte:${i}`, kind: 'refcountBlock', label: `refcount table[${i}]`,
            description: off ? `→ block at ${hex(off)} (clusters ${hex(i * img.rg.blockEntries)}…)` : 'no block',
            hasChildren: off !== 0, hostOffset: h.refcountTableOffset + i * 8, hostLength: 8, targetHostOffset: off || undefined,
            severity: off % cs !== 0 ? 'error' : undefined,
          });
        }
        return out;
      }
      case 'rte': {
        const i = Number(x), off = img.refcountTable[i];
        if (!off) return [];
        const block = await img.file.read(off, cs, `refcount table[${i}] → refcount block`);
        const bits = img.header.refcountBits;
        for (let k = s; k < e; k++) {
          const cluster = i * img.rg.blockEntries + k;
          out.push({
            id: `rbe:${i}:${k}`, kind: 'refcountEntry', label: `cluster ${hex(cluster)}`, description: `refcount ${refcountAt(block, k, img.rg.order)}`,
            tooltip: `host ${hex(cluster * cs)}`, hasChildren: false, hostOffset: off + Math.floor((k * bits) / 8), hostLength: Math.max(1, bits / 8),
            targetHostOffset: cluster * cs,
          });
        }
        return out;
      }
      case 'bm': {
        const k = Number(x), b = img.bitmaps[k];
        if (!b) return [];
        const buf = await img.file.read(b.bitmapTableOffset + s * 8, (e - s) * 8, `bitmap "${b.name}" table`);
        const perEntry = cs * 8 * 2 ** b.granularityBits;
        for (let i = s; i < e; i++) {
          const raw = buf.readBigUInt64BE((i - s) * 8);
          const off = Number(raw & L.BME_TABLE_ENTRY_OFFSET_MASK);
          out.push({
            id: `bme:${k}:${i}`, kind: 'bitmapTableEntry', label: `table[${i}]`,
            description: off ? `data at ${hex(off)}` : (raw & 1n) ? 'all ones' : 'all zeros',
            tooltip: `guest ${hex(i * perEntry)} …`, hasChildren: false, hostOffset: b.bitmapTableOffset + i * 8, hostLength: 8,
            guestOffset: i * perEntry, guestLength: perEntry, targetHostOffset: off || undefined,
          });
        }
        return out;
      }
      case 'snapshots':
        for (let k = s; k < e; k++) {
          const sn = img.snapshots[k];
          out.push({ id: `snap:${k}`, kind: 'snapshot', label: `${sn.id}: ${sn.name}`, description: new Date(sn.dateSec * 1000).toISOString().replace('T', ' ').slice(0, 19), hasChildren: true, hostOffset: sn.hostOffset, hostLength: sn.entrySize });
        }
        return out;
      case 'bitmaps':
        for (let k = s; k < e; k++) {
          const b = img.bitmaps[k];
          out.push({ id: `bm:${k}`, kind: 'bitmap', label: b.name, description: `granularity ${formatBytes(2 ** b.granularityBits)}${b.inUse ? ', in use' : ''}${b.auto ? ', auto' : ''}`, hasChildren: true, hostOffset: b.hostOffset, hostLength: b.entrySize, targetHostOffset: b.bitmapTableOffset });
        }
        return out;
      default:
        return out;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Cluster roles and the cluster map
  // -------------------------------------------------------------------------------------------

  private clusterRoles(): Promise<ClusterRoles> {
    if (this.roles) return Promise.resolve(this.roles);
    this.rolesPromise ??= this.buildRoles().then(r => (this.roles = r), e => { this.rolesPromise = null; throw e; });
    return this.rolesPromise;
  }

  /**
   * Roles come from the engine's cluster usage walk (src/engine/usage.ts, QEMU's check order) and
   * the stored refcounts: a cluster nobody uses with a refcount is leaked; one whose owners may not
   * share it, or whose refcount is below its references, is a conflict.
   */
  private async buildRoles(): Promise<ClusterRoles> {
    const img = this.img;
    const n = Math.ceil(img.file.size / img.clusterSize);
    if (n > MAX_ROLE_CLUSTERS) throw new Qcow2Error(img.path, 'cluster map', undefined, `${n} host clusters are more than the map handles (${MAX_ROLE_CLUSTERS})`, 'unsupported');
    const u = await clusterUsage(img);
    const stored = await readStoredRefcounts(img, n);
    const r: ClusterRoles = {
      role: new Uint8Array(n), ownerRole: new Uint8Array(n), ownerT: u.ownerC.subarray(0, n), ownerA: u.ownerA.subarray(0, n), ownerB: u.ownerB.subarray(0, n),
      users: new Uint8Array(n), refcounts: stored, usage: u,
    };
    for (let c = 0; c < n; c++) {
      const raw = u.role[c];
      const own = USAGE_ROLE[raw & ROLE_MASK] ?? ROLE.conflict;
      r.ownerRole[c] = own;
      r.users[c] = Math.min(255, u.refs[c]);
      const refcount = stored[c];
      if (raw & ROLE_CONFLICT) r.role[c] = ROLE.conflict;
      else if (u.refs[c] === 0) r.role[c] = refcount > 0 ? ROLE.leaked : ROLE.free;
      else if (!(refcount >= u.refs[c])) r.role[c] = ROLE.conflict; // below its references (or unreadable): corruption
      else if (refcount > u.refs[c]) r.role[c] = ROLE.leaked;
      else r.role[c] = own;
    }
    return r;
  }

  async clusterMap(startCluster: number, count: number, zoom: number): Promise<{ startCluster: number; zoom: number; totalClusters: number; cells: number[] }> {
    const r = await this.clusterRoles();
    const total = r.role.length;
    zoom = Math.max(1, Math.floor(zoom) || 1);
    startCluster = Math.max(0, Math.floor(startCluster) || 0);
    count = Math.max(0, Math.min(MAX_MAP_CELLS, Math.floor(count) || 0, Math.ceil((total - startCluster) / zoom)));
    const cells = new Array<number>(count);
    for (let i = 0; i < count; i++) {
      const a = startCluster + i * zoom, b = Math.min(total, a + zoom);
      // a conflict anywhere in the cell wins, then a leak; otherwise one role or 'mixed'
      let role = -1, problem = -1;
      for (let c = a; c < b; c++) {
        const x = r.role[c];
        if (x === ROLE.conflict) { problem = x; break; }
        if (x === ROLE.leaked) { problem = x; continue; }
        role = role < 0 || role === x ? x : ROLE.mixed;
      }
      if (problem >= 0) role = problem;
      else if (role < 0) role = ROLE.free;
      cells[i] = role;
    }
    return { startCluster, zoom, totalClusters: total, cells };
  }

  private owner(c: number, r: ClusterRoles): ClusterOwner | undefined {
    if (r.users[c] === 0) return undefined;
    const img = this.img, g = img.g, cs = img.clusterSize;
    const role = CLUSTER_ROLES[r.ownerRole[c]];
    const t = r.ownerT[c], a = r.ownerA[c], b = r.ownerB[c];
    // the same structure path the check's findings use (usage.ts ownerPath)
    const structure = r.usage.ownerPath(c);
    const snapshot = t >= 0 && (role === 'l2' || role === 'data' || role === 'compressed' || role === 'snapshotL1') ? img.snapshots[t]?.name : undefined;
    const tid = this.tableId(t);
    const o = (nodeId?: NodeId, guestOffset?: number): ClusterOwner => ({ structure, role, snapshot, guestOffset, nodeId });
    switch (role) {
      case 'header': return o('header');
      case 'l1': return o('l1:a');
      case 'l2': return o(`l1e:${tid}:${a}`, a * g.l2Size * cs);
      case 'data':
      case 'compressed': return o(`l2e:${tid}:${a}:${b}`, (a * g.l2Size + b) * cs);
      case 'refcountTable': return o('refcount');
      case 'refcountBlock': return o(`rte:${a}`);
      case 'snapshotTable': return o('snapshots');
      case 'snapshotL1': return o(`l1:${t}`);
      case 'bitmapDirectory': return o('bitmaps');
      case 'bitmapTable': return o(`bm:${t}`);
      case 'bitmapData': return o(`bme:${t}:${a}`);
      case 'crypto': return o('encryption');
      default: return o();
    }
  }

  async describeCluster(hostCluster: number): Promise<ClusterDescription> {
    const r = await this.clusterRoles();
    const cs = this.img.clusterSize;
    if (!Number.isSafeInteger(hostCluster) || hostCluster < 0 || hostCluster >= r.role.length) {
      throw new Qcow2Error(this.img.path, 'cluster map', hostCluster * cs, `cluster ${hostCluster} is outside the file (${r.role.length} clusters)`);
    }
    const o = this.owner(hostCluster, r);
    const owners = o ? [o] : [];
    if (o && r.users[hostCluster] > 1) {
      owners.push({ structure: `and ${r.users[hostCluster] === 255 ? '254+' : r.users[hostCluster] - 1} more reference(s)`, role: o.role });
    }
    return { hostCluster, hostOffset: hostCluster * cs, role: CLUSTER_ROLES[r.role[hostCluster]], refcount: r.refcounts[hostCluster], owners };
  }

  // -------------------------------------------------------------------------------------------
  // Hex reads
  // -------------------------------------------------------------------------------------------

  async readHost(hostOffset: number, length: number): Promise<{ offset: number; data: string; sources: ByteRangeSource[] }> {
    const file = this.img.file;
    if (!Number.isSafeInteger(hostOffset) || hostOffset < 0 || !Number.isSafeInteger(length) || length < 0) throw new Error(`bad host range ${hostOffset}+${length}`);
    length = Math.min(length, MAX_READ_LENGTH, Math.max(0, file.size - hostOffset));
    const data = length > 0 ? await file.read(hostOffset, length, 'hex view') : Buffer.alloc(0);
    const sources: ByteRangeSource[] = [];
    const r = this.roles; // only when already built: a hex read never triggers the whole walk
    const cs = this.img.clusterSize;
    if (r && length > 0) {
      for (let c = Math.floor(hostOffset / cs); c * cs < hostOffset + length; c++) {
        const s = Math.max(hostOffset, c * cs), e = Math.min(hostOffset + length, (c + 1) * cs);
        const role = CLUSTER_ROLES[r.role[c]];
        const kind: ByteRangeSource['kind'] = role === 'free' || role === 'leaked' ? 'free' : role === 'data' ? 'data' : role === 'compressed' ? 'compressed' : 'metadata';
        sources.push({ offset: s, length: e - s, kind, role, structure: this.owner(c, r)?.structure });
      }
    }
    return { offset: hostOffset, data: b64(data), sources };
  }

  async readGuest(guestOffset: number, length: number): Promise<{ offset: number; data: string; sources: ByteRangeSource[] }> {
    const img = this.img;
    if (!Number.isSafeInteger(guestOffset) || guestOffset < 0 || !Number.isSafeInteger(length) || length < 0) throw new Error(`bad guest range ${guestOffset}+${length}`);
    length = Math.min(length, MAX_READ_LENGTH, Math.max(0, img.virtualSize - guestOffset));
    if (length === 0) return { offset: guestOffset, data: '', sources: [] };
    const chain = img.chain();
    const sources: ByteRangeSource[] = (await mapImage(img, { start: guestOffset, end: guestOffset + length })).map(m => ({
      offset: m.start, length: m.length,
      kind: !m.present ? 'unallocated' : m.zero ? 'zero' : m.offset === undefined && chain[m.depth]?.format === 'qcow2' && !(chain[m.depth] as Qcow2Image).encrypted ? 'compressed' : 'data',
      // with an external data file the host offset is in that file
      depth: m.depth, layerPath: (chain[m.depth] as Qcow2Image | undefined)?.dataFilePath ?? chain[m.depth]?.path, hostOffset: m.offset,
    }));
    const data = await img.readGuest(guestOffset, length); // encrypted data: a Qcow2Error the hex view shows
    return { offset: guestOffset, data: b64(data), sources };
  }

  // -------------------------------------------------------------------------------------------
  // Locating nodes
  // -------------------------------------------------------------------------------------------

  /** The ids to expand, root first, to reach the node for a structure path or host offset. */
  async locate(structure?: string, hostOffset?: number): Promise<NodeId[]> {
    const img = this.img;
    if (structure) {
      const m = /(?:snapshot(?:\[(\d+)\])? "([^"]*)"(?: →)? )?L1\[(\d+)\](?: → L2\[(0x[0-9a-f]+|\d+)\])?/i.exec(structure);
      if (m) {
        const t = m[1] !== undefined ? Number(m[1]) : m[2] !== undefined ? img.snapshots.findIndex(s => s.name === m[2]) : ACTIVE;
        if (t === ACTIVE || (t >= 0 && t < img.snapshots.length)) return this.pathTo(t, Number(m[3]), m[4] !== undefined ? Number(m[4]) : undefined);
      }
      const bm = /bitmap\[(\d+)\][^→]*→ bitmap table(?:\[(\d+)\])?/i.exec(structure);
      if (bm && img.bitmaps[Number(bm[1])]) {
        const k = Number(bm[1]);
        if (bm[2] === undefined) return ['bitmaps', ...pagePath('bitmaps', img.bitmaps.length, k), `bm:${k}`];
        return ['bitmaps', ...pagePath('bitmaps', img.bitmaps.length, k), `bm:${k}`, ...pagePath(`bm:${k}`, img.bitmaps[k].bitmapTableSize, Number(bm[2])), `bme:${k}:${bm[2]}`];
      }
      const rb = /refcount table\[(\d+)\]/i.exec(structure);
      if (rb) return this.pathToRefcount(Number(rb[1]));
      if (/^header/i.test(structure)) return ['header'];
      if (/refcount/i.test(structure) && hostOffset === undefined) return ['refcount'];
      if (/snapshot/i.test(structure) && hostOffset === undefined) return ['snapshots'];
      if (/bitmap/i.test(structure) && hostOffset === undefined) return ['bitmaps'];
    }
    if (hostOffset === undefined || !Number.isSafeInteger(hostOffset) || hostOffset < 0) return [];
    if (hostOffset < img.header.headerLength) return ['header'];
    const r = await this.clusterRoles();
    const c = Math.floor(hostOffset / img.clusterSize);
    if (c >= r.role.length) return [];
    const o = this.owner(c, r);
    if (!o) return this.pathToRefcountEntry(c); // free or leaked: what matters is its refcount
    if (!o.nodeId) return [];
    const [kind, x, y, z] = o.nodeId.split(':');
    switch (kind) {
      case 'l1e': // a byte of an L2 table: its entry
        return this.pathTo(this.parseTable(x), Number(y), Math.floor((hostOffset % img.clusterSize) / img.g.l2EntrySize));
      case 'l2e': return this.pathTo(this.parseTable(x), Number(y), Number(z));
      case 'l1': {
        const t = this.parseTable(x);
        const l1 = this.l1Of(t);
        const i = Math.floor((hostOffset - l1.offset) / 8);
        if (i >= 0 && i < l1.size) return this.pathTo(t, i);
        return t === ACTIVE ? ['l1:a'] : ['snapshots', ...pagePath('snapshots', img.snapshots.length, t), `snap:${t}`, `l1:${t}`];
      }
      case 'rte': { // a byte of a refcount block: the entry it holds (or starts)
        const i = Number(x), k = Math.floor(((hostOffset % img.clusterSize) * 8) / img.header.refcountBits);
        return [...(await this.pathToRefcount(i)), ...pagePath(`rte:${i}`, img.rg.blockEntries, k), `rbe:${i}:${k}`];
      }
      case 'refcount': {
        const i = Math.floor((hostOffset - img.header.refcountTableOffset) / 8);
        return this.pathToRefcount(i);
      }
      case 'bme': return ['bitmaps', ...pagePath('bitmaps', img.bitmaps.length, Number(x)), `bm:${x}`, ...pagePath(`bm:${x}`, img.bitmaps[Number(x)]?.bitmapTableSize ?? 0, Number(y)), o.nodeId];
      case 'bm': {
        const k = Number(x), b = img.bitmaps[k];
        const up = ['bitmaps', ...pagePath('bitmaps', img.bitmaps.length, k), o.nodeId];
        const idx = b ? Math.floor((hostOffset - b.bitmapTableOffset) / 8) : -1;
        return b && idx >= 0 && idx < b.bitmapTableSize ? [...up, ...pagePath(o.nodeId, b.bitmapTableSize, idx), `bme:${k}:${idx}`] : up;
      }
      default: return [o.nodeId];
    }
  }

  private pathTo(t: number, l1Index: number, l2Index?: number): NodeId[] {
    const l1 = this.l1Of(t);
    if (l1Index < 0 || l1Index >= l1.size) return [];
    const tid = this.tableId(t);
    const out: NodeId[] = t === ACTIVE ? ['l1:a'] : ['snapshots', ...pagePath('snapshots', this.img.snapshots.length, t), `snap:${t}`, `l1:${t}`];
    out.push(...pagePath(`l1:${tid}`, l1.size, l1Index), `l1e:${tid}:${l1Index}`);
    if (l2Index !== undefined && l2Index >= 0 && l2Index < this.img.g.l2Size) {
      out.push(...pagePath(`l1e:${tid}:${l1Index}`, this.img.g.l2Size, l2Index), `l2e:${tid}:${l1Index}:${l2Index}`);
    }
    return out;
  }

  /** The refcount entry of host cluster c, inside its refcount block. */
  private async pathToRefcountEntry(c: number): Promise<NodeId[]> {
    const be = this.img.rg.blockEntries;
    const i = Math.floor(c / be), k = c % be;
    if (!this.img.refcountTable[i]) return [];
    return [...(await this.pathToRefcount(i)), ...pagePath(`rte:${i}`, be, k), `rbe:${i}:${k}`];
  }

  private async pathToRefcount(i: number): Promise<NodeId[]> {
    const n = await this.childCount('refcount');
    if (i < 0 || i >= n) return ['refcount'];
    return ['refcount', ...pagePath('refcount', n, i), `rte:${i}`];
  }
}
