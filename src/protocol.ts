/**
 * The one typed protocol between the extension host and the editor's webview (STYLE.md: modelled
 * on vscode-hexeditor's shared/protocol.ts). Every message either way is a member of one
 * discriminated union, so neither side can send something the other does not know.
 *
 * The webview pulls what it shows, lazily: it sends requests carrying a `requestId` and the host
 * answers with exactly one reply echoing that `requestId` (or an `error` message with the same
 * `requestId`). Host-initiated messages (check results, reveals, refresh) carry no `requestId`.
 *
 * It is bundled into both the host (Node) and the webview (browser): besides type imports (erased
 * when bundled) it takes values only from engine modules that import nothing (check/roles.ts).
 * Changes after the first commit are additive only.
 */

import type { Finding as EngineFinding, Severity } from './engine/check/findings';
import type { SnapshotInfo as EngineSnapshotInfo } from './engine/qcow2/snapshot';
import { CLUSTER_ROLES, type ClusterRole } from './engine/check/roles';

export { CLUSTER_ROLES, type ClusterRole, type Severity };

// ---------------------------------------------------------------------------------------------
// Shared value types
// ---------------------------------------------------------------------------------------------

/** An opaque tree node id minted by the host; the webview never parses it. 'root' is the root. */
export type NodeId = string;
export const ROOT_NODE_ID: NodeId = 'root';
/** The nodes a new tab shows expanded (the Header's fields), before the user expands anything. */
export const FIRST_EXPANDED: readonly NodeId[] = ['header'];

/** Human names of the roles for legends and tooltips. */
export const CLUSTER_ROLE_LABELS: Record<ClusterRole, string> = {
  free: 'Free',
  header: 'Header',
  l1: 'L1 table',
  l2: 'L2 table',
  refcountTable: 'Refcount table',
  refcountBlock: 'Refcount block',
  data: 'Guest data',
  compressed: 'Compressed data',
  snapshotTable: 'Snapshot table',
  snapshotL1: 'Snapshot L1 table',
  bitmapDirectory: 'Bitmap directory',
  bitmapTable: 'Bitmap table',
  bitmapData: 'Bitmap data',
  crypto: 'Encryption header',
  leaked: 'Leaked',
  conflict: 'Conflict',
  beyondEnd: 'Beyond end of file',
  mixed: 'Mixed',
};

export interface HeaderField {
  /** The spec's field name, e.g. "l1_table_offset". */
  name: string;
  hostOffset: number;
  /** Bytes on disk. */
  size: number;
  /** Raw value as text (decimal or 0x… for offsets; bigints as hex). */
  value: string;
  /** What the value means, e.g. "64 KiB clusters", "none". */
  meaning: string;
}

export interface FeatureBitInfo {
  bit: number;
  name: string;
  set: boolean;
  known: boolean;
}

export interface HeaderExtensionInfo {
  type: number;
  typeName: string;
  hostOffset: number;
  length: number;
  /** Decoded content in one line, e.g. the backing format name. */
  summary: string;
}

export interface BackingLayerInfo {
  /** 0 = this image, 1 = its backing file, … */
  depth: number;
  path: string;
  format: 'qcow2' | 'raw';
  virtualSize: number;
  /** Set when the layer named by the layer above could not be opened. */
  error?: string;
}

/** A snapshot as the engine lists it, plus where it is; the VM clock as text (nanoseconds pass 2^53). */
export interface SnapshotInfo extends Omit<EngineSnapshotInfo, 'vmClockNsec'> {
  index: number;
  /** Milliseconds since the epoch. */
  date: number;
  vmClockNsec: string;
  /** Where the snapshot table entry is. */
  hostOffset: number;
  nodeId: NodeId;
}

export interface BitmapInfo {
  index: number;
  name: string;
  granularity: number;
  inUse: boolean;
  auto: boolean;
  flags: number;
  bitmapTableOffset: number;
  bitmapTableSize: number;
  hostOffset: number;
  nodeId: NodeId;
}

export interface EncryptionInfo {
  format: string;
  /** Name/value pairs in display order (cipher, mode, ivgen, hash, uuid, slots…). */
  fields: Array<[string, string]>;
  /** Whether the tab has the key (Unlock…): guest data then reads decrypted. */
  unlocked: boolean;
}

