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
import { type ClusterRoles, clusterOwner, clusterRoles } from '../engine/check/inspect';
import { findBrokenChain } from '../engine/check/backingChain';
import { Qcow2Error, hex } from '../engine/errors';
import { featureBits } from '../engine/qcow2/header';
import { Qcow2Image } from '../engine/image/image';
import * as L from '../engine/qcow2/layout';
import { isLockedByQemu } from '../engine/io/lock';
import { mapImage } from '../engine/image/map';
import { KeyLookup, readEncryptInfo } from '../engine/image/encryption';
import { formatBytes } from '../engine/units';
import {
  ByteRangeSource, CLUSTER_ROLES, ClusterDescription, ClusterOwner, FromWebviewMessage, HeaderField,
  ImageSummary, MAX_MAP_CELLS, MAX_READ_LENGTH, NodeId, ToWebviewMessage, TreeNode, WebviewSettings,
} from '../protocol';
import { nodeId, ownerNode } from './nodeId';
import { DEFAULT_SETTINGS, settingName, webviewSettings } from './settings';
import { findInFile, findInGuest } from './findBytes';
import { describeGuestOffset, findAllocated } from './findGuest';
import { guestRuns } from './guestRuns';
import { NodeLocator } from './viewLocate';
import { treeChildren } from './viewTree';
import { openGuest, type Guest } from '../guest/guest';
import { qcow2GuestDisk } from '../guest/qcow2Disk';
import { handleSpaceRequest } from './spaceReport';

const ROLE = Object.fromEntries(CLUSTER_ROLES.map((r, i) => [r, i])) as Record<(typeof CLUSTER_ROLES)[number], number>;

/**
 * The settings a tab's model reads, each at its use (src/extension/settings.ts): whether to open the
 * backing chain (at open and reload), the cluster map's limit (at every map request: the role table
 * costs about 12 bytes per host cluster), and what the webview is told.
 */
export interface ViewModelSettings extends WebviewSettings {
  followBackingFiles: boolean;
}
const defaultSettings = (): ViewModelSettings => ({ ...webviewSettings(DEFAULT_SETTINGS), followBackingFiles: DEFAULT_SETTINGS.followBackingFiles });
/** A snapshot's icount when it was taken without instruction counting (all ones, as QEMU writes it). */
const NO_ICOUNT = 0xffffffffffffffffn;

function b64(buf: Buffer): string {
  return buf.toString('base64');
}

export class ViewModel {
  private roles: ClusterRoles | null = null;
  /** The guest view (partitions, file systems) over this image, opened when the tree's Guest section is first expanded. */
  private guestView: Promise<Guest> | null = null;
  private rolesPromise: Promise<ClusterRoles> | null = null;
  /** Why the backing chain did not open (the image is then shown without it). */
  backingError?: string;
  /** The file of the chain that failed to open (a missing file may be deeper than the image's own backing file). */
  private backingErrorPath?: string;
  /** Set when the image has a backing file that was not opened because the settings say not to follow it. */
  backingNotFollowed?: string;

  private constructor(public img: Qcow2Image, readonly readOnly: boolean, private readonly settings: () => ViewModelSettings, private readonly keys?: KeyLookup) {}

  /**
   * Opens the image read-only with its backing chain (without it when the chain is broken, or when
   * `settings().followBackingFiles` is off: guest bytes not allocated in the file then read as zeros).
   */
  static async open(imagePath: string, opts: { readOnly?: boolean; settings?: () => ViewModelSettings; keys?: KeyLookup } = {}): Promise<ViewModel> {
    const settings = opts.settings ?? defaultSettings;
    const keys = opts.keys;
    if (!settings().followBackingFiles) {
      const vm = new ViewModel(await Qcow2Image.open(imagePath, { openBacking: false, keys }), opts.readOnly ?? false, settings, keys);
      if (vm.img.header.backingFile) {
        vm.backingNotFollowed = `The backing file "${vm.img.header.backingFile}" is not opened (${settingName('followBackingFiles')} is off): disk bytes this image does not hold read as zeros.`;
      }
      return vm;
    }
    try {
      return new ViewModel(await Qcow2Image.open(imagePath, { keys }), opts.readOnly ?? false, settings, keys);
    } catch (e) {
      // the chain failed (a missing file, an unknown format, a damaged layer below): the file alone,
      // if it opens alone, with the chain's error as QEMU words it
      if (!(e instanceof Qcow2Error)) throw e;
      let alone: Qcow2Image;
      try {
        alone = await Qcow2Image.open(imagePath, { openBacking: false, keys });
      } catch {
        throw e;
      }
      if (!alone.header.backingFile) {
        await alone.close();
        throw e;
      }
      const vm = new ViewModel(alone, opts.readOnly ?? false, settings, keys);
      const broken = await findBrokenChain(alone).catch(() => null);
      vm.backingError = broken ? broken.qemuMessage : e.message;
      if (broken) vm.backingErrorPath = broken.backingPath;
      return vm;
    }
  }