export interface ImageSummary {
  path: string;
  fileName: string;
  /** Size of the image file in bytes. */
  fileSize: number;
  virtualSize: number;
  version: number;
  clusterSize: number;
  clusterBits: number;
  /** Host clusters covering the file (ceil(fileSize / clusterSize)). */
  hostClusters: number;
  refcountBits: number;
  extendedL2: boolean;
  compressionType: string;
  dirty: boolean;
  corrupt: boolean;
  readOnly: boolean;
  /** A running QEMU holds the image (writes are refused). */
  lockedByQemu: boolean;
  dataFile?: string;
  header: HeaderField[];
  features: { incompatible: FeatureBitInfo[]; compatible: FeatureBitInfo[]; autoclear: FeatureBitInfo[] };
  extensions: HeaderExtensionInfo[];
  backingChain: BackingLayerInfo[];
  /** Set when the image has a backing file the editor did not open (qcow2Lens.followBackingFiles is off): says so. */
  backingNotFollowed?: string;
  snapshots: SnapshotInfo[];
  bitmaps: BitmapInfo[];
  encryption?: EncryptionInfo;
}

export type TreeNodeKind =
  | 'group' | 'header' | 'headerField' | 'featureBit' | 'extension' | 'backing'
  | 'l1Table' | 'l1Entry' | 'l2Table' | 'l2Entry' | 'page'
  | 'refcountTable' | 'refcountTableEntry' | 'refcountBlock' | 'refcountEntry'
  | 'snapshotTable' | 'snapshot' | 'bitmapDirectory' | 'bitmap' | 'bitmapTableEntry'
  | 'encryption' | 'info'
  /** The Guest section: the section, a partition, a guest folder, a guest file (or symlink). */
  | 'guest' | 'guestPartition' | 'guestDir' | 'guestFile';

export interface TreeNode {
  id: NodeId;
  kind: TreeNodeKind;
  label: string;
  /** Secondary text shown after the label (value, offset). */
  description?: string;
  tooltip?: string;
  hasChildren: boolean;
  /** Bytes of the structure in the image file: clicking the node opens the hex view there. */
  hostOffset?: number;
  hostLength?: number;
  /** The guest range the node maps (L1/L2 entries), for "show guest bytes". */
  guestOffset?: number;
  guestLength?: number;
  /** Marks nodes with problems (from the last check or from decoding). */
  severity?: Severity;
  /** What the entry points at (an L2 table, a data cluster, a refcount block), for "go to target". */
  targetHostOffset?: number;
  /** Guest section: the file this node is, which the host opens in a tab (command 'openGuestFile'). */
  guestFile?: { partition: number; path: string };
  /** Guest section: the partition, folder or file this node is (what Copy Out… copies). */
  guestEntry?: { partition: number; path: string };
}

/** Where the bytes of one range of a hex read come from. Offsets are in the request's space. */
export interface ByteRangeSource {
  /** First byte (host offset for readHost, guest offset for readGuest). */
  offset: number;
  length: number;
  kind: 'data' | 'compressed' | 'zero' | 'unallocated' | 'metadata' | 'free' | 'beyondEnd';
  /** Guest reads: the chain layer that provides the bytes (0 = this image). */
  depth?: number;
  layerPath?: string;
  /** Guest reads: host offset of the first byte in that layer's file, when it has one. */
  hostOffset?: number;
  /** Host reads: the role of the cluster and the structure that owns it. */
  role?: ClusterRole;
  structure?: string;
}

export interface ClusterOwner {
  /** Structure path, e.g. "L1[0] → L2[0x1f]" or "refcount table". */
  structure: string;
  role: ClusterRole;
  /** Guest offset for data clusters. */
  guestOffset?: number;
  /** Snapshot name when the owner is in a snapshot's tables. */
  snapshot?: string;
  nodeId?: NodeId;
}

export interface ClusterDescription {
  hostCluster: number;
  hostOffset: number;
  role: ClusterRole;
  refcount?: number;
  owners: ClusterOwner[];
}

export interface CheckSummary {
  clean: boolean;
  leaks: number;
  corruptions: number;
  checkErrors: number;
  /** Offset of the end of used clusters (image end), when known. */
  imageEnd?: number;
  allocatedClusters?: number;
  totalClusters?: number;
  fragmentedClusters?: number;
  compressedClusters?: number;
  /** Free-form text under the counters, e.g. "check took 120 ms". */
  note?: string;
}

/** What the webview takes from the settings (qcow2Lens.hexView.bytesPerRow, qcow2Lens.clusterMap.maxClusters). */
export interface WebviewSettings {
  hexBytesPerRow: 8 | 16 | 32;
  /** The host refuses cluster maps of files with more host clusters; a change re-requests the map. */
  clusterMapMaxClusters: number;
  /** Entries listed per folder in the guest disk-usage tree (qcow2Lens.space.largestEntries); a change reloads an open tree. */
  diskUsageTop: number;
  /** Why the check did not run when this image opened (qcow2Lens.checkOnOpen), shown until a check runs. */
  checkNote?: string;
}

/** A finding of the engine's check (src/engine/check.ts), plus where the webview can show it. */
export interface CheckFinding extends EngineFinding {
  guestOffset?: number;
  nodeId?: NodeId;
}

/** Commands buttons in the webview can ask the host to run (the host decides and confirms). */
export type WebviewCommand = 'check' | 'repair' | 'createSnapshot' | 'deleteSnapshot' | 'revertSnapshot' | 'compact' | 'refresh' | 'openBacking' | 'copyOffset'
  /** VS Code's "Reopen Editor With…" picker for the tab (an image the engine cannot open). */
  | 'reopenWith'
  /** An encrypted image: ask for its passphrase (Unlock…), or forget it (Lock). */
  | 'unlock' | 'lock'
  /** A bitmap action from the Bitmaps node or a bitmap's node: args { op: add|remove|clear|enable|disable|merge, name? } (the host asks and confirms the rest). */
  | 'bitmap'
  /** The Guest section: open a guest file ({partition, path}) in a tab, copy one out ({source}), sparsify the image. */
  | 'openGuestFile' | 'copyOutGuest' | 'sparsify'
  /** The Encryption node (LUKS): add a passphrase to a free key slot, or remove one (the host asks for them and confirms). */
  | 'addPassphrase' | 'removePassphrase';

// ---------------------------------------------------------------------------------------------
// Webview → host
// ---------------------------------------------------------------------------------------------

export interface ReadyMessage { type: 'ready' }
/** The webview has drawn its summary and the tree's first level: the host may start its own work (the check on open). */
export interface FirstScreenMessage { type: 'firstScreen' }
export interface GetSummaryRequest { type: 'getSummary'; requestId: number }
export interface GetTreeChildrenRequest {
  type: 'getTreeChildren'; requestId: number; nodeId: NodeId;
  /** L1 tables and L2 tables list only their allocated entries (and pages that hold some). */
  allocatedOnly?: boolean;
}
/**
 * A strip of cluster map cells: `count` cells starting at host cluster `startCluster`, each cell
 * covering `zoom` clusters (zoom ≥ 1). The host caps `count` (MAX_MAP_CELLS).
 */
export interface GetClusterMapRequest { type: 'getClusterMap'; requestId: number; startCluster: number; count: number; zoom: number }
export interface DescribeClusterRequest { type: 'describeCluster'; requestId: number; hostCluster: number }
/** Bytes of the image file; the host caps `length` (MAX_READ_LENGTH). */
export interface ReadHostRequest { type: 'readHost'; requestId: number; hostOffset: number; length: number }
/** Guest bytes through the mapping and the backing chain; the host caps `length`. */
export interface ReadGuestRequest { type: 'readGuest'; requestId: number; guestOffset: number; length: number }
/** The chain of node ids from the root to the node owning a structure or host offset. */
export interface LocateNodeRequest { type: 'locateNode'; requestId: number; structure?: string; hostOffset?: number }
export interface RunCommandMessage { type: 'runCommand'; command: WebviewCommand; args?: Record<string, string | number | boolean> }
/** What the user has selected, so host commands (copy offset, go to…) can act on it. */
export interface SelectionChangedMessage { type: 'selectionChanged'; hostOffset?: number; guestOffset?: number; nodeId?: NodeId }
/** The settings that shape the webview (asked once at start; later changes arrive as a SettingsMessage). */
export interface GetSettingsRequest { type: 'getSettings'; requestId: number }
/** The allocated guest range after (next) or before (previous) `guestOffset` (src/extension/findGuest.ts). */
export interface FindAllocatedRequest { type: 'findAllocated'; requestId: number; guestOffset: number; direction: 'next' | 'previous' }
/**
 * Find in the image file: one bounded window (the host caps `window`), the first match at or after
 * `from` (next) or the last one before it (previous). The webview loops, showing progress, and
 * cancels by not asking again. `pattern` is base64.
 */