  /** Re-opens the image (the file changed on disk or was written, or the settings changed). */
  async reload(): Promise<void> {
    const fresh = await ViewModel.open(this.img.path, { readOnly: this.readOnly, settings: this.settings, keys: this.keys });
    await this.idle();
    await this.closeGuest();
    await this.img.close().catch(() => undefined);
    this.img = fresh.img;
    this.backingError = fresh.backingError;
    this.backingErrorPath = fresh.backingErrorPath;
    this.backingNotFollowed = fresh.backingNotFollowed;
    this.roles = null;
    this.rolesPromise = null;
  }

  /**
   * Closes the image once the requests already being answered are done: a reload (the file changed,
   * a key was added) must not close the image under a request that is still reading it, which would
   * answer from a half-closed image (a summary saying "locked" just after Unlock, a read error).
   * `wait: false` (the tab closed, no one reads the answers) closes at once: a long request (a
   * map or space walk of a large image) then ends at its next read instead of running on.
   */
  async close(opts: { wait?: boolean } = {}): Promise<void> {
    if (opts.wait !== false) await this.idle();
    this.closed.abort();
    await this.closeGuest();
    await this.img.close();
  }

  private readonly closed = new AbortController();
  /** Fires once the view model closes: long walks (the space report, disk usage) stop at their next pause. */
  get closing(): AbortSignal { return this.closed.signal; }

  /** Requests being answered (handle() calls not yet settled). */
  private readonly inFlight = new Set<Promise<unknown>>();

  private async idle(): Promise<void> {
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
  }

  /** The guest disk read through this image (its backing chain included); damaged partitions keep their error. */
  guest(): Promise<Guest> {
    this.guestView ??= openGuest(qcow2GuestDisk(this.img), { strict: false }).catch(e => { this.guestView = null; throw e; });
    return this.guestView;
  }

  private async closeGuest(): Promise<void> {
    const g = this.guestView;
    this.guestView = null;
    if (g) await g.then(x => x.close(), () => undefined).catch(() => undefined);
  }

  /** Answers one webview message: a reply for requests, undefined for notifications. */
  handle(msg: FromWebviewMessage): Promise<ToWebviewMessage | undefined> {
    const p = this.answer(msg);
    this.inFlight.add(p);
    const done = () => { this.inFlight.delete(p); };
    p.then(done, done);
    return p;
  }