/** Find in the image file ('host', the default) or the guest disk ('guest'); from and the reply's offsets are in that space. */
export interface FindBytesRequest { type: 'findBytes'; requestId: number; pattern: string; from: number; direction: 'next' | 'previous'; window?: number; space?: 'host' | 'guest' }
/** Where the guest byte at `guestOffset` lives, in words, with its L1/L2 structure path. */
export interface DescribeGuestRequest { type: 'describeGuest'; requestId: number; guestOffset: number }

export type FromWebviewMessage =
  | ReadyMessage
  | FirstScreenMessage
  | GetSummaryRequest
  | GetTreeChildrenRequest
  | GetClusterMapRequest
  | DescribeClusterRequest
  | ReadHostRequest
  | ReadGuestRequest
  | LocateNodeRequest
  | RunCommandMessage
  | SelectionChangedMessage
  | GetSettingsRequest
  | FindAllocatedRequest
  | DescribeGuestRequest
  | FindBytesRequest
  | GetGuestRunsRequest
  | SpaceRequest;

// ---------------------------------------------------------------------------------------------
// Host → webview
// ---------------------------------------------------------------------------------------------

export interface SummaryReply { type: 'summary'; requestId: number; summary: ImageSummary }
export interface TreeChildrenReply { type: 'treeChildren'; requestId: number; nodeId: NodeId; children: TreeNode[] }
export interface ClusterMapReply {
  type: 'clusterMap';
  requestId: number;
  startCluster: number;
  zoom: number;
  totalClusters: number;
  /** One role per cell, as an index into CLUSTER_ROLES. */
  cells: number[];
}
export interface ClusterDescriptionReply { type: 'clusterDescription'; requestId: number; description: ClusterDescription }
export interface BytesReply {
  type: 'bytes';
  requestId: number;
  space: 'host' | 'guest';
  offset: number;
  /** The bytes, base64 (may be shorter than asked at the end of the file/disk). */
  data: string;
  sources: ByteRangeSource[];
}
export interface NodePathReply { type: 'nodePath'; requestId: number; path: NodeId[] }

/** The result of an integrity check (host-initiated, after 'check' or on open). */
export interface CheckResultMessage { type: 'checkResult'; summary: CheckSummary; findings: CheckFinding[] }
export interface RevealHostOffsetMessage { type: 'revealHostOffset'; hostOffset: number; length?: number }
export interface RevealGuestOffsetMessage { type: 'revealGuestOffset'; guestOffset: number; length?: number }
export interface RevealStructureMessage { type: 'revealStructure'; structure: string; hostOffset?: number; nodeId?: NodeId }
/** A failure: the reply to a request (with its requestId) or a host-side error (without). */
export interface ErrorMessage { type: 'error'; requestId?: number; message: string; structure?: string; hostOffset?: number; code?: string }
/** The file changed on disk (or after a write): drop everything cached and re-request. */
export interface RefreshMessage { type: 'refresh' }
/**
 * The `qcow2Lens.*` settings the webview applies (src/extension/settings.ts): the reply to
 * getSettings (with its requestId), and host-initiated (without) whenever one of them changes.
 */