  private async answer(msg: FromWebviewMessage): Promise<ToWebviewMessage | undefined> {
    const requestId = 'requestId' in msg ? msg.requestId : undefined;
    try {
      switch (msg.type) {
        case 'ready':
        case 'firstScreen':
        case 'runCommand':
        case 'selectionChanged':
          return undefined;
        case 'getSummary':
          return { type: 'summary', requestId: msg.requestId, summary: await this.summary() };
        case 'getTreeChildren':
          return { type: 'treeChildren', requestId: msg.requestId, nodeId: msg.nodeId, children: await this.children(msg.nodeId, { allocatedOnly: msg.allocatedOnly === true }) };
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
        case 'getSettings': {
          const { hexBytesPerRow, clusterMapMaxClusters, diskUsageTop, checkNote } = this.settings();
          return { type: 'settings', requestId: msg.requestId, settings: { hexBytesPerRow, clusterMapMaxClusters, diskUsageTop, ...(checkNote ? { checkNote } : {}) } };
        }
        case 'findAllocated':
          return { type: 'allocatedRange', requestId: msg.requestId, direction: msg.direction, ...(await findAllocated(this.img, msg.guestOffset, msg.direction)) };
        case 'findBytes':
          return { type: 'foundBytes', requestId: msg.requestId, ...(await (msg.space === 'guest'
            ? findInGuest(this.img, Buffer.from(msg.pattern, 'base64'), msg.from, msg.direction, msg.window)
            : findInFile(this.img.file, Buffer.from(msg.pattern, 'base64'), msg.from, msg.direction, msg.window))) };
        case 'describeGuest':
          return { type: 'guestDescription', requestId: msg.requestId, location: await describeGuestOffset(this.img, msg.guestOffset, { backingNotFollowed: !!this.backingNotFollowed || !!this.backingError }) };
        case 'getGuestRuns':
          return { type: 'guestRuns', requestId: msg.requestId, ...(await guestRuns(this.img, msg.start, msg.length, msg.buckets)) };
        case 'getSpaceReport':
        case 'getDiskUsage':
        case 'getGuestFileMap':
        case 'describeOwner':
          return await handleSpaceRequest(this, msg);
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
    const f = (name: L.HeaderFieldName, value: number | bigint, meaning: string, asHex = false): HeaderField =>
      ({ name, hostOffset: L.HEADER_FIELD[name].offset, size: L.HEADER_FIELD[name].size, value: asHex || typeof value === 'bigint' ? hex(value) : String(value), meaning });
    const crypt = ['none', 'AES (legacy)', 'LUKS'][h.cryptMethod] ?? `unknown (${h.cryptMethod})`;
    const out: HeaderField[] = [
      f('magic', h.magic, h.magic === L.QCOW_MAGIC ? 'QFI\\xfb' : 'not a qcow2 magic', true),
      f('version', h.version, `qcow2 v${h.version}${h.version === 2 ? ' (compat=0.10)' : ' (compat=1.1)'}`),
      f('backing_file_offset', h.backingFileOffset, h.backingFileOffset ? `backing file name at ${hex(h.backingFileOffset)}` : 'no backing file', true),
      f('backing_file_size', h.backingFileSize, h.backingFile ? `"${h.backingFile}"` : 'no backing file'),
      f('cluster_bits', h.clusterBits, `${formatBytes(h.clusterSize)} clusters`),
      f('size', h.size, `${formatBytes(h.size)} virtual disk`),
      f('crypt_method', h.cryptMethod, crypt),
      f('l1_size', h.l1Size, `${h.l1Size} L1 entries, each mapping ${formatBytes(this.img.g.l2Size * h.clusterSize)}`),
      f('l1_table_offset', h.l1TableOffsetExact ?? h.l1TableOffset, h.l1TableOffsetExact !== undefined ? 'active L1 table far past the end of the file (reads as zeros)' : `active L1 table at cluster ${Math.floor(h.l1TableOffset / h.clusterSize)}`, true),
      f('refcount_table_offset', h.refcountTableOffset, `refcount table at cluster ${Math.floor(h.refcountTableOffset / h.clusterSize)}`, true),
      f('refcount_table_clusters', h.refcountTableClusters, `${h.refcountTableClusters * h.clusterSize / 8} refcount table entries`),
      f('nb_snapshots', h.nbSnapshots, h.nbSnapshots ? `${h.nbSnapshots} internal snapshot(s)` : 'no snapshots'),
      f('snapshots_offset', h.snapshotsOffset, h.nbSnapshots ? 'snapshot table' : 'unused', true),
    ];
    if (h.version >= 3) {
      const names = (kind: 'incompatible' | 'compatible' | 'autoclear') => featureBits(h, kind).filter(b => b.set).map(b => b.name).join(', ') || 'none';
      out.push(
        f('incompatible_features', h.incompatibleFeatures, names('incompatible')),
        f('compatible_features', h.compatibleFeatures, names('compatible')),
        f('autoclear_features', h.autoclearFeatures, names('autoclear')),
        f('refcount_order', h.refcountOrder, `${h.refcountBits}-bit refcounts`),
        f('header_length', h.headerLength, `${h.headerLength}-byte header`),
      );
      if (h.headerLength > L.HEADER_FIELD.compression_type.offset) out.push(f('compression_type', h.compressionType, h.compressionType === L.COMPRESSION_ZSTD ? 'zstd' : 'zlib'));
    }
    return out;
  }

  async summary(): Promise<ImageSummary> {
    const img = this.img, h = img.header;
    const chain: ImageSummary['backingChain'] = img.chain().map((l, depth) => ({ depth, path: l.path, format: l.format, virtualSize: l.virtualSize }));
    if (this.backingError) chain.push({ depth: chain.length, path: this.backingErrorPath ?? img.header.backingFile ?? '', format: 'raw', virtualSize: 0, error: this.backingError });
    let encryption: ImageSummary['encryption'];
    if (img.encrypted) {
      const e = await readEncryptInfo(img.file, h).catch(() => undefined);
      const fields: Array<[string, string]> = [];
      for (const [k, v] of Object.entries(e ?? {})) {
        if (k === 'format' || k === 'slots') continue;
        fields.push([k, String(v)]);
      }
      if (e?.slots) fields.push(['active key slots', String(e.slots.filter(s => s.active).length)]);
      encryption = { format: e?.format ?? (h.cryptMethod === L.CRYPT_AES ? 'aes' : 'luks'), fields, unlocked: img.cipher !== null };
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
      ...(this.backingNotFollowed ? { backingNotFollowed: this.backingNotFollowed } : {}),
      snapshots: img.snapshots.map((s, k) => ({
        index: k, id: s.id, name: s.name, date: s.dateSec * 1000 + Math.floor(s.dateNsec / 1e6), dateSec: s.dateSec, dateNsec: s.dateNsec,
        vmClockNsec: s.vmClockNsec.toString(), icount: s.icount === undefined || s.icount === NO_ICOUNT ? undefined : Number(s.icount),
        vmStateSize: Number(s.vmStateSizeLarge ?? s.vmStateSize), diskSize: s.diskSize === undefined ? undefined : Number(s.diskSize), l1TableOffset: s.l1TableOffset, l1Size: s.l1Size,
        hostOffset: s.hostOffset, nodeId: nodeId({ kind: 'snapshot', index: k }),
      })),
      bitmaps: img.bitmaps.map((b, k) => ({
        index: k, name: b.name, granularity: 2 ** b.granularityBits, inUse: b.inUse, auto: b.auto, flags: b.flags,
        bitmapTableOffset: b.bitmapTableOffset, bitmapTableSize: b.bitmapTableSize, hostOffset: b.hostOffset, nodeId: nodeId({ kind: 'bitmap', index: k }),
      })),
      encryption,
    };
  }

  extensionSummary(type: number, data: Buffer): string {
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

  children(id: NodeId, opts: { allocatedOnly?: boolean } = {}): Promise<TreeNode[]> {
    return treeChildren(this, id, opts);
  }

  // -------------------------------------------------------------------------------------------
  // Cluster roles and the cluster map
  // -------------------------------------------------------------------------------------------

  private clusterRoles(): Promise<ClusterRoles> {
    // the limit is read at every use, so a changed setting applies to an open tab at its next request
    const img = this.img, limit = this.settings().clusterMapMaxClusters;
    const n = Math.ceil(img.file.size / img.clusterSize);
    if (n > limit) {
      return Promise.reject(new Qcow2Error(img.path, 'cluster map', undefined,
        `${n} host clusters are more than the map is set to handle (${settingName('clusterMapMaxClusters')}: ${limit})`, 'unsupported'));
    }
    if (this.roles) return Promise.resolve(this.roles);
    this.rolesPromise ??= this.buildRoles().then(r => (this.roles = r), e => { this.rolesPromise = null; throw e; });
    return this.rolesPromise;
  }

  /** Roles come from the check's own walk and stored refcounts (engine/check/inspect.ts). */
  private buildRoles(): Promise<ClusterRoles> {
    return clusterRoles(this.img);
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
    const o = clusterOwner(this.img, r, c);
    if (!o) return undefined;
    const node = ownerNode(o);
    return { structure: o.structure, role: o.role, snapshot: o.snapshot, guestOffset: o.guestOffset, nodeId: node && nodeId(node) };
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
  locate(structure?: string, hostOffset?: number): Promise<NodeId[]> {
    return new NodeLocator(this.img, () => this.clusterRoles()).locate(structure, hostOffset);
  }
}