export interface SettingsMessage { type: 'settings'; requestId?: number; settings: WebviewSettings }
/**
 * What a new tab shows first, pushed by the host as soon as the image is open (VS Code holds the
 * message until the webview's script listens), so the first screen does not wait for a round trip
 * to the host: the summary, the settings, and the children of the first level and of FIRST_EXPANDED.
 * The webview asks for the same things too and takes whichever answer comes first; only its first
 * start uses it (a refresh or Retry asks the host).
 */
export interface FirstScreenDataMessage { type: 'firstScreenData'; summary: ImageSummary; settings: WebviewSettings; children: Record<NodeId, TreeNode[]> }
/** Progress of a command started with runCommand (or from the command palette). */
export interface CommandStateMessage { type: 'commandState'; command: WebviewCommand | string; state: 'running' | 'done' | 'failed'; message?: string }

/** The answer to findAllocated: the range found (its first byte and length), none when `start` is absent. */
export interface AllocatedRangeReply { type: 'allocatedRange'; requestId: number; direction: 'next' | 'previous'; start?: number; length?: number }
/** Where one guest byte lives (the answer to describeGuest). */
export interface GuestLocationInfo {
  guestOffset: number;
  /** In words: "unallocated: reads zeros", "from backing file base.qcow2 at depth 2", "compressed cluster at 0x…". */
  text: string;
  /** 'data' | 'compressed' | 'zero' | 'unallocated' | 'backing' | 'beyondEnd'. */
  kind: 'data' | 'compressed' | 'zero' | 'unallocated' | 'backing' | 'beyondEnd';
  /** The L1 (and L2) entry that maps it, as a structure path ("L1[0x1] → L2[0x20]"). */
  structure?: string;
  /** Host offset of the byte (or the compressed cluster's descriptor) in this image's file, when it has one here. */
  hostOffset?: number;
  /** The chain layer that provides the byte (0 = this image). */
  depth?: number;
}
/** A match's offset (absent: none in the window) and where to continue. */
export interface FoundBytesReply { type: 'foundBytes'; requestId: number; offset?: number; scannedTo: number }
export interface GuestDescriptionReply { type: 'guestDescription'; requestId: number; location: GuestLocationInfo }

/** Show finding `index` of the last check (a click in the Problems panel): selected in the check panel, its structure in the tree, its bytes. */
export interface RevealFindingMessage { type: 'revealFinding'; index: number; finding: CheckFinding }

export type ToWebviewMessage =
  | SummaryReply
  | TreeChildrenReply
  | ClusterMapReply
  | ClusterDescriptionReply
  | BytesReply
  | NodePathReply
  | CheckResultMessage
  | RevealHostOffsetMessage
  | RevealGuestOffsetMessage
  | RevealStructureMessage
  | ErrorMessage
  | RefreshMessage
  | FirstScreenDataMessage
  | CommandStateMessage
  | SettingsMessage
  | AllocatedRangeReply
  | GuestDescriptionReply
  | RevealFindingMessage
  | FoundBytesReply
  | GuestRunsReply
  | SpaceReply;

// ---------------------------------------------------------------------------------------------
// Request/reply helper
// ---------------------------------------------------------------------------------------------

/** Which reply answers which request. */
export interface ReplyTypes {
  getSummary: SummaryReply;
  getTreeChildren: TreeChildrenReply;
  getClusterMap: ClusterMapReply;
  describeCluster: ClusterDescriptionReply;
  readHost: BytesReply;
  readGuest: BytesReply;
  locateNode: NodePathReply;
  getSettings: SettingsMessage & { requestId: number };
  findAllocated: AllocatedRangeReply;
  describeGuest: GuestDescriptionReply;
  findBytes: FoundBytesReply;
  getGuestRuns: GuestRunsReply;
}
export type RequestMessage = Extract<FromWebviewMessage, { requestId: number }>;
export type RequestType = RequestMessage['type'];
export type RequestOf<T extends RequestType> = Extract<RequestMessage, { type: T }>;
export type ReplyMessage = ReplyTypes[RequestType];

/** Limits the host enforces on one request (the webview asks for what it shows). */
export const MAX_READ_LENGTH = 1024 * 1024;
export const MAX_MAP_CELLS = 65536;
/** Children per tree level before the host groups them into pages. */
export const TREE_PAGE_SIZE = 256;

// ---------------------------------------------------------------------------------------------
// The guest-disk map (webview/guestMap.ts, src/extension/guestRuns.ts)
// ---------------------------------------------------------------------------------------------

/**
 * What a guest range reads from: 'data' (allocated in this file), 'compressed', 'zero' (a zero
 * cluster, in this image or a backing layer), 'backing' (data of a backing file, `depth` ≥ 1),
 * 'encrypted' (allocated data of an encrypted layer), 'unallocated' (no layer holds it: zeros).
 */
export type GuestRunKind = 'data' | 'compressed' | 'zero' | 'backing' | 'encrypted' | 'unallocated';
export const GUEST_RUN_KINDS: readonly GuestRunKind[] = ['data', 'compressed', 'encrypted', 'backing', 'zero', 'unallocated'];
/**
 * The guest disk from `start` for `length` bytes summarised in `buckets` equal cells of
 * ceil(length / buckets) bytes (the host caps buckets at MAX_GUEST_BUCKETS, makes each cell at least
 * 512 bytes, and cuts the range at the disk's end, dropping the cells past it). Never a per-cluster array.
 */
export interface GetGuestRunsRequest { type: 'getGuestRuns'; requestId: number; start: number; length: number; buckets: number }
/** One cell: the kind that matters most in it (order of GUEST_RUN_KINDS, shallowest backing first) and where that kind starts in it. */
export interface GuestBucket { kind: GuestRunKind; depth: number; at: number; /** Bytes of the cell that are not unallocated. */ used: number }
export interface GuestRunsReply {
  type: 'guestRuns'; requestId: number;
  start: number; length: number; bucketBytes: number;
  buckets: GuestBucket[];
  /** Bytes of each kind in the range (backing bytes also per depth). */
  bytes: Record<GuestRunKind, number>;
  backingByDepth: number[];
  /** Maximal runs of bytes allocated in this file (data, compressed, encrypted) in the range, and their bytes. */
  allocatedRuns: number;
  allocatedBytes: number;
  /** Depth of the deepest layer of the chain (0: no backing file opened). */
  chainDepth: number;
}
export const MAX_GUEST_BUCKETS = 8192;

export function isRequest(m: FromWebviewMessage): m is RequestMessage {
  return typeof (m as { requestId?: unknown }).requestId === 'number';
}

export function isReply(m: ToWebviewMessage): m is ReplyMessage | (ErrorMessage & { requestId: number }) {
  return typeof (m as { requestId?: unknown }).requestId === 'number';
}

export class RequestError extends Error {
  constructor(readonly reply: ErrorMessage) {
    super(reply.message);
    this.name = 'RequestError';
  }
}

/**
 * The webview's side of request/reply: `request()` posts a request with a fresh requestId and
 * resolves with the reply that echoes it (rejects with RequestError on an `error` reply).
 * Feed every incoming message to `handle()`; it returns true when the message was a reply.
 */
export class MessageRequester {
  private nextId = 1;
  private pending = new Map<number, { resolve: (m: ReplyMessage) => void; reject: (e: Error) => void }>();

  constructor(private readonly post: (m: FromWebviewMessage) => void) {}

  request<T extends RequestType>(msg: Omit<RequestOf<T>, 'requestId'> & { type: T }): Promise<ReplyTypes[T]> {
    const requestId = this.nextId++;
    return new Promise<ReplyTypes[T]>((resolve, reject) => {
      this.pending.set(requestId, { resolve: resolve as (m: ReplyMessage) => void, reject });
      this.post({ ...msg, requestId } as unknown as FromWebviewMessage);
    });
  }

  handle(m: ToWebviewMessage): boolean {
    if (!isReply(m)) return false;
    const p = this.pending.get(m.requestId);
    if (!p) return false;
    this.pending.delete(m.requestId);
    if (m.type === 'error') p.reject(new RequestError(m));
    else p.resolve(m);
    return true;
  }

  /** Rejects everything outstanding (e.g. on refresh). */
  cancelAll(reason = 'cancelled'): void {
    for (const [id, p] of this.pending) p.reject(new RequestError({ type: 'error', requestId: id, message: reason, code: 'cancelled' }));
    this.pending.clear();
  }

  get outstanding(): number {
    return this.pending.size;
  }
}

// ---------------------------------------------------------------------------------------------
// The guest lens in the editor: the space summary, the guest's disk usage, a guest file's
// clusters, who owns a byte (src/extension/spaceReport.ts answers them)
// ---------------------------------------------------------------------------------------------

/** One part of the image file (the engine's space report, src/guest/space/report.ts). */
export interface SpacePartInfo {
  name: string;
  bytes: number;
  /** Bytes Compact (compact) and Sparsify (sparsify) would reclaim of this part. */
  compact?: number;
  sparsify?: number;
  parts?: SpacePartInfo[];
}
export interface SpaceInfo {
  fileSize: number;
  /** What the host file system has allocated for the file. */
  allocatedBytes: number;
  virtualSize: number;
  clusterSize: number;
  /** metadata, active (in use by files, outside browsable file systems, guest free space, all zero), snapshots, leaked, holes. */
  parts: SpacePartInfo[];
  reclaim: { compact: number; sparsify: number };
  /** Whether a guest file system was browsable (the active part's sub-parts are then meaningful). */
  guestBrowsable: boolean;
  guestFreeBytes: number;
  notes: string[];
}
/** Where the file's space goes, computed after the tree shows (it walks the metadata). */
export interface GetSpaceReportRequest { type: 'getSpaceReport'; requestId: number }
/** `report`, or `unavailable` saying why not (encrypted and locked, …). */
export interface SpaceReportReply { type: 'spaceReport'; requestId: number; report?: SpaceInfo; unavailable?: string }

/** A file or folder of the guest with its allocated bytes (src/guest/space/usage.ts). */
export interface DiskUsageNode {
  name: string;
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  bytes: number;
  entries: number;
  children?: DiskUsageNode[];
  others?: { bytes: number; entries: number };
  /** Its node in the structure tree's Guest section (under the reply's treePath, then its folders' nodes). */
  nodeId: NodeId;
}
/** The largest folders and files of every browsable guest file system, `top` per folder. */
export interface GetDiskUsageRequest { type: 'getDiskUsage'; requestId: number; top?: number }
export interface DiskUsageReply {
  type: 'diskUsage'; requestId: number;
  fileSystems: { partition: number; fs: string; size: number; root: DiskUsageNode; partial: boolean; /** Structure-tree ids above root's node (the Guest section): revealing an entry expands these, then its folders. */ treePath: NodeId[] }[];
  unavailable?: string;
}

/** A guest file's guest byte ranges and the host clusters (of this image's file) that hold them. */
export interface GetGuestFileMapRequest { type: 'getGuestFileMap'; requestId: number; partition: number; path: string }
export interface GuestFileMapReply {
  type: 'guestFileMap'; requestId: number;
  ranges: { start: number; length: number }[];
  hostClusters: number[];
  /** More ranges or clusters than the reply carries (MAX_HIGHLIGHT_RANGES, MAX_HIGHLIGHT_CLUSTERS). */
  truncated: boolean;
  label: string;
}
export const MAX_HIGHLIGHT_CLUSTERS = 65536;
export const MAX_HIGHLIGHT_RANGES = 4096;

/** Which guest file owns a byte of the image file (hostOffset) or of the disk (guestOffset). */
export interface DescribeOwnerRequest { type: 'describeOwner'; requestId: number; hostOffset?: number; guestOffset?: number }
/** `text` absent: the byte is not guest data (metadata, free) or the guest cannot be read. */
export interface OwnerReply { type: 'owner'; requestId: number; text?: string }

export type SpaceRequest = GetSpaceReportRequest | GetDiskUsageRequest | GetGuestFileMapRequest | DescribeOwnerRequest;
export type SpaceReply = SpaceReportReply | DiskUsageReply | GuestFileMapReply | OwnerReply;
export interface ReplyTypes {
  getSpaceReport: SpaceReportReply;
  getDiskUsage: DiskUsageReply;
  getGuestFileMap: GuestFileMapReply;
  describeOwner: OwnerReply;
}
